"""RewardRanker: a policy and its reranker trained in turn (`itercode loop rewardranker`).

METHODS.md, "RewardRanker": the reranker learns from the policy's judged
samples, RL aligns the policy with the reranker, the RL policy's confident
mistakes (failing samples the reranker scores high) go back into the
reranker's data, and RL starts again from the base policy with the better
reranker. One run, in a `RunDir`, stage by stage:

    round 0   starter   -> build codegen.starter's model (``base_model: starter``)
              evaluate  -> validation pass@k and the reference probe (ITERTL's stage)
              test      -> pass@k on each test split (only ever reported)
              rerank    -> the no-learning pickers on those candidates (docstring
                           examples then log-prob; log-prob alone; random; oracle)
    round k   sample    -> ``n_samples`` per unlabeled problem from the base policy
    (1..K)                 (k = 1) or from iteration k-1's RL policy (k >= 2)
              execute   -> their verdicts in the sandbox (ITERTL's stage)
              reranker  -> TRL RewardTrainer from ``reranker_base`` on all pairs so far:
                           k = 1: (passing, failing) pairs of the samples;
                           k >= 2: plus hard negatives, the failing samples reranker
                           k-1 scores above a passing one (`mine_hard_negatives`;
                           positives from every earlier sample set too), and with
                           ``hard_negatives: with_positives`` the new samples' own
                           pairs; infra errors masked, evaluation problems refused
              rl        -> GRPO / RLOO from the BASE policy (not the last RL policy),
                           the reward being reranker k's score of each completion,
                           read with its example-feedback line
                           (`rerankers.rewards.reranker_reward`); the canary watches
                           greedy validation pass@1 (the hidden tests) beside it
              evaluate, test -> the RL policy, as round 0 (test: every iteration
                           unless ``test_every_iteration: false``)
              rerank    -> reranker k on the RL policy's own validation and test
                           candidates: pairwise accuracy, reranked pass@1, and the
                           LEVER combination score + w * mean log-prob with w chosen
                           on the validation candidates (written to the reranker's
                           reranker.json), beside the no-learning pickers

Per iteration the metrics row has the policy's pass@k (validation, the test
splits), reranked pass@1 on each (``<split>_pick_reranker``, with the
log-prob ``<split>_pick_reranker_logprob``, the rule ``<split>_pick_rule``),
the reranker's pairwise accuracy on held-out candidates
(``validation_pairwise_accuracy``), the hard negatives mined and the RL
figures (completions, training reward, canary). `run_rewardranker` returns
them per iteration (the benchmark's entry point).

Only unlabeled problems are sampled for the reranker, paired, mined and
trained on by RL; validation and test problems are only generated for and
judged (`check_reranker_pairs` and the GRPO loop's `check_training_rows`
refuse anything else before training). A kill anywhere resumes at the first
unfinished stage; a killed training stage is redone from its start.
"""
from __future__ import annotations

import datetime as _dt
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.execution_rewards import execution_reward
from codegen.io import read_jsonl, write_jsonl_atomic
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.samplers import HUMANEVAL_STOP
from codegen.samples import Sample, read_samples
from loops.grpo import StepLog, base_model, log_point, rl_figures, rl_rows, train_policy, validation_problems
from loops.plot import plot_metrics
from loops.rewardranker_config import RERANKER, REWARDRANKER_RESUMABLE_KEYS, RewardRankerConfig
from loops.rewardranker_pairs import check_reranker_pairs, reranker_pairs, with_round_ids
from loops.rundir import RunDir
from loops.sampler_pool import Log
from loops.session import open_session
from loops.splits import evaluation_task_ids, tests_summary
from loops.stages import sample_diversity, scores_of_test_stage, stage_seed
from loops.stages import sample_stage as shared_sample_stage
from rerankers.combined import choose_logprob_weight, pairwise_accuracy, record_logprob_weight
from rerankers.data import Pair, pair_stats
from rerankers.feedback import ExampleRunner
from rerankers.model import Reranker
from rerankers.report import group_candidates, rerank_report
from rerankers.rewards import reranker_reward
from rerankers.train import train_reranker
from sandbox.base import Limits


