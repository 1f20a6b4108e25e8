"""Hard negatives, as in RewardRanker: learn from the reranker's own mistakes.

After a round, the current reranker scores fresh candidates; the failing ones
it ranks highest are the mistakes that cost reranked pass@1. Each becomes a
pair with a passing candidate of the same problem (the passing ones the
reranker likes least first), and those pairs join the next round's training
data. `train_rounds` runs R such rounds; round 1 is plain training.

By default each round retrains from the base model on all pairs so far, so a
later round never forgets what an earlier one learned and rounds compare
cleanly. ``warm_start=True`` is the cheaper variant: round r continues from
round r-1's weights on its hard-negative pairs plus as many replayed earlier
pairs (replay keeps the old pairs from being forgotten).
"""
from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from codegen.errors import UserError
from codegen.io import TMP_PREFIX, replace_dir
from codegen.problems import Problem
from codegen.samples import Sample
from rerankers.data import Pair, build_pairs, refuse_heldout, split_by_verdict
from rerankers.model import Reranker
from rerankers.train import TrainConfig, TrainResult, train_reranker


@dataclass
class RoundResult:
    round: int
    path: Path
    seconds: float
    pairs: int
    hard_negative_pairs: int
    stats: dict = field(default_factory=dict)


def mine_hard_negatives(
    reranker,
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    results: Sequence[dict],
    *,
    negatives_per_problem: int = 4,
    positives_per_negative: int = 2,
    only_above_positive: bool = True,
    use_references: bool = True,
    forbidden_task_ids=(),
    positive_pool: tuple[Sequence[Sample], Sequence[dict]] | None = None,
) -> list[Pair]:
    """Pairs built from the failing candidates ``reranker`` scores highest.

    For each problem: score every (deduplicated, infra-error-masked)
    candidate; take up to ``negatives_per_problem`` failing ones in score
    order; with ``only_above_positive``, only those scored above the
    lowest-scored positive count (a negative below every positive is already
    ranked right). Each is paired with up to ``positives_per_negative``
    passing candidates, lowest-scored first. A problem's reference solution
    serves as a positive when no sample passed (``use_references``).
    ``positive_pool``: (samples, results) whose passing candidates serve as
    positives too (e.g. earlier rounds' samples, so a problem the newest
    policy never solved still pairs its hard negatives); negatives come from
    ``samples`` alone.
    """
    by_task = {p.task_id: p for p in problems}
    refuse_heldout(by_task.values(), {s.task_id for s in samples}, forbidden_task_ids)
    groups = split_by_verdict(samples, results)
    pooled: dict[str, list[Sample]] = {}
    if positive_pool is not None:
        refuse_heldout(by_task.values(), {s.task_id for s in positive_pool[0]}, forbidden_task_ids)
        pooled = {t: passing for t, (passing, _) in split_by_verdict(*positive_pool).items()}
    items = []
    for task_id in sorted(groups):
        passing, failing = groups[task_id]
        problem = by_task.get(task_id)
        if problem is None:
            raise UserError(f"samples of {task_id} match no given problem; pass the problems they were drawn from")
        pos = [(s.sample_id, s.completion) for s in passing]
        texts = {c.rstrip() for _, c in pos}
        for s in pooled.get(task_id, []):
            if s.completion.rstrip() not in texts:
                texts.add(s.completion.rstrip())
                pos.append((s.sample_id, s.completion))
        if not pos and use_references and problem.canonical_solution:
            pos = [(f"{task_id}#reference", problem.canonical_solution)]
        if not pos or not failing:
            continue
        neg = [(s.sample_id, s.completion) for s in failing]
        items.append((problem, pos, neg))
    if not items:
        return []
    scored = reranker.score_problems([(p, [c for _, c in pos + neg]) for p, pos, neg in items])
    pairs: list[Pair] = []
    for (problem, pos, neg), scores in zip(items, scored):
        pos_scores, neg_scores = scores[: len(pos)], scores[len(pos) :]
        pos_order = sorted(range(len(pos)), key=lambda i: pos_scores[i])  # hardest positive first
        neg_order = sorted(range(len(neg)), key=lambda j: -neg_scores[j])  # hardest negative first
        floor = pos_scores[pos_order[0]]
        for j in neg_order[:negatives_per_problem]:
            if only_above_positive and neg_scores[j] < floor:
                break
            for i in pos_order[:positives_per_negative]:
                pid, ptext = pos[i]
                nid, ntext = neg[j]
                pairs.append(Pair(problem.task_id, problem.prompt, ptext, ntext, pid, nid, "hard_negative"))
    return pairs


