"""ITERTL: iterative self-training on the model's own passing samples.

Round 0 evaluates the base model (building the starter model first when
``base_model: starter``). Each round k >= 1 then runs five stages, each a
function that can be called on its own:

    sample   -> n completions per unlabeled problem from the round k-1 model
    execute  -> run them in the sandbox (codegen.evaluate.evaluate_samples)
    select   -> keep passing ones (a pass reward of 1, `codegen.rewards`),
                deduplicated by syntax tree, capped per problem,
                plus a replay share of reference solutions (curated self-consuming
                loops: real data in every round keeps the loop stable)
                and, with ``repair_share``, repair examples (`loops.repair`:
                a failing attempt + its feedback -> a passing solution)
    train    -> TRL SFTTrainer from the round k-1 model, a fresh warmup each round
                (`loops.trainers.train_sft`, which the baseline trains with too)
    evaluate -> validation pass@k, plus forgetting probes: the reference split and
                the problems earlier rounds learned
    test     -> (round 0 and the last round) pass@k on each test split: only ever
                reported, no setting is chosen on it (`loops.config`, DESIGN.md
                "Learning claims")

The select stage also reports what the round learns from: how many distinct
problems and programs it kept, the kept problems' share per difficulty, and
how varied the samples were (`sample_diversity`); the evaluate stage reports
the same diversity for the validation samples (`validation_diversity`).

Sample, execute, evaluate and test are the stages every loop shares
(`loops.stages`); select and train are ITERTL's own, here.
`run_itertl` strings them together in a `RunDir` (`loops.session`), so a killed run resumes at
the first unfinished stage. Only one sampling engine is alive at a time
(`loops.sampler_pool`): the engine that evaluated model k also samples round
k+1 (same weights), and it is shut down before training.
"""
from __future__ import annotations

import ast
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.io import read_jsonl, write_jsonl_atomic
from codegen.problems import Problem
from codegen.rewards import pass_reward
from codegen.samples import Sample, read_samples
from loops.config import RESUMABLE_KEYS, ITERTLConfig
from loops.plot import plot_metrics
from loops.repair import repair_count, round_repair_rows
from loops.rundir import RunDir
from loops.sampler_pool import Log
from loops.session import Session, open_session
from loops.splits import probe_subset, round_problems, tests_summary
from loops.stages import sample_diversity, scores_of_test_stage, stage_seed, tests_due
from loops.trainers import train_sft


# --------------------------------------------------------------------------- select and train
def normalized_program(problem: Problem, completion: str) -> str:
    """A key under which two completions count as the same program.

    The syntax tree ignores comments, blank lines and formatting, so trivially
    different copies of one solution are not trained on twice.
    """
    try:
        return ast.dump(ast.parse(problem.program(completion)))
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in completion.strip().splitlines() if line.strip())


def judged_rewards(problems: Sequence[Problem], samples: Sequence[Sample],
                   results: Sequence[dict]) -> list[tuple[Sample, float | None]]:
    """Each judged sample with its pass reward: 1.0, 0.0, or None for an infra error."""
    by_id = {p.task_id: p for p in problems}
    verdicts = {r["sample_id"]: r for r in results}
    judged = [s for s in samples if s.task_id in by_id and s.sample_id in verdicts]
    rewards = pass_reward([by_id[s.task_id].prompt for s in judged], [s.completion for s in judged],
                          verdict=[verdicts[s.sample_id] for s in judged])
    return list(zip(judged, rewards))


def passing_programs(problems: Sequence[Problem], samples: Sequence[Sample],
                     results: Sequence[dict]) -> dict[str, dict[str, Sample]]:
    """``{task_id: {program key: first sample}}`` of the passing samples (`normalized_program` keys).

    ``infra_error`` earns no reward (None) and never counts as a pass.
    """
    by_id = {p.task_id: p for p in problems}
    groups: dict[str, dict[str, Sample]] = {}
    for s, reward in judged_rewards(problems, samples, results):
        if reward != 1.0:  # failed (0.0) or an infra error (None)
            continue
        key = normalized_program(by_id[s.task_id], s.completion)
        groups.setdefault(s.task_id, {}).setdefault(key, s)
    return groups


