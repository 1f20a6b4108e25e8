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
    train    -> TRL SFTTrainer from the round k-1 model, a fresh warmup each round
                (`loops.trainers.train_sft`, which the baseline trains with too)
    evaluate -> held-out pass@k, plus forgetting probes: the reference split and
                the problems earlier rounds learned

`run_itertl` strings them together in a `RunDir`, so a killed run resumes at
the first unfinished stage. Only one sampling engine is alive at a time
(`loops.sampler_pool`): the engine that evaluated model k also samples round
k+1 (same weights), and it is shut down before training.
"""
from __future__ import annotations

import ast
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.datasets import load_problems
from codegen.errors import UserError
from codegen.evaluate import evaluate_samples
from codegen.io import read_jsonl, write_json_atomic, write_jsonl_atomic
from codegen.passk import pass_at_k_table
from codegen.problems import Problem
from codegen.rewards import pass_reward
from codegen.samplers import SamplingParams
from codegen.samples import Sample, read_samples
from codegen.sampling import sample_problems
from codegen.starter import build_starter
from loops.config import RESUMABLE_KEYS, ITERTLConfig
from loops.plot import plot_metrics
from loops.rundir import RunDir
from loops.sampler_pool import Log, SamplerPool
from loops.table import format_table
from loops.trainers import train_sft
from sandbox.base import Limits


# --------------------------------------------------------------------------- data
def load_splits(cfg: ITERTLConfig) -> dict[str, list[Problem]]:
    """The three problem sets, each capped at ``max_problems`` (the first ones, a fixed choice)."""
    splits = {}
    for key in ("unlabeled", "reference", "heldout"):
        problems = load_problems(getattr(cfg, key))
        if cfg.max_problems is not None:
            problems = problems[: cfg.max_problems]
        if not problems:
            raise UserError(f"{key} set {getattr(cfg, key)!r} has no problems; point {key}= at a non-empty set")
        splits[key] = problems
    missing = [p.task_id for p in splits["reference"] if not p.canonical_solution]
    if missing:
        raise UserError(f"reference set {cfg.reference!r} has problems without canonical_solution "
                        f"(e.g. {missing[0]}); replay needs solutions: use a labelled set such as synthetic:reference")
    ids = [p.task_id for ps in splits.values() for p in ps]
    if len(ids) != len(set(ids)):
        raise UserError("a task_id occurs in two of unlabeled/reference/heldout; the splits must be disjoint")
    return splits


def _stage_seed(cfg: ITERTLConfig, round_: int, offset: int) -> int:
    return cfg.seed * 1_000_003 + round_ * 101 + offset


# --------------------------------------------------------------------------- stages
def sample_stage(sampler, problems: Sequence[Problem], cfg: ITERTLConfig, out_dir: Path, *,
                 model_name: str, round_: int) -> dict[str, Any]:
    """Draw ``n_samples`` completions per problem; write ``samples.jsonl``."""
    params = SamplingParams(n=cfg.n_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=_stage_seed(cfg, round_, 1))
    t0 = time.monotonic()
    samples = sample_problems(sampler, problems, params, model_name=model_name, round=round_)
    write_jsonl_atomic(out_dir / "samples.jsonl", [s.to_dict() for s in samples])
    return {"samples": len(samples), "problems": len(problems), "seconds": round(time.monotonic() - t0, 2)}


def execute_stage(problems: Sequence[Problem], samples: Sequence[Sample], cfg: ITERTLConfig,
                  out_dir: Path) -> dict[str, Any]:
    """Run every sample against its tests in the sandbox; write ``results.jsonl``."""
    t0 = time.monotonic()
    results = evaluate_samples(list(problems), list(samples), backend=cfg.executor, workers=cfg.workers,
                               limits=Limits(timeout_s=cfg.timeout_s), progress=cfg.progress)
    write_jsonl_atomic(out_dir / "results.jsonl", results)
    passed = sum(r["passed"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"results": len(results), "passed": passed, "sampled_pass_rate": passed / max(1, len(results)),
            "problems_solved": len({r["task_id"] for r in results if r["passed"]}),
            "statuses": statuses, "seconds": round(time.monotonic() - t0, 2)}


def normalized_program(problem: Problem, completion: str) -> str:
    """A key under which two completions count as the same program.

    The syntax tree ignores comments, blank lines and formatting, so trivially
    different copies of one solution are not trained on twice.
    """
    try:
        return ast.dump(ast.parse(problem.program(completion)))
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in completion.strip().splitlines() if line.strip())


def select_kept(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                keep_per_problem: int, seed: int) -> list[dict[str, Any]]:
    """Passing samples, deduplicated per problem, at most ``keep_per_problem`` each.

    Which duplicates survive is a seeded random choice, so no bias (say, towards
    short or confident completions) creeps in unannounced. ``infra_error`` earns
    no reward (None) and is never kept.
    """
    by_id = {p.task_id: p for p in problems}
    verdicts = {r["sample_id"]: r for r in results}
    judged = [s for s in samples if s.task_id in by_id and s.sample_id in verdicts]
    rewards = pass_reward([by_id[s.task_id].prompt for s in judged], [s.completion for s in judged],
                          verdict=[verdicts[s.sample_id] for s in judged])
    groups: dict[str, dict[str, Sample]] = {}
    for s, reward in zip(judged, rewards):
        if reward != 1.0:  # failed (0.0) or an infra error (None)
            continue
        key = normalized_program(by_id[s.task_id], s.completion)
        groups.setdefault(s.task_id, {}).setdefault(key, s)
    rng = random.Random(seed)
    kept = []
    for task_id in sorted(groups, key=lambda t: list(by_id).index(t)):
        distinct = list(groups[task_id].values())
        rng.shuffle(distinct)
        for s in distinct[:keep_per_problem]:
            kept.append({"prompt": by_id[task_id].prompt, "completion": s.completion, "task_id": task_id,
                         "source": "self", "sample_id": s.sample_id})
    return kept


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
                 reference: Sequence[Problem], cfg: ITERTLConfig, out_dir: Path, round_: int) -> dict[str, Any]:
    """Write ``train.jsonl``: kept self-samples plus the replay share of reference solutions."""
    kept = select_kept(problems, samples, results, cfg.keep_per_problem, _stage_seed(cfg, round_, 2))
    replay = replay_rows(reference, replay_count(len(kept), cfg.replay_share), _stage_seed(cfg, round_, 3))
    rows = kept + replay
    random.Random(_stage_seed(cfg, round_, 4)).shuffle(rows)
    write_jsonl_atomic(out_dir / "train.jsonl", rows)
    learned = sorted({r["task_id"] for r in kept})
    return {"kept": len(kept), "replay": len(replay), "learned_task_ids": learned, "learned_problems": len(learned)}


def round_learning_rate(cfg: ITERTLConfig, round_: int) -> float:
    return cfg.learning_rate * cfg.round_lr_decay ** (round_ - 1)


def train_stage(parent: str, train_path: Path, cfg: ITERTLConfig, out_dir: Path, round_: int) -> dict[str, Any]:
    """Train round ``round_``'s model into ``out_dir/model``; an empty training set keeps the parent."""
    rows = read_jsonl(train_path)
    if not any(r["source"] == "self" for r in rows):
        # Nothing passed: training on replay alone would not be self-training. Keep the model.
        return {"model": None, "skipped": "no passing samples to train on", "examples": len(rows)}
    info = train_sft(parent, rows, out_dir / "model", steps=cfg.train_steps, cfg=cfg,
                     learning_rate=round_learning_rate(cfg, round_), seed=_stage_seed(cfg, round_, 5),
                     scratch=out_dir / ".tmp-trainer")
    return {"model": "model", **info}