# --------------------------------------------------------------------------- stages
def sample_stage(sampler, problems: Sequence[Problem], cfg: RewardRankerConfig, out_dir: Path, *,
                 model_name: str, round_: int) -> dict[str, Any]:
    """Draw ``n_samples`` completions per unlabeled problem at ``sample_temperature``; write ``samples.jsonl``."""
    info = shared_sample_stage(sampler, problems, cfg, out_dir, model_name=model_name, round_=round_,
                               temperature=cfg.sample_temperature)
    samples = read_samples(out_dir / "samples.jsonl")[0]
    return {**info, "model": model_name, "sample_diversity": sample_diversity(samples)}


def reranker_stage(cfg: RewardRankerConfig, run: RunDir, round_: int, splits: dict[str, Any], base: str,
                   out_dir: Path) -> dict[str, Any]:
    """Train reranker ``round_`` into ``out_dir/reranker``; ``pairs.jsonl`` and ``hard_negatives.jsonl`` beside it."""
    unlabeled = splits["unlabeled"]
    sets = [with_round_ids(read_samples(run.stage_dir(j, "sample") / "samples.jsonl")[0],
                           read_jsonl(run.stage_dir(j, "execute") / "results.jsonl"), j)
            for j in range(1, round_ + 1)]
    forbidden = sorted(evaluation_task_ids(splits))
    previous: list[Pair] = []
    reranker = None
    if round_ >= 2:
        previous = [Pair(**row) for row in read_jsonl(run.stage_dir(round_ - 1, "reranker") / "pairs.jsonl")]
        reranker = Reranker.load(reranker_dir(run, round_ - 1), sandbox=cfg.executor, sandbox_workers=cfg.workers,
                                 sandbox_options=cfg.executor_options,
                                 threads=cfg.train_threads)
    try:
        pairs, fresh, hard = reranker_pairs(cfg, round_, unlabeled, sets, previous, reranker, forbidden)
    finally:
        if reranker is not None:
            reranker.close()
    check_reranker_pairs(pairs, splits)
    write_jsonl_atomic(out_dir / "pairs.jsonl", [p.to_dict() for p in pairs])
    write_jsonl_atomic(out_dir / "hard_negatives.jsonl", [p.to_dict() for p in hard])
    train_cfg = cfg.train_config
    train_cfg.seed = stage_seed(cfg, round_, 3)
    start = base if cfg.reranker_base == "policy" else cfg.reranker_base
    result = train_reranker(pairs, start, out_dir / "reranker", train_cfg,
                            extra_meta={"iteration": round_, "hard_negatives": cfg.hard_negatives,
                                        "hard_negative_pairs": len(hard),
                                        "sampled_by": run.info(round_, "sample").get("model")})
    return {"reranker": "reranker", **pair_stats(pairs), "new_pairs": len(fresh), "hard_negative_pairs": len(hard),
            "hard_negatives": len({(p.task_id, p.rejected.rstrip()) for p in hard}),
            "hard_negative_problems": len({p.task_id for p in hard}), "reranker_base": start,
            "reranker_train_accuracy": result.stats.get("final_accuracy"),
            "reranker_train_loss": result.stats.get("final_loss"), "seconds": round(result.seconds, 2)}


class IterationPoints:
    """Where an iteration's `StepLog` writes its validation points: the run's ``steps.jsonl``, this
    iteration's points (tagged with it) after every earlier iteration's; a redone stage drops its own."""

    def __init__(self, run: RunDir, iteration: int):
        self.run, self.iteration = run, iteration
        self.earlier = [p for p in run.points() if p.get("iteration", 0) < iteration]

    def write_points(self, points: list[dict]) -> None:
        self.run.write_points(self.earlier + [{"iteration": self.iteration, **p} for p in points])


def rl_stage(cfg: RewardRankerConfig, run: RunDir, round_: int, base: str, splits: dict[str, Any], out_dir: Path,
             on_point: Callable[[list[dict]], None] = lambda points: None) -> dict[str, Any]:
    """GRPO / RLOO from ``base`` with reranker ``round_`` as the reward, into ``out_dir/model``.

    One `Judge` runs the reranker's example feedback, any execution part of
    the reward and the canary's validation.
    """
    rows = rl_rows(splits, out_dir)
    validation = validation_problems(cfg, splits["validation"])
    with Judge(cfg.executor, cfg.workers, options=cfg.executor_options) as judge:
        scorer = reranker_reward(reranker_dir(run, round_), judge=judge, stop=HUMANEVAL_STOP)
        try:
            reward = execution_reward(cfg.reward_weights, judge, splits["unlabeled"], Limits(timeout_s=cfg.timeout_s),
                                      scorers={RERANKER: scorer}, stop=HUMANEVAL_STOP, name=cfg.reward_name)
            steps = StepLog(out_dir, IterationPoints(run, round_), reward, on_point)
            info = train_policy(cfg, base, rows, out_dir, reward, judge, validation, steps,
                                stage_seed(cfg, round_, 5))
        finally:
            scorer.close()
    return {"model": "model", **info, "prompts": len(rows), "reward": cfg.reward_name,
            "reranker": run.rel(reranker_dir(run, round_)), "validation_problems": len(validation),
            "validation_points": len(steps.points)}


