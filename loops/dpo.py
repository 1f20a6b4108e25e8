"""Iterative DPO: preference pairs from the policy's own samples, judged by their tests.

ITERTL with another select and train stage. Round 0 evaluates the base model
(building the starter first when ``base_model: starter``). Each round k >= 1:

    sample   -> n completions per unlabeled problem from the round k-1 model
                (the shared `loops.stages` stage, same seeds, same slice of the pool per round)
    execute  -> run them in the sandbox (the shared stage)
    select   -> (passing, failing) pairs per problem (`preference_pairs`):
                passing programs deduplicated by syntax tree, failing ones too,
                the failures the policy was most confident in (highest mean
                log-prob per token) first, at most ``pairs_per_problem``;
                a host infra error is neither side of a pair, an error the
                program provoked (exception, timeout, memory) is a failure
    train    -> TRL DPOTrainer from the round k-1 model, with the round k-1
                model as the reference (`loops.trainers.train_dpo`)
    evaluate -> validation pass@k and the forgetting probes, as ITERTL
    test     -> (round 0 and the last round) the test splits, only reported

Why the most confident failures: they are the mistakes the policy would make
again, and DPO's gradient is largest on pairs the policy ranks the wrong way
round. On-policy pairs from the latest model are what makes DPO iterative
(METHODS.md, "Preference pairs from search"). Evaluation is ITERTL's
(`loops.itertl.evaluate_round`; its "learned" probe here: the problems earlier
rounds made pairs of), so the figures compare.

`run_dpo` strings the stages together in a `RunDir`: a killed run resumes at
the first unfinished stage and never redoes a finished one.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from codegen.io import read_jsonl, write_jsonl_atomic
from codegen.problems import Problem
from codegen.rewards import reward
from codegen.samples import Sample, read_samples
from loops.config import RESUMABLE_KEYS
from loops.dpo_config import DPOConfig
from loops.itertl import evaluate_round, model_for_round, normalized_program, round_learning_rate, round_rows
from loops.rundir import RunDir
from loops.sampler_pool import Log
from loops.session import open_session
from loops.splits import round_problems, tests_summary
from loops.stages import sample_diversity, stage_seed
from loops.trainers import train_dpo


# --------------------------------------------------------------------------- pairs
def _confidence(sample: Sample) -> float:
    """Higher = the policy was surer of it. A sample without log-probs ranks last."""
    return sample.mean_logprob if sample.mean_logprob is not None else float("-inf")


def judged_programs(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict]
                    ) -> tuple[dict[str, dict[str, Sample]], dict[str, dict[str, Sample]], int]:
    """``(passing, failing, infra_errors)``: per task id, ``{program key: sample}`` of each side.

    Keys are `normalized_program`'s, so a program counts once however it was
    formatted. A passing program keeps its first sample; a failing one keeps
    its most confident sample. A program that both passed and failed (a flaky
    timeout, say) is left out of the failures: it cannot be both sides of a pair.
    Only samples of ``problems`` with a verdict count; an infra error (reward
    None) is no signal about the program and is only counted.
    """
    by_id = {p.task_id: p for p in problems}
    verdicts = {r["sample_id"]: r for r in results}
    passing: dict[str, dict[str, Sample]] = {}
    failing: dict[str, dict[str, Sample]] = {}
    infra = 0
    for s in samples:
        if s.task_id not in by_id or s.sample_id not in verdicts:
            continue
        r = reward(verdicts[s.sample_id], "pass")
        if r is None:
            infra += 1
            continue
        key = normalized_program(by_id[s.task_id], s.completion)
        if r == 1.0:
            passing.setdefault(s.task_id, {}).setdefault(key, s)
        else:
            held = failing.setdefault(s.task_id, {})
            if key not in held or _confidence(s) > _confidence(held[key]):
                held[key] = s
    for task_id, held in failing.items():
        for key in set(held) & set(passing.get(task_id, {})):
            del held[key]
    return passing, failing, infra


def preference_pairs(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                     pairs_per_problem: int, seed: int) -> list[dict[str, Any]]:
    """(passing, failing) pairs per problem, at most ``pairs_per_problem`` each, in problem order.

    Failures come most confident first (highest ``mean_logprob``); the passing
    programs in a seeded random order (no bias towards short or confident
    ones creeps in). Pair i of a problem is (passing[i mod P], failing[i mod F])
    for i < min(pairs_per_problem, max(P, F)): every distinct program is used
    before any is reused. A problem with no passing or no failing program gives
    no pair.
    """
    passing, failing, _ = judged_programs(problems, samples, results)
    verdicts = {r["sample_id"]: r for r in results}
    rng = random.Random(seed)
    pairs = []
    for p in problems:
        good = list(passing.get(p.task_id, {}).values())
        bad = sorted(failing.get(p.task_id, {}).values(), key=_confidence, reverse=True)  # stable: sample order on ties
        if not good or not bad:
            continue
        rng.shuffle(good)
        for i in range(min(pairs_per_problem, max(len(good), len(bad)))):
            chosen, rejected = good[i % len(good)], bad[i % len(bad)]
            pairs.append({"task_id": p.task_id, "prompt": p.prompt, "chosen": chosen.completion,
                          "rejected": rejected.completion, "chosen_id": chosen.sample_id,
                          "rejected_id": rejected.sample_id, "rejected_status": verdicts[rejected.sample_id]["status"],
                          "chosen_mean_logprob": chosen.mean_logprob, "rejected_mean_logprob": rejected.mean_logprob})
    return pairs


def pairs_report(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict],
                 pairs: Sequence[dict]) -> dict[str, Any]:
    """What a round learns from: pairs, the problems they cover, the programs on each side, statuses rejected."""
    passing, failing, infra = judged_programs(problems, samples, results)
    rejected_statuses: dict[str, int] = {}
    for pair in pairs:
        rejected_statuses[pair["rejected_status"]] = rejected_statuses.get(pair["rejected_status"], 0) + 1
    learned = sorted({pair["task_id"] for pair in pairs})
    return {"pairs": len(pairs), "pair_problems": len(learned), "learned_task_ids": learned,
            "solved_problems": len(passing),
            "all_passed_problems": sum(1 for t in passing if not failing.get(t)),  # nothing to prefer over
            "passing_programs": sum(len(g) for g in passing.values()),
            "failing_programs": sum(len(g) for g in failing.values()),
            "infra_errors_skipped": infra, "rejected_statuses": rejected_statuses,
            "sample_diversity": sample_diversity(samples)}


# --------------------------------------------------------------------------- stages
def select_stage(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict], cfg: DPOConfig,
                 out_dir: Path, round_: int) -> dict[str, Any]:
    """Write ``pairs.jsonl``: the round's preference pairs (`preference_pairs`)."""
    pairs = preference_pairs(problems, samples, results, cfg.pairs_per_problem, stage_seed(cfg, round_, 2))
    write_jsonl_atomic(out_dir / "pairs.jsonl", pairs)
    return pairs_report(problems, samples, results, pairs)