def _pass_at(results: list[dict], ks: Sequence[int]) -> dict[str, float]:
    return pass_at_k_table(results, list(ks))


def evaluate_stage(sampler, model_name: str, probes: dict[str, Sequence[Problem]], cfg: ITERTLConfig,
                   out_dir: Path, round_: int) -> dict[str, Any]:
    """Sample ``eval_n`` per problem of every probe set, execute, and score each set.

    ``probes`` maps a name ("heldout", "reference", "learned") to its problems;
    the result has ``<name>_pass@k`` for each k of ``eval_ks`` (held-out) or
    pass@1 only (the forgetting probes). All sets go through one sampling call
    and one sandbox batch.
    """
    probes = {name: list(ps) for name, ps in probes.items() if ps}
    everything: dict[str, Problem] = {}
    for ps in probes.values():
        for p in ps:
            everything.setdefault(p.task_id, p)
    problems = list(everything.values())
    params = SamplingParams(n=cfg.eval_n, temperature=cfg.eval_temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=_stage_seed(cfg, round_, 6))
    t0 = time.monotonic()
    samples = sample_problems(sampler, problems, params, model_name=model_name, round=round_)
    write_jsonl_atomic(out_dir / "samples.jsonl", [s.to_dict() for s in samples])
    results = evaluate_samples(problems, samples, backend=cfg.executor, workers=cfg.workers,
                               limits=Limits(timeout_s=cfg.timeout_s), progress=cfg.progress)
    write_jsonl_atomic(out_dir / "results.jsonl", results)
    metrics: dict[str, Any] = {"round": round_, "model": model_name}
    for name, ps in probes.items():
        ids = {p.task_id for p in ps}
        subset = [r for r in results if r["task_id"] in ids]
        ks = cfg.eval_ks if name == "heldout" else [1]
        for key, value in _pass_at(subset, ks).items():
            metrics[f"{name}_{key}"] = value
        if name == "learned":
            metrics["learned_problems"] = len(ps)
    metrics["eval_n"] = cfg.eval_n
    metrics["eval_temperature"] = cfg.eval_temperature
    metrics["seconds"] = round(time.monotonic() - t0, 2)
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


# --------------------------------------------------------------------------- the loop
def _probe_subset(problems: Sequence[Problem], cap: int, seed: int) -> list[Problem]:
    problems = list(problems)
    if len(problems) <= cap:
        return problems
    return sorted(random.Random(seed).sample(problems, cap), key=problems.index)