def _candidates(stage_dir: Path, problems: Sequence[Problem]) -> tuple[list[Sample], list[dict]]:
    """The samples (and verdicts) an evaluate or test stage drew for ``problems``."""
    ids = {p.task_id for p in problems}
    samples = [s for s in read_samples(stage_dir / "samples.jsonl")[0] if s.task_id in ids]
    results = [r for r in read_jsonl(stage_dir / "results.jsonl") if r["task_id"] in ids]
    return samples, results


PICKS = {"reranked_pass@1": "pick_reranker", "reranked_logprob_pass@1": "pick_reranker_logprob",
         "examples_logprob_pick": "pick_rule", "mean_logprob_pick": "pick_logprob", "random_pick": "pick_random",
         "oracle_pass@n": "oracle_pass@n"}


def rerank_stage(cfg: RewardRankerConfig, run: RunDir, round_: int, splits: dict[str, Any], out_dir: Path,
                 reranker_path: Path | None) -> dict[str, Any]:
    """Pick among the round's policy's own candidates (validation, and the test splits when scored).

    With a reranker: its pairwise accuracy on each split, the LEVER weight
    chosen on the validation candidates (recorded in its reranker.json), and
    its picks plain and combined; always: the no-learning pickers. Keys:
    ``<split>_pick_reranker``, ``<split>_pick_reranker_logprob``,
    ``<split>_pick_rule``, ``<split>_pick_logprob``, ``<split>_pick_random``,
    ``<split>_oracle_pass@n``, ``<split>_pairwise_accuracy``, ``logprob_weight``.
    """
    sets = {"validation": (splits["validation"], run.stage_dir(round_, "evaluate"))}
    if run.is_done(round_, "test"):
        sets.update({name: (ps, run.stage_dir(round_, "test")) for name, ps in splits["test"].items()})
    candidates = {name: (ps, *_candidates(d, ps)) for name, (ps, d) in sets.items()}
    t0 = time.monotonic()
    info: dict[str, Any] = {}
    reranker = (Reranker.load(reranker_path, sandbox=cfg.executor, sandbox_workers=cfg.workers,
                              sandbox_options=cfg.executor_options,
                              threads=cfg.train_threads) if reranker_path is not None else None)
    # The examples pick runs where the reranker's feedback runs, or in a sandbox of its own.
    own_runner = reranker is None or reranker.examples is None
    runner = ExampleRunner(cfg.executor, cfg.workers, options=cfg.executor_options) if own_runner else reranker.examples
    try:
        scores: dict[str, dict[str, list[float]]] = {}
        if reranker is not None:
            for name, (ps, samples, results) in candidates.items():
                groups = group_candidates(ps, samples, results)
                flat = reranker.score_problems([(p, [s.completion for s in ss]) for p, ss, _ in groups])
                scores[name] = {p.task_id: sc for (p, _, _), sc in zip(groups, flat)}
                statuses = {r["sample_id"]: r["status"] for r in results}
                accuracy = pairwise_accuracy(groups, scores[name], statuses)
                info[f"{name}_pairwise_accuracy"] = accuracy["accuracy"]
                info[f"{name}_pairwise_pairs"] = accuracy["pairs"]
            ps, samples, results = candidates["validation"]
            weight, rates = choose_logprob_weight(group_candidates(ps, samples, results), scores["validation"],
                                                  cfg.logprob_weights)
            record_logprob_weight(reranker_path, weight, {"round": round_, "candidates": run.rel(
                run.stage_dir(round_, "evaluate") / "samples.jsonl"), "validation_pick_rate_by_weight": rates})
            info.update(logprob_weight=weight, logprob_weight_rates=rates)
        for name, (ps, samples, results) in candidates.items():
            report = rerank_report(ps, samples, results, reranker, seed=stage_seed(cfg, round_, 8),
                                   scores=scores.get(name), examples=True, example_runner=runner,
                                   logprob_weight=info.get("logprob_weight"))
            info.update({f"{name}_{PICKS[key]}": report[key] for key in PICKS if key in report})
    finally:
        if reranker is not None:
            reranker.close()
        if own_runner:
            runner.close()
    info["seconds"] = round(time.monotonic() - t0, 2)
    return info


