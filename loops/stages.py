"""The stages every loop driver shares: build the starter, sample, execute, evaluate, test.

Each is a function of a config and the stage's directory that returns the
stage's info (what `RunDir` records); a driver strings them together with
its own select and train stages. Evaluation is the same in every loop (same
seeds, same settings), so the figures of an ITERTL, DPO, GRPO and
RewardRanker run from one starter compare row by row.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from codegen.errors import UserError
from codegen.evaluate import evaluate_samples
from codegen.hardware import training_threads
from codegen.io import write_json_atomic, write_jsonl_atomic
from codegen.passk import pass_at_k_table
from codegen.problems import Problem
from codegen.samplers import SamplingParams
from codegen.samples import Sample
from codegen.sampling import sample_problems
from codegen.starter import build_starter
from loops.config import ITERTLConfig, LoopConfig, split_name
from loops.rundir import RunDir
from sandbox.base import Limits


def stage_seed(cfg: LoopConfig, round_: int, offset: int) -> int:
    return cfg.seed * 1_000_003 + round_ * 101 + offset


def starter_stage(cfg: LoopConfig, out_dir: Path) -> dict[str, Any]:
    """Build codegen.starter's model into ``out_dir/model`` (build_starter writes atomically itself)."""
    build_starter(out_dir / "model", seed=cfg.seed, quick=cfg.starter_quick, progress=cfg.progress,
                  threads=training_threads(cfg.starter_threads))
    return {"model": "model"}


def sample_stage(sampler, problems: Sequence[Problem], cfg: ITERTLConfig, out_dir: Path, *,
                 model_name: str, round_: int, temperature: float | None = None) -> dict[str, Any]:
    """Draw ``n_samples`` completions per problem (at ``temperature``, default the config's);
    write ``samples.jsonl``."""
    params = SamplingParams(n=cfg.n_samples, temperature=cfg.temperature if temperature is None else temperature,
                            top_p=cfg.top_p, max_tokens=cfg.max_tokens, seed=stage_seed(cfg, round_, 1))
    t0 = time.monotonic()
    samples = sample_problems(sampler, problems, params, model_name=model_name, round=round_)
    write_jsonl_atomic(out_dir / "samples.jsonl", [s.to_dict() for s in samples])
    return {"samples": len(samples), "problems": len(problems), "seconds": round(time.monotonic() - t0, 2)}