def pass_rates(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict]) -> dict[str, float]:
    """``{task_id: share of its judged samples that passed}`` (infra errors left out)."""
    counts: dict[str, list[int]] = {}
    for s, reward in judged_rewards(problems, samples, results):
        if reward is not None:
            c = counts.setdefault(s.task_id, [0, 0])
            c[0] += reward == 1.0
            c[1] += 1
    return {t: passed / n for t, (passed, n) in counts.items()}


def hard_copies(pass_rate: float, hard_weight: float) -> int:
    """How many times a kept program of a problem with this pass rate is trained on:
    ``1 + round(hard_weight * (1 - pass_rate))``. Problems the model rarely solves are
    the ones it has most to learn from, yet without this each solved problem weighs the
    same, and the kept set leans to the easy ones (more of them are solved); after
    DART-Math's difficulty-proportional sampling."""
    return 1 + round(hard_weight * (1.0 - pass_rate))


def select_kept(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                keep_per_problem: int, seed: int, hard_weight: float = 0.0) -> list[dict[str, Any]]:
    """Passing samples, deduplicated per problem, at most ``keep_per_problem`` each;
    with ``hard_weight`` > 0 each is repeated `hard_copies` times (rarely solved problems more).

    Which duplicates survive is a seeded random choice, so no bias (say, towards
    short or confident completions) creeps in unannounced. ``infra_error`` earns
    no reward (None) and is never kept.
    """
    by_id = {p.task_id: p for p in problems}
    groups = passing_programs(problems, samples, results)
    rates = pass_rates(problems, samples, results) if hard_weight > 0 else {}
    rng = random.Random(seed)
    kept = []
    for task_id in sorted(groups, key=lambda t: list(by_id).index(t)):
        distinct = list(groups[task_id].values())
        rng.shuffle(distinct)
        copies = hard_copies(rates[task_id], hard_weight) if hard_weight > 0 else 1
        for s in distinct[:keep_per_problem]:
            kept.extend({"prompt": by_id[task_id].prompt, "completion": s.completion, "task_id": task_id,
                         "source": "self", "sample_id": s.sample_id} for _ in range(copies))
    return kept


def difficulty_shares(problems: Sequence[Problem], task_ids: set[str]) -> dict[str, float]:
    """``{"kept_steps_<d>": share}``: the share of ``task_ids`` per difficulty (step count).

    Every level the problems have gets a share, 0.0 included (a round that kept
    no four-step problem says so). Empty when the problems carry no difficulty.
    """
    levels = sorted({p.meta["difficulty"] for p in problems if isinstance(p.meta.get("difficulty"), int)})
    chosen = [p for p in problems if p.task_id in task_ids]
    if not levels or not chosen:
        return {}
    return {f"kept_steps_{d}": sum(p.meta.get("difficulty") == d for p in chosen) / len(chosen) for d in levels}


def data_report(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                kept: Sequence[dict]) -> dict[str, Any]:
    """What a round learns from: distinct problems and programs kept, difficulty mix, sample diversity."""
    groups = passing_programs(problems, samples, results)
    kept_ids = {r["task_id"] for r in kept}
    ids = {p.task_id for p in problems}  # the round also samples repair_reference problems: not these
    own = [r for r in results if r["task_id"] in ids]
    return {"kept_problems": len(kept_ids), "passing_programs": sum(len(g) for g in groups.values()),
            **difficulty_shares(problems, kept_ids),
            "sampled_pass_rate": sum(r["passed"] for r in own) / max(1, len(own)),
            "sample_diversity": sample_diversity([s for s in samples if s.task_id in ids])}