# --------------------------------------------------------------------------- paths and what the run reports
def reranker_dir(run: RunDir, round_: int) -> Path:
    info = run.info(round_, "reranker")
    if not info:
        raise RuntimeError(f"round {round_}'s reranker has not been trained")
    return run.stage_dir(round_, "reranker") / info["reranker"]


def policy_model(run: RunDir, cfg: RewardRankerConfig, round_: int) -> str:
    """The policy round ``round_`` ended with: round 0 the base model, round k iteration k's RL policy."""
    if round_ == 0:
        return base_model(run, cfg)
    info = run.info(round_, "rl")
    if not info:
        raise RuntimeError(f"round {round_}'s RL stage has not finished")
    return str(run.stage_dir(round_, "rl") / info["model"])


def _stage_seconds(entry: dict[str, Any]) -> float:
    try:
        return (_dt.datetime.fromisoformat(entry["finished_at"]) - _dt.datetime.fromisoformat(entry["started_at"])
                ).total_seconds()
    except (KeyError, TypeError, ValueError):
        return 0.0


def round_seconds(run: RunDir, round_: int) -> float:
    """Wall seconds of a round's finished stages (their last attempts)."""
    prefix = f"round-{round_}/"
    return sum(_stage_seconds(e) for k, e in run.state["stages"].items()
               if k.startswith(prefix) and e.get("status") == "done")


# The reranker stage's figures in a metrics row (key there: key here); "pairs" would be taken for DPO's.
RERANKER_KEYS = {"pairs": "reranker_pairs", "problems": "reranker_pair_problems", "new_pairs": "new_pairs",
                 "hard_negative_pairs": "hard_negative_pairs", "hard_negatives": "hard_negatives",
                 "hard_negative_problems": "hard_negative_problems", "reranker_train_accuracy": "reranker_train_accuracy"}


def collect_metrics(run: RunDir, cfg: RewardRankerConfig) -> list[dict[str, Any]]:
    """One row per evaluated round: the policy's scores, the picks, the reranker's data and the RL figures."""
    rows, completions, seconds = [], 0, 0.0
    points = run.points()
    for k in range(0, cfg.iterations + 1):
        ev = run.info(k, "evaluate")
        seconds += round_seconds(run, k)
        if k >= 1:
            completions += run.info(k, "sample").get("samples") or 0
            completions += run.info(k, "rl").get("completions") or 0
        if not ev:
            continue
        rerank = {key: v for key, v in run.info(k, "rerank").items() if key not in ("seconds", "logprob_weight_rates")}
        row = {**dict(ev), **scores_of_test_stage(run.info(k, "test")), **rerank}
        if k >= 1:
            reranker = run.info(k, "reranker")
            row.update({"iteration": k, "sampled_pass_rate": run.info(k, "execute").get("sampled_pass_rate")})
            row.update({name: reranker.get(key) for key, name in RERANKER_KEYS.items()})
            row.update(rl_figures(run.info(k, "rl"), [p for p in points if p.get("iteration") == k]))
        row.update(completions_so_far=completions, seconds_so_far=round(seconds, 1))
        rows.append(row)
    return rows