def execute_stage(problems: Sequence[Problem], samples: Sequence[Sample], cfg: LoopConfig,
                  out_dir: Path) -> dict[str, Any]:
    """Run every sample against its tests in the sandbox; write ``results.jsonl``."""
    t0 = time.monotonic()
    results = evaluate_samples(list(problems), list(samples), backend=cfg.executor, workers=cfg.workers,
                               backend_options=cfg.executor_options, limits=Limits(timeout_s=cfg.timeout_s),
                               progress=cfg.progress)
    write_jsonl_atomic(out_dir / "results.jsonl", results)
    passed = sum(r["passed"] for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    return {"results": len(results), "passed": passed, "sampled_pass_rate": passed / max(1, len(results)),
            "problems_solved": len({r["task_id"] for r in results if r["passed"]}),
            "statuses": statuses, "seconds": round(time.monotonic() - t0, 2)}


def normalized_text(completion: str) -> str:
    """A completion with every run of whitespace made one space: the diversity measure's unit."""
    return " ".join(completion.split())


def sample_diversity(samples: Sequence[Sample]) -> float | None:
    """Mean over problems of (distinct completions after whitespace normalisation) / (samples).

    1.0: every sample of a problem differs; 1/n: the model wrote one program n
    times. None without samples.
    """
    groups: dict[str, list[str]] = {}
    for s in samples:
        groups.setdefault(s.task_id, []).append(normalized_text(s.completion))
    if not groups:
        return None
    return sum(len(set(texts)) / len(texts) for texts in groups.values()) / len(groups)


PROBES = ("reference", "learned")  # forgetting probes: pass@1 only


def evaluate_stage(sampler, model_name: str, probes: dict[str, Sequence[Problem]], cfg: LoopConfig,
                   out_dir: Path, round_: int, seed_offset: int = 6) -> dict[str, Any]:
    """Sample ``eval_n`` per problem of every probe set, execute, and score each set.

    ``probes`` maps a name ("validation", a test split's name, or the
    forgetting probes "reference" and "learned") to its problems; the result
    has ``<name>_pass@k`` for each k of ``eval_ks`` and ``<name>_diversity``
    (`sample_diversity`), or pass@1 only for the forgetting probes. All sets
    go through one sampling call and one sandbox batch.
    """
    probes = {name: list(ps) for name, ps in probes.items() if ps}
    everything: dict[str, Problem] = {}
    for ps in probes.values():
        for p in ps:
            everything.setdefault(p.task_id, p)
    problems = list(everything.values())
    params = SamplingParams(n=cfg.eval_n, temperature=cfg.eval_temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=stage_seed(cfg, round_, seed_offset))
    t0 = time.monotonic()
    samples = sample_problems(sampler, problems, params, model_name=model_name, round=round_)
    write_jsonl_atomic(out_dir / "samples.jsonl", [s.to_dict() for s in samples])
    results = evaluate_samples(problems, samples, backend=cfg.executor, workers=cfg.workers,
                               backend_options=cfg.executor_options, limits=Limits(timeout_s=cfg.timeout_s),
                               progress=cfg.progress)
    write_jsonl_atomic(out_dir / "results.jsonl", results)
    metrics: dict[str, Any] = {"round": round_, "model": model_name}
    for name, ps in probes.items():
        ids = {p.task_id for p in ps}
        subset = [r for r in results if r["task_id"] in ids]
        ks = [1] if name in PROBES else cfg.eval_ks
        for key, value in pass_at_k_table(subset, list(ks)).items():
            metrics[f"{name}_{key}"] = value
        if name == "learned":
            metrics["learned_problems"] = len(ps)
        if name not in PROBES:
            metrics[f"{name}_diversity"] = sample_diversity([s for s in samples if s.task_id in ids])
    metrics["eval_n"] = cfg.eval_n
    metrics["eval_temperature"] = cfg.eval_temperature
    metrics["seconds"] = round(time.monotonic() - t0, 2)
    write_json_atomic(out_dir / "metrics.json", metrics)
    return metrics


def score_test_splits(sampler, model_name: str, tests: dict[str, Sequence[Problem]], cfg: LoopConfig,
                      out_dir: Path, round_: int) -> dict[str, Any]:
    """Score the test splits (only ever reported): `evaluate_stage` with its own sampling seed."""
    return evaluate_stage(sampler, model_name, tests, cfg, out_dir, round_, seed_offset=7)


def tests_due(cfg: ITERTLConfig, round_: int) -> bool:
    """Whether round ``round_`` evaluates the test splits: round 0, the last round, or every round if asked."""
    return bool(cfg.test) and (round_ in (0, cfg.rounds) or cfg.test_every_round)


def check_test_stage(run: RunDir, cfg: LoopConfig, round_: int) -> None:
    """A finished test stage must have scored every split of ``cfg.test`` (the
    test key may change on resume: see RESUMABLE_KEYS); one that did not is refused."""
    if not run.is_done(round_, "test"):
        return
    info = run.info(round_, "test")
    missing = [spec for spec in cfg.test if f"{split_name(spec)}_pass@1" not in info]
    if missing:
        raise UserError(f"round {round_}'s finished test stage in {run.root} did not score {', '.join(missing)}; "
                        "a finished stage is never redone: start the run under another name=NEW_NAME")


TEST_BOOKKEEPING = ("round", "model", "eval_n", "eval_temperature", "seconds")


def scores_of_test_stage(info: dict[str, Any]) -> dict[str, Any]:
    """A test stage's scores for a metrics row (its bookkeeping is the evaluate stage's already)."""
    out = {key: value for key, value in info.items() if key not in TEST_BOOKKEEPING}
    if "seconds" in info:
        out["test_seconds"] = info["seconds"]
    return out
