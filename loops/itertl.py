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
from codegen.synthetic import EVALUATION_SPLITS, TEST_SPLITS
from loops.config import RESUMABLE_KEYS, ITERTLConfig, LoopConfig, split_name
from loops.plot import plot_metrics
from loops.repair import repair_count, round_repair_rows
from loops.rundir import RunDir
from loops.sampler_pool import Log, SamplerPool
from loops.table import format_table
from loops.trainers import train_sft
from sandbox.base import Limits


# --------------------------------------------------------------------------- data
TRAINING_KEYS = ("unlabeled", "reference")


def _load(spec: str, key: str, cap: int | None) -> list[Problem]:
    problems = load_problems(spec)
    if cap is not None:
        problems = problems[:cap]
    if not problems:
        raise UserError(f"{key} set {spec!r} has no problems; point {key}= at a non-empty set")
    return problems


def synthetic_split_of(problem: Problem) -> str | None:
    """The synthetic split a problem came from (its meta, else its task id), or None."""
    split = problem.meta.get("split")
    if isinstance(split, str) and split:
        return split
    parts = problem.task_id.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "synthetic" else None


def _refuse_evaluation_problems(key: str, spec: str, problems: Sequence[Problem], forbidden: Sequence[str],
                                fix: str) -> None:
    """The file-level twin of the config's protocol rules: a problems file cut from a test
    (or validation) split is caught by what its problems say they are."""
    bad = [(p.task_id, synthetic_split_of(p)) for p in problems if synthetic_split_of(p) in forbidden]
    if bad:
        task_id, split = bad[0]
        raise UserError(f"{key} set {spec!r} holds problems of the synthetic {split} split (e.g. {task_id}): {fix}")


def load_splits(cfg: ITERTLConfig) -> dict[str, Any]:
    """The problem sets, each capped at ``max_problems`` (the first ones, a fixed choice).

    Keys ``unlabeled``, ``reference``, ``validation`` (lists of problems) and
    ``test`` (``{metric name: problems}``). Refuses a reference set without
    solutions, shared task ids, and training or validation sets that hold
    test problems (or training sets that hold validation problems).
    """
    splits: dict[str, Any] = {key: _load(getattr(cfg, key), key, cfg.max_problems)
                              for key in (*TRAINING_KEYS, "validation")}
    splits["test"] = {name: _load(spec, f"test split {name}", cfg.max_problems)
                      for name, spec in cfg.test_names.items()}
    missing = [p.task_id for p in splits["reference"] if not p.canonical_solution]
    if missing:
        raise UserError(f"reference set {cfg.reference!r} has problems without canonical_solution "
                        f"(e.g. {missing[0]}); replay needs solutions: use a labelled set such as synthetic:reference")
    for key in TRAINING_KEYS:
        _refuse_evaluation_problems(key, getattr(cfg, key), splits[key], EVALUATION_SPLITS,
                                    f"the loop trains on {key}, never on evaluation problems; use {key}=synthetic:{key}")
    _refuse_evaluation_problems("validation", cfg.validation, splits["validation"], TEST_SPLITS,
                                "test problems are only reported, never used to choose settings; "
                                "use validation=synthetic:validation")
    sets = [splits[key] for key in (*TRAINING_KEYS, "validation")] + list(splits["test"].values())
    ids = [p.task_id for ps in sets for p in ps]
    if len(ids) != len(set(ids)):
        shared = next(t for t in ids if ids.count(t) > 1)
        raise UserError(f"task {shared!r} occurs in two of unlabeled/reference/validation/test; "
                        "the splits must be disjoint")
    return splits


def round_problems(pool: Sequence[Problem], per_round: int | None, round_: int) -> list[Problem]:
    """The unlabeled problems round ``round_`` (1, 2, ...) samples: all of ``pool``, or
    the next ``per_round`` of them, wrapping around. A large pool in fresh slices
    gives every round new problems to solve for the same sampling cost, instead
    of the same few problems again (which the model then memorises).

    >>> [p for p in round_problems(list("abcde"), 2, 3)]
    ['e', 'a']
    """
    pool = list(pool)
    if per_round is None or per_round >= len(pool):
        return pool
    start = (round_ - 1) * per_round
    return [pool[(start + i) % len(pool)] for i in range(per_round)]


def stage_seed(cfg: ITERTLConfig, round_: int, offset: int) -> int:
    return cfg.seed * 1_000_003 + round_ * 101 + offset


# --------------------------------------------------------------------------- stages
def sample_stage(sampler, problems: Sequence[Problem], cfg: ITERTLConfig, out_dir: Path, *,
                 model_name: str, round_: int) -> dict[str, Any]:
    """Draw ``n_samples`` completions per problem; write ``samples.jsonl``."""
    params = SamplingParams(n=cfg.n_samples, temperature=cfg.temperature, top_p=cfg.top_p,
                            max_tokens=cfg.max_tokens, seed=stage_seed(cfg, round_, 1))
    t0 = time.monotonic()
    samples = sample_problems(sampler, problems, params, model_name=model_name, round=round_)
    write_jsonl_atomic(out_dir / "samples.jsonl", [s.to_dict() for s in samples])
    return {"samples": len(samples), "problems": len(problems), "seconds": round(time.monotonic() - t0, 2)}