def train_stage(parent: str, pairs_path: Path, cfg: DPOConfig, out_dir: Path, round_: int) -> dict[str, Any]:
    """DPO from ``parent`` against ``parent`` into ``out_dir/model``; no pair keeps the parent."""
    pairs = read_jsonl(pairs_path)
    if not pairs:
        return {"model": None, "skipped": "no (passing, failing) pair to train on", "pairs": 0}
    info = train_dpo(parent, pairs, out_dir / "model", ref_model=parent, steps=cfg.train_steps, beta=cfg.beta,
                     learning_rate=round_learning_rate(cfg, round_), seed=stage_seed(cfg, round_, 5),
                     scratch=out_dir / ".tmp-trainer", batch_size=cfg.batch_size, sft_weight=cfg.sft_weight,
                     warmup_ratio=cfg.warmup_ratio, lr_scheduler=cfg.lr_scheduler, weight_decay=cfg.weight_decay,
                     max_length=cfg.max_length, threads=cfg.train_threads, progress=cfg.progress)
    return {"model": "model", "reference_model": parent, **info}


# --------------------------------------------------------------------------- the loop
SELECT_COLUMNS = ("pairs", "pair_problems", "solved_problems", "passing_programs", "failing_programs",
                  "infra_errors_skipped", "sample_diversity")
TRAIN_COLUMNS = ("train_loss", "reward_margin", "reward_chosen", "reward_rejected", "reward_accuracy", "final_margin")


def collect_metrics(run: RunDir, cfg: DPOConfig) -> list[dict[str, Any]]:
    """One row per evaluated round: the evaluate stage's metrics, the test scores, and the round's pairs and margins."""
    def figures(k: int) -> dict[str, Any]:
        sel, train = run.info(k, "select"), run.info(k, "train")
        return {**{key: sel.get(key) for key in SELECT_COLUMNS}, **{key: train.get(key) for key in TRAIN_COLUMNS}}

    return round_rows(run, cfg.rounds, figures)


def run_dpo(cfg: DPOConfig, log: Log = print) -> RunDir:
    """Run (or resume) the iterative DPO loop described by ``cfg``; returns the closed run directory.

    >>> run_dpo(load_dpo_config("configs/dpo.yaml"))   # doctest: +SKIP
    """
    def describe(splits: dict[str, Any]) -> str:
        return (f" (iterative DPO): {len(splits['unlabeled'])} unlabeled, {len(splits['reference'])} reference, "
                f"{len(splits['validation'])} validation problems; test splits (reported only): "
                f"{tests_summary(splits)}; {cfg.rounds} rounds")

    with open_session(cfg, RESUMABLE_KEYS, describe, log) as s:
        run, splits = s.run, s.splits
        s.start_base()
        run.record_lineage(0, {"model": model_for_round(run, cfg, 0), "parent": None})
        evaluate_round(s, 0, f"iterative DPO: {cfg.name}", collect_metrics)
        for k in range(1, cfg.rounds + 1):
            parent = model_for_round(run, cfg, k - 1)
            unlabeled = round_problems(splits["unlabeled"], cfg.unlabeled_per_round, k)
            samples_path, results_path = s.sample_and_execute(k, parent, unlabeled)
            s.stage(k, "select", lambda d: select_stage(unlabeled, read_samples(samples_path)[0],
                                                        read_jsonl(results_path), cfg, d, k))
            if not run.is_done(k, "train"):
                s.pool.close()  # free the engine's memory and processes before training
            s.stage(k, "train", lambda d: train_stage(parent, run.stage_dir(k, "select") / "pairs.jsonl", cfg, d, k))
            run.record_lineage(k, {"model": model_for_round(run, cfg, k), "parent": parent, "reference": parent,
                                   "trained_on": f"round-{k}/select/pairs.jsonl",
                                   "learning_rate": round_learning_rate(cfg, k), "beta": cfg.beta})
            evaluate_round(s, k, f"iterative DPO: {cfg.name}", collect_metrics)
        s.log_table(collect_metrics(run, cfg), "iterative DPO run")
    return run