def _starter_stage(cfg: ITERTLConfig, out_dir: Path) -> dict[str, Any]:
    """Build codegen.starter's model into ``out_dir/model`` (build_starter writes atomically itself)."""
    build_starter(out_dir / "model", seed=cfg.seed, quick=cfg.starter_quick, progress=cfg.progress)
    return {"model": "model"}


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


def collect_metrics(run: RunDir, cfg: ITERTLConfig) -> list[dict[str, Any]]:
    """One row per evaluated round: the evaluate stage's metrics plus sample/select/train figures."""
    rows = []
    for k in range(0, cfg.rounds + 1):
        ev = run.info(k, "evaluate")
        if not ev:
            continue
        row = dict(ev)
        if k >= 1:
            row["sampled_pass_rate"] = run.info(k, "execute").get("sampled_pass_rate")
            sel = run.info(k, "select")
            row["kept"], row["replay"] = sel.get("kept"), sel.get("replay")
            row["train_loss"] = run.info(k, "train").get("train_loss")
        rows.append(row)
    return rows


def run_itertl(cfg: ITERTLConfig, log: Log = print) -> RunDir:
    """Run (or resume) the loop described by ``cfg``; returns the closed run directory.

    >>> run_itertl(load_config("configs/demo.yaml"))   # doctest: +SKIP
    """
    run = RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS)
    pool = SamplerPool(cfg, log)
    finished_before = set(run.finished_stages())
    try:
        splits = load_splits(cfg)
        log(f"run {run.root}: {len(splits['unlabeled'])} unlabeled, {len(splits['reference'])} reference, "
            f"{len(splits['heldout'])} held-out problems; {cfg.rounds} rounds"
            + (f"; resuming after {len(finished_before)} finished stages" if finished_before else ""))
        reference_probe = (_probe_subset(splits["reference"], cfg.probe_problems, cfg.seed + 7)
                           if cfg.eval_reference else [])

        def stage(round_: int, name: str, fn: Callable[[Path], dict]) -> dict:
            if run.is_done(round_, name):
                log(f"round {round_} {name}: done already, skipped")
                return run.info(round_, name)
            log(f"round {round_} {name} ...")
            t0 = time.monotonic()
            info = run.run_stage(round_, name, fn)
            log(f"round {round_} {name}: finished in {time.monotonic() - t0:.1f}s")
            return info

        def publish() -> None:
            rows = collect_metrics(run, cfg)
            run.write_metrics(rows)
            plot_metrics(rows, run.plot_path, title=f"ITERTL: {cfg.name}")

        if cfg.base_model == "starter":
            stage(0, "starter", lambda d: _starter_stage(cfg, d))
        base = model_for_round(run, cfg, 0)
        run.record_lineage(0, {"model": base, "parent": None})

        def evaluate(k: int) -> None:
            model = model_for_round(run, cfg, k)
            learned: list[Problem] = []
            if cfg.eval_learned and k >= 1:
                ids = {t for j in range(1, k) for t in run.info(j, "select").get("learned_task_ids", [])}
                learned = _probe_subset([p for p in splits["unlabeled"] if p.task_id in ids],
                                        cfg.probe_problems, cfg.seed + k)
            probes = {"heldout": splits["heldout"], "reference": reference_probe, "learned": learned}
            stage(k, "evaluate", lambda d: evaluate_stage(pool.get(model), model, probes, cfg, d, k))
            publish()

        evaluate(0)
        for k in range(1, cfg.rounds + 1):
            parent = model_for_round(run, cfg, k - 1)
            stage(k, "sample", lambda d: sample_stage(pool.get(parent), splits["unlabeled"], cfg, d,
                                                      model_name=parent, round_=k))
            samples_path = run.stage_dir(k, "sample") / "samples.jsonl"
            stage(k, "execute", lambda d: execute_stage(splits["unlabeled"], read_samples(samples_path)[0], cfg, d))
            results_path = run.stage_dir(k, "execute") / "results.jsonl"
            stage(k, "select", lambda d: select_stage(splits["unlabeled"], read_samples(samples_path)[0],
                                                      read_jsonl(results_path), splits["reference"], cfg, d, k))
            if not run.is_done(k, "train"):
                pool.close()  # free the engine's memory and processes before training
            stage(k, "train", lambda d: train_stage(parent, run.stage_dir(k, "select") / "train.jsonl", cfg, d, k))
            run.record_lineage(k, {"model": model_for_round(run, cfg, k), "parent": parent,
                                   "trained_on": f"round-{k}/select/train.jsonl",
                                   "learning_rate": round_learning_rate(cfg, k)})
            evaluate(k)
        rows = collect_metrics(run, cfg)
        log("")
        log(format_table(rows, title=f"ITERTL run {run.root} (pass rates in %, held-out n={cfg.eval_n}, "
                                     f"T={cfg.eval_temperature}, sampler={cfg.sampler})"))
        log(f"plot: {run.plot_path}")
    finally:
        pool.close()
        run.close()
    return run