def replay_rows(reference: Sequence[Problem], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` reference solutions (without replacement while they last), as training rows."""
    rng = random.Random(seed)
    pool = list(reference)
    rows = []
    while len(rows) < n:
        rng.shuffle(pool)
        for p in pool[: n - len(rows)]:
            rows.append({"prompt": p.prompt, "completion": p.canonical_solution, "task_id": p.task_id,
                         "source": "replay", "sample_id": None})
    return rows


def replay_count(n_self: int, share: float) -> int:
    """How many replay rows make them ``share`` of the training set: n / (n_self + n) ~= share."""
    if share <= 0 or n_self == 0:
        return 0
    return max(1, round(n_self * share / (1 - share)))


def select_stage(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                 reference: Sequence[Problem], cfg: ITERTLConfig, out_dir: Path, round_: int,
                 model: str | None = None, repair_reference: Sequence[Problem] = ()) -> dict[str, Any]:
    """Write ``train.jsonl``: kept self-samples plus the replay share of reference solutions, and the
    repair share (`loops.repair`; ``model``, the sampling model, fits its rows to ``max_length``), drawn
    from ``problems`` and the sampled ``repair_reference`` problems (which give repair rows alone)."""
    kept = select_kept(problems, samples, results, cfg.keep_per_problem, stage_seed(cfg, round_, 2),
                       cfg.hard_weight)
    replay = replay_rows(reference, replay_count(len(kept), cfg.replay_share), stage_seed(cfg, round_, 3))
    repair = []
    if cfg.repair_share > 0 and kept:
        repair = round_repair_rows([*problems, *repair_reference], samples, results,
                                   repair_count(len(kept) + len(replay), cfg.repair_share),
                                   stage_seed(cfg, round_, 8), executor=cfg.executor, workers=cfg.workers,
                                   executor_options=cfg.executor_options, model=model, max_length=cfg.max_length,
                                   solutions={p.task_id: p.canonical_solution for p in repair_reference})
    rows = kept + replay + repair
    random.Random(stage_seed(cfg, round_, 4)).shuffle(rows)
    write_jsonl_atomic(out_dir / "train.jsonl", rows)
    learned = sorted({r["task_id"] for r in kept})
    reference_ids = {p.task_id for p in repair_reference}
    return {"kept": len({r["sample_id"] for r in kept}), "kept_rows": len(kept), "replay": len(replay), "repair": len(repair),
            "repair_from_reference": sum(r["task_id"] in reference_ids for r in repair),
            "learned_task_ids": learned, "learned_problems": len(learned),
            **data_report(problems, samples, results, kept)}


def round_learning_rate(cfg: ITERTLConfig, round_: int) -> float:
    return cfg.learning_rate * cfg.round_lr_decay ** (round_ - 1)


def train_stage(parent: str, train_path: Path, cfg: ITERTLConfig, out_dir: Path, round_: int) -> dict[str, Any]:
    """Train round ``round_``'s model into ``out_dir/model``; an empty training set keeps the parent."""
    rows = read_jsonl(train_path)
    if not any(r["source"] == "self" for r in rows):
        # Nothing passed: training on replay alone would not be self-training. Keep the model.
        return {"model": None, "skipped": "no passing samples to train on", "examples": len(rows)}
    info = train_sft(parent, rows, out_dir / "model", steps=cfg.train_steps, cfg=cfg,
                     learning_rate=round_learning_rate(cfg, round_), seed=stage_seed(cfg, round_, 5),
                     scratch=out_dir / ".tmp-trainer")
    return {"model": "model", **info}


# --------------------------------------------------------------------------- the loop
def model_for_round(run: RunDir, cfg: ITERTLConfig, round_: int) -> str:
    """The checkpoint round ``round_`` ended with (round 0: the base model)."""
    if round_ == 0:
        if cfg.base_model == "starter":
            return str(run.stage_dir(0, "starter") / run.info(0, "starter")["model"])
        return cfg.base_model
    info = run.info(round_, "train")
    if not info:
        raise RuntimeError(f"round {round_} has not finished training")
    if info.get("model") is None:  # training was skipped: the parent carries over
        return model_for_round(run, cfg, round_ - 1)
    return str(run.stage_dir(round_, "train") / info["model"])


def round_rows(run: RunDir, rounds: int, round_figures: Callable[[int], dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per evaluated round: its evaluate stage's metrics and test scores, and for a round k >= 1
    the sampled pass rate and ``round_figures(k)`` (what the loop's own select and train stages report)."""
    rows = []
    for k in range(0, rounds + 1):
        ev = run.info(k, "evaluate")
        if not ev:
            continue
        row = {**dict(ev), **scores_of_test_stage(run.info(k, "test"))}
        if k >= 1:
            row["sampled_pass_rate"] = run.info(k, "execute").get("sampled_pass_rate")
            row.update(round_figures(k))
        rows.append(row)
    return rows


SELECT_COLUMNS = ("kept", "replay", "repair", "repair_from_reference", "kept_problems", "passing_programs", "sample_diversity")


def collect_metrics(run: RunDir, cfg: ITERTLConfig) -> list[dict[str, Any]]:
    """One row per evaluated round: the evaluate stage's metrics plus sample/select/train figures."""
    def figures(k: int) -> dict[str, Any]:
        sel = run.info(k, "select")
        # the unlabeled problems' pass rate (select), where the execute stage's also counts repair_reference's
        own_rate = {"sampled_pass_rate": sel["sampled_pass_rate"]} if "sampled_pass_rate" in sel else {}
        return {**{key: sel.get(key) for key in SELECT_COLUMNS}, **own_rate,
                **{key: value for key, value in sel.items() if key.startswith("kept_steps_")},
                "train_loss": run.info(k, "train").get("train_loss")}

    return round_rows(run, cfg.rounds, figures)


def learned_probe(s: Session, round_: int) -> list[Problem]:
    """The forgetting probe on what rounds 1..``round_``-1 learned (their select stages' task ids)."""
    if not (s.cfg.eval_learned and round_ >= 1):
        return []
    ids = {t for j in range(1, round_) for t in s.run.info(j, "select").get("learned_task_ids", [])}
    return probe_subset([p for p in s.splits["unlabeled"] if p.task_id in ids], s.cfg.probe_problems,
                        s.cfg.seed + round_)


def evaluate_round(s: Session, round_: int, title: str,
                   collect: Callable[[RunDir, Any], list[dict[str, Any]]]) -> None:
    """Evaluate round ``round_``'s model (validation and the forgetting probes; the test splits when due),
    then rewrite the metrics and the plot."""
    model = model_for_round(s.run, s.cfg, round_)
    s.evaluate(round_, model, s.probes(learned_probe(s, round_)), test=tests_due(s.cfg, round_))
    rows = collect(s.run, s.cfg)
    s.run.write_metrics(rows)
    plot_metrics(rows, s.run.plot_path, title=title)


def describe(cfg: ITERTLConfig, splits: dict[str, Any]) -> str:
    return (f"{len(splits['unlabeled'])} unlabeled, {len(splits['reference'])} reference, "
            f"{len(splits['validation'])} validation problems; test splits (reported only): {tests_summary(splits)}; "
            f"{cfg.rounds} rounds")


def run_itertl(cfg: ITERTLConfig, log: Log = print) -> RunDir:
    """Run (or resume) the loop described by ``cfg``; returns the closed run directory.

    >>> run_itertl(load_config("configs/demo.yaml"))   # doctest: +SKIP
    """
    with open_session(cfg, RESUMABLE_KEYS, lambda splits: ": " + describe(cfg, splits), log) as s:
        run, splits = s.run, s.splits
        s.start_base()
        run.record_lineage(0, {"model": model_for_round(run, cfg, 0), "parent": None})
        evaluate_round(s, 0, f"ITERTL: {cfg.name}", collect_metrics)
        for k in range(1, cfg.rounds + 1):
            parent = model_for_round(run, cfg, k - 1)
            unlabeled = round_problems(splits["unlabeled"], cfg.unlabeled_per_round, k)
            # reference problems sampled for repair rows alone (repair_reference; none by default)
            repair_reference = round_problems(splits["reference"], cfg.repair_reference, k) if cfg.repair_reference else []
            samples_path, results_path = s.sample_and_execute(k, parent, unlabeled + repair_reference)
            s.stage(k, "select", lambda d: select_stage(unlabeled, read_samples(samples_path)[0],
                                                        read_jsonl(results_path), splits["reference"], cfg, d, k,
                                                        model=parent, repair_reference=repair_reference))
            if not run.is_done(k, "train"):
                s.pool.close()  # free the engine's memory and processes before training
            s.stage(k, "train", lambda d: train_stage(parent, run.stage_dir(k, "select") / "train.jsonl", cfg, d, k))
            run.record_lineage(k, {"model": model_for_round(run, cfg, k), "parent": parent,
                                   "trained_on": f"round-{k}/select/train.jsonl",
                                   "learning_rate": round_learning_rate(cfg, k)})
            evaluate_round(s, k, f"ITERTL: {cfg.name}", collect_metrics)
        s.log_table(collect_metrics(run, cfg), "ITERTL run")
    return run