def _copy_round(previous: Path, target: Path, r: int) -> Path:
    """``previous`` copied as round ``r`` (a round that had nothing new to learn)."""
    shutil.copytree(previous, target)
    meta_path = target / "reranker.json"
    meta = json.loads(meta_path.read_text())
    meta.update(round=r, hard_negative_pairs=0, copied_from_round=r - 1)
    meta_path.write_text(json.dumps(meta, indent=1))
    return target


def train_rounds(
    problems: Sequence[Problem],
    candidate_sets: Sequence[tuple[Sequence[Sample], Sequence[dict]]],
    base: str,
    out_dir: str | Path,
    *,
    rounds: int = 1,
    config: TrainConfig | None = None,
    max_pairs_per_problem: int = 16,
    use_references: bool = True,
    negatives_per_problem: int = 4,
    positives_per_negative: int = 2,
    seed: int = 0,
    forbidden_task_ids=(),
    on_round=None,
    warm_start: bool = False,
) -> list[RoundResult]:
    """Round 1 trains on pairs from ``candidate_sets[0]``; each later round adds hard negatives.

    Round r (r >= 2) mines with round r-1's reranker on ``candidate_sets[r-1]``
    (fresh candidates, e.g. from a newer policy), or on the last set given
    when there are fewer sets than rounds. The final reranker is written to
    ``out_dir``; earlier rounds to ``out_dir/rounds/round-<k>``.
    ``on_round(RoundResult)`` is called after each round (e.g. to evaluate it).
    """
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    if not candidate_sets:
        raise UserError("no candidates to train on: pass --samples and --results")
    # Refuse held-out candidates in any set now, not after hours of earlier rounds.
    for set_samples, _ in candidate_sets:
        refuse_heldout(problems, {s.task_id for s in set_samples}, forbidden_task_ids)
    config = config or TrainConfig()
    out = Path(out_dir)
    stage = out.parent / f"{TMP_PREFIX}{out.name}.rounds-{os.getpid()}"
    stage.mkdir(parents=True, exist_ok=True)
    samples0, results0 = candidate_sets[0]
    pairs = build_pairs(problems, samples0, results0, max_pairs_per_problem=max_pairs_per_problem,
                        use_references=use_references, seed=seed, forbidden_task_ids=forbidden_task_ids)
    out_rounds: list[RoundResult] = []
    try:
        hard: list[Pair] = []
        for r in range(1, rounds + 1):
            warm = warm_start and r > 1  # continue from the previous round rather than the base
            replay: list[Pair] = []
            if r > 1:
                fresh_samples, fresh_results = candidate_sets[min(r - 1, len(candidate_sets) - 1)]
                previous = Reranker.load(out_rounds[-1].path)
                try:
                    hard = mine_hard_negatives(
                        previous, problems, fresh_samples, fresh_results,
                        negatives_per_problem=negatives_per_problem, positives_per_negative=positives_per_negative,
                        use_references=use_references, forbidden_task_ids=forbidden_task_ids,
                    )
                finally:
                    previous.close()
                if warm:
                    replay = random.Random(seed + r).sample(pairs, min(len(pairs), len(hard)))
                pairs = pairs + hard
            if warm and not hard:
                # Nothing new to learn: this round's reranker is the previous one.
                path = _copy_round(out_rounds[-1].path, stage / f"round-{r}", r)
                seconds, stats = 0.0, dict(out_rounds[-1].stats)
            else:
                result: TrainResult = train_reranker(
                    hard + replay if warm else pairs, str(out_rounds[-1].path) if warm else base,
                    stage / f"round-{r}", config,
                    extra_meta={"round": r, "rounds": rounds, "hard_negative_pairs": len(hard),
                                "warm_start": warm, "base_model": str(base)},
                )
                path, seconds, stats = result.path, result.seconds, result.stats
            rr = RoundResult(r, path, seconds, len(pairs), len(hard), stats)
            out_rounds.append(rr)
            if on_round is not None:
                on_round(rr)
        # Assemble: the last round is the reranker; earlier rounds sit beside it under rounds/.
        final = out_rounds[-1].path
        if rounds > 1:
            (final / "rounds").mkdir()
            for rr in out_rounds[:-1]:
                target = final / "rounds" / rr.path.name
                rr.path.rename(target)  # a move inside the unpublished staging dir; replace_dir publishes it
                rr.path = out / "rounds" / rr.path.name
        meta_path = final / "reranker.json"
        meta = json.loads(meta_path.read_text())
        meta["round_history"] = [
            {"round": rr.round, "seconds": round(rr.seconds, 2), "pairs": rr.pairs,
             "hard_negative_pairs": rr.hard_negative_pairs, "final_accuracy": rr.stats.get("final_accuracy")}
            for rr in out_rounds
        ]
        meta_path.write_text(json.dumps(meta, indent=1))
        replace_dir(final, out)
        out_rounds[-1].path = out
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out_rounds