def iteration_figures(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a benchmark reads: per round (0 = the base policy), the policy's pass@k on every scored split,
    reranked pass@1 (plain, with the log-prob, the no-learning rule, log-prob alone, the oracle), the
    reranker's pairwise accuracy on validation candidates, hard negatives mined, completions and seconds so far."""
    out = {}
    for row in rows:
        fig = {key: row[key] for key in row if "_pass@" in key and not key.endswith("_oracle_pass@n")}
        for key, value in row.items():
            for name, short in (("pick_reranker", "reranked_pass@1"), ("pick_reranker_logprob", "reranked_logprob_pass@1"),
                                ("pick_rule", "no_learning_rule_pass@1"), ("pick_logprob", "mean_logprob_pick"),
                                ("oracle_pass@n", "oracle_pass@n")):
                if key.endswith("_" + name):
                    fig[f"{key[: -len(name) - 1]}_{short}"] = value
        fig.update({key: row.get(key) for key in ("validation_pairwise_accuracy", "logprob_weight",
                                                  "hard_negatives", "hard_negative_pairs", "reranker_pairs",
                                                  "canary_fired", "completions_so_far", "seconds_so_far")})
        out[row["round"]] = fig
    return out


def title(cfg: RewardRankerConfig) -> str:
    return f"RewardRanker ({cfg.algo.upper()} on the reranker, hard negatives: {cfg.hard_negatives}): {cfg.name}"


def publish(run: RunDir, cfg: RewardRankerConfig) -> list[dict[str, Any]]:
    rows = collect_metrics(run, cfg)
    run.write_metrics(rows)
    plot_metrics(rows, run.plot_path, title=title(cfg))
    return rows


# --------------------------------------------------------------------------- the run
def run_rewardranker(cfg: RewardRankerConfig, log: Log = print) -> dict[str, Any]:
    """Run (or resume) the RewardRanker loop described by ``cfg``.

    Returns ``{"run": run directory, "rows": the metrics rows, "rounds":
    `iteration_figures` (round 0 = the base policy, k = iteration k)}``.

    >>> run_rewardranker(load_rewardranker_config("configs/rewardranker.yaml"))   # doctest: +SKIP
    """
    def describe(splits: dict[str, Any]) -> str:
        return (f" (RewardRanker): {len(splits['unlabeled'])} unlabeled, {len(splits['validation'])} validation "
                f"problems; test splits (reported only): {tests_summary(splits)}; {cfg.iterations} iterations of "
                f"reranker ({cfg.n_samples} samples per problem, hard negatives: {cfg.hard_negatives}) -> {cfg.algo} "
                f"({cfg.steps} steps, reward {cfg.reward_name})")

    with open_session(cfg, REWARDRANKER_RESUMABLE_KEYS, describe, log) as s:
        run, splits = s.run, s.splits

        def evaluate(k: int) -> None:
            s.evaluate(k, policy_model(run, cfg, k), s.probes(),
                       test=bool(cfg.test) and (k in (0, cfg.iterations) or cfg.test_every_iteration))
            publish(run, cfg)
            path = reranker_dir(run, k) if k >= 1 else None
            s.stage(k, "rerank", lambda d: rerank_stage(cfg, run, k, splits, d, path))
            publish(run, cfg)

        s.start_base()
        base = base_model(run, cfg)
        run.record_lineage(0, {"model": base, "parent": None})
        evaluate(0)

        for k in range(1, cfg.iterations + 1):
            sampler_model = policy_model(run, cfg, k - 1)  # the base policy, then the last RL policy
            s.sample_and_execute(k, sampler_model, splits["unlabeled"], sample=sample_stage)
            if not (run.is_done(k, "reranker") and run.is_done(k, "rl")):
                s.pool.close()  # free the sampling engine before training
            s.stage(k, "reranker", lambda d: reranker_stage(cfg, run, k, splits, base, d))

            def on_point(points: list[dict], k: int = k) -> None:
                log_point(log, points, "reranker", where=f"iteration {k} ")

            s.stage(k, "rl", lambda d: rl_stage(cfg, run, k, base, splits, d, on_point))
            run.record_lineage(k, {"model": policy_model(run, cfg, k), "parent": base,
                                   "reward": run.rel(reranker_dir(run, k)),
                                   "trained_on": f"round-{k}/rl/train.jsonl", "algo": cfg.algo, "steps": cfg.steps,
                                   "reranker_pairs": f"round-{k}/reranker/pairs.jsonl"})
            evaluate(k)

        rows = publish(run, cfg)
        s.log_table(rows, f"{title(cfg)}: run", points=run.points() or None)
        return {"run": str(run.root), "rows": rows, "rounds": iteration_figures(rows)}


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """`iteration_figures` of a finished (or partial) run directory, read back from its metrics.jsonl."""
    rows = RunDir.find(str(run_dir)).metrics()
    return {"run": str(run_dir), "rows": rows, "rounds": iteration_figures(rows)}