def execute_stage(problems: Sequence[Problem], samples: Sequence[Sample], cfg: ITERTLConfig,
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


def normalized_program(problem: Problem, completion: str) -> str:
    """A key under which two completions count as the same program.

    The syntax tree ignores comments, blank lines and formatting, so trivially
    different copies of one solution are not trained on twice.
    """
    try:
        return ast.dump(ast.parse(problem.program(completion)))
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in completion.strip().splitlines() if line.strip())


def passing_programs(problems: Sequence[Problem], samples: Sequence[Sample],
                     results: Sequence[dict]) -> dict[str, dict[str, Sample]]:
    """``{task_id: {program key: first sample}}`` of the passing samples (`normalized_program` keys).

    ``infra_error`` earns no reward (None) and never counts as a pass.
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
    return groups


def select_kept(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                keep_per_problem: int, seed: int) -> list[dict[str, Any]]:
    """Passing samples, deduplicated per problem, at most ``keep_per_problem`` each.

    Which duplicates survive is a seeded random choice, so no bias (say, towards
    short or confident completions) creeps in unannounced. ``infra_error`` earns
    no reward (None) and is never kept.
    """
    by_id = {p.task_id: p for p in problems}
    groups = passing_programs(problems, samples, results)
    rng = random.Random(seed)
    kept = []
    for task_id in sorted(groups, key=lambda t: list(by_id).index(t)):
        distinct = list(groups[task_id].values())
        rng.shuffle(distinct)
        for s in distinct[:keep_per_problem]:
            kept.append({"prompt": by_id[task_id].prompt, "completion": s.completion, "task_id": task_id,
                         "source": "self", "sample_id": s.sample_id})
    return kept


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
    return {"kept_problems": len(kept_ids), "passing_programs": sum(len(g) for g in groups.values()),
            **difficulty_shares(problems, kept_ids), "sample_diversity": sample_diversity(samples)}


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
                 model: str | None = None) -> dict[str, Any]:
    """Write ``train.jsonl``: kept self-samples plus the replay share of reference solutions, and the
    repair share (`loops.repair`; ``model``, the sampling model, fits its rows to ``max_length``)."""
    kept = select_kept(problems, samples, results, cfg.keep_per_problem, stage_seed(cfg, round_, 2))
    replay = replay_rows(reference, replay_count(len(kept), cfg.replay_share), stage_seed(cfg, round_, 3))
    repair = []
    if cfg.repair_share > 0 and kept:
        repair = round_repair_rows(problems, samples, results, repair_count(len(kept) + len(replay), cfg.repair_share),
                                   stage_seed(cfg, round_, 8), executor=cfg.executor, workers=cfg.workers,
                                   executor_options=cfg.executor_options,
                                   model=model, max_length=cfg.max_length)
    rows = kept + replay + repair
    random.Random(stage_seed(cfg, round_, 4)).shuffle(rows)
    write_jsonl_atomic(out_dir / "train.jsonl", rows)
    learned = sorted({r["task_id"] for r in kept})
    return {"kept": len(kept), "replay": len(replay), "repair": len(repair), "learned_task_ids": learned, "learned_problems": len(learned),
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


def _pass_at(results: list[dict], ks: Sequence[int]) -> dict[str, float]:
    return pass_at_k_table(results, list(ks))


PROBES = ("reference", "learned")  # forgetting probes: pass@1 only


def evaluate_stage(sampler, model_name: str, probes: dict[str, Sequence[Problem]], cfg: ITERTLConfig,
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
        for key, value in _pass_at(subset, ks).items():
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


def score_test_splits(sampler, model_name: str, tests: dict[str, Sequence[Problem]], cfg: ITERTLConfig,
                      out_dir: Path, round_: int) -> dict[str, Any]:
    """Score the test splits (only ever reported): `evaluate_stage` with its own sampling seed."""
    return evaluate_stage(sampler, model_name, tests, cfg, out_dir, round_, seed_offset=7)


def tests_due(cfg: ITERTLConfig, round_: int) -> bool:
    """Whether round ``round_`` evaluates the test splits: round 0, the last round, or every round if asked."""
    return bool(cfg.test) and (round_ in (0, cfg.rounds) or cfg.test_every_round)


# --------------------------------------------------------------------------- the loop
def probe_subset(problems: Sequence[Problem], cap: int, seed: int) -> list[Problem]:
    """At most ``cap`` of ``problems``, a seeded sample kept in their order (the same subset every time)."""
    problems = list(problems)
    if len(problems) <= cap:
        return problems
    return sorted(random.Random(seed).sample(problems, cap), key=problems.index)


def reference_probe_of(cfg: LoopConfig, splits: dict[str, Any]) -> list[Problem]:
    """The forgetting probe: the same reference subset in every loop (same seed), so their rows compare."""
    return probe_subset(splits["reference"], cfg.probe_problems, cfg.seed + 7) if cfg.eval_reference else []


def starter_stage(cfg: LoopConfig, out_dir: Path) -> dict[str, Any]:
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
        row = {**dict(ev), **scores_of_test_stage(run.info(k, "test"))}
        if k >= 1:
            row["sampled_pass_rate"] = run.info(k, "execute").get("sampled_pass_rate")
            sel = run.info(k, "select")
            row.update({key: sel.get(key) for key in ("kept", "replay", "repair", "kept_problems", "passing_programs",
                                                       "sample_diversity")})
            row.update({key: value for key, value in sel.items() if key.startswith("kept_steps_")})
            row["train_loss"] = run.info(k, "train").get("train_loss")
        rows.append(row)
    return rows


TEST_BOOKKEEPING = ("round", "model", "eval_n", "eval_temperature", "seconds")


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


def scores_of_test_stage(info: dict[str, Any]) -> dict[str, Any]:
    """A test stage's scores for a metrics row (its bookkeeping is the evaluate stage's already)."""
    out = {key: value for key, value in info.items() if key not in TEST_BOOKKEEPING}
    if "seconds" in info:
        out["test_seconds"] = info["seconds"]
    return out


def run_itertl(cfg: ITERTLConfig, log: Log = print) -> RunDir:
    """Run (or resume) the loop described by ``cfg``; returns the closed run directory.

    >>> run_itertl(load_config("configs/demo.yaml"))   # doctest: +SKIP
    """
    run = RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS, cfg.defaults())
    pool = SamplerPool(cfg, log)
    finished_before = set(run.finished_stages())
    try:
        splits = load_splits(cfg)
        tests = ", ".join(f"{len(ps)} {name}" for name, ps in splits["test"].items()) or "none"
        log(f"run {run.root}: {len(splits['unlabeled'])} unlabeled, {len(splits['reference'])} reference, "
            f"{len(splits['validation'])} validation problems; test splits (reported only): {tests}; "
            f"{cfg.rounds} rounds" + (f"; resuming after {len(finished_before)} finished stages" if finished_before else ""))
        reference_probe = reference_probe_of(cfg, splits)

        def stage(round_: int, name: str, fn: Callable[[Path], dict]) -> dict:
            return run.run_logged(round_, name, fn, log)

        def publish() -> None:
            rows = collect_metrics(run, cfg)
            run.write_metrics(rows)
            plot_metrics(rows, run.plot_path, title=f"ITERTL: {cfg.name}")

        if cfg.base_model == "starter":
            stage(0, "starter", lambda d: starter_stage(cfg, d))
        base = model_for_round(run, cfg, 0)
        run.record_lineage(0, {"model": base, "parent": None})

        def evaluate(k: int) -> None:
            model = model_for_round(run, cfg, k)
            learned: list[Problem] = []
            if cfg.eval_learned and k >= 1:
                ids = {t for j in range(1, k) for t in run.info(j, "select").get("learned_task_ids", [])}
                learned = probe_subset([p for p in splits["unlabeled"] if p.task_id in ids],
                                        cfg.probe_problems, cfg.seed + k)
            probes = {"validation": splits["validation"], "reference": reference_probe, "learned": learned}
            stage(k, "evaluate", lambda d: evaluate_stage(pool.get(model), model, probes, cfg, d, k))
            if tests_due(cfg, k):
                check_test_stage(run, cfg, k)
                stage(k, "test", lambda d: score_test_splits(pool.get(model), model, splits["test"], cfg, d, k))
            publish()

        evaluate(0)
        for k in range(1, cfg.rounds + 1):
            parent = model_for_round(run, cfg, k - 1)
            unlabeled = round_problems(splits["unlabeled"], cfg.unlabeled_per_round, k)
            stage(k, "sample", lambda d: sample_stage(pool.get(parent), unlabeled, cfg, d,
                                                      model_name=parent, round_=k))
            samples_path = run.stage_dir(k, "sample") / "samples.jsonl"
            stage(k, "execute", lambda d: execute_stage(unlabeled, read_samples(samples_path)[0], cfg, d))
            results_path = run.stage_dir(k, "execute") / "results.jsonl"
            stage(k, "select", lambda d: select_stage(unlabeled, read_samples(samples_path)[0],
                                                      read_jsonl(results_path), splits["reference"], cfg, d, k,
                                                      model=parent))
            if not run.is_done(k, "train"):
                pool.close()  # free the engine's memory and processes before training
            stage(k, "train", lambda d: train_stage(parent, run.stage_dir(k, "select") / "train.jsonl", cfg, d, k))
            run.record_lineage(k, {"model": model_for_round(run, cfg, k), "parent": parent,
                                   "trained_on": f"round-{k}/select/train.jsonl",
                                   "learning_rate": round_learning_rate(cfg, k)})
            evaluate(k)
        rows = collect_metrics(run, cfg)
        log("")
        log(format_table(rows, title=f"ITERTL run {run.root} (pass rates in %, n={cfg.eval_n}, "
                                     f"T={cfg.eval_temperature}, sampler={cfg.sampler})"))
        log(f"plot: {run.plot_path}")
    finally:
        pool.close()
        run.close()
    return run
