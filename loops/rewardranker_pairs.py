"""RewardRanker's reranker data: which pairs each iteration's reranker trains on, and who may be in them.

Iteration 1's reranker learns from (passing, failing) pairs of the base
policy's samples; iteration k >= 2's from every earlier pair plus hard
negatives, the failing samples reranker k-1 scores above a passing one
(`rerankers.hard_negatives`). Only unlabeled problems may be in a pair:
`check_reranker_pairs` refuses any other before training (`loops.rewardranker`
drives the loop).
"""
from __future__ import annotations

from typing import Any, Sequence

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from loops.rewardranker_config import RewardRankerConfig
from loops.splits import evaluation_task_ids
from loops.stages import stage_seed
from rerankers.data import HeldOutLeakError, Pair, build_pairs
from rerankers.hard_negatives import mine_hard_negatives


def check_reranker_pairs(pairs: Sequence[Pair], splits: dict[str, Any]) -> None:
    """Refuse reranker pairs (hard negatives included) of an evaluation problem or of any problem
    outside the unlabeled set the loop samples."""
    evaluation = evaluation_task_ids(splits)
    unlabeled = {p.task_id for p in splits["unlabeled"]}
    for pair in pairs:
        if pair.task_id in evaluation:
            raise HeldOutLeakError(f"reranker pair of {pair.task_id!r}, a problem of the {evaluation[pair.task_id]}: "
                                   "evaluation problems never enter a reranker's training data; check unlabeled=")
        if pair.task_id not in unlabeled:
            raise UserError(f"reranker pair of {pair.task_id!r}, which is not an unlabeled problem: the loop trains "
                            "its reranker on unlabeled= alone")


def with_round_ids(samples: Sequence[Sample], results: Sequence[dict], round_: int) -> tuple[list[Sample], list[dict]]:
    """Samples and verdicts with ids unique across rounds (``round-2/<task>#3``): each round's
    sampler numbers its samples from 0, and pools of several rounds are joined by id."""
    prefix = f"round-{round_}/"
    renamed = [Sample(**{**s.to_dict(), "sample_id": prefix + s.sample_id}) for s in samples]
    return renamed, [{**r, "sample_id": prefix + r["sample_id"]} for r in results]


def _pair_key(pair: Pair) -> tuple[str, str, str]:
    return pair.task_id, pair.chosen.rstrip(), pair.rejected.rstrip()


def merge_pairs(*groups: Sequence[Pair]) -> list[Pair]:
    """The pairs of every group in order, a (problem, chosen, rejected) triple once."""
    seen, out = set(), []
    for group in groups:
        for pair in group:
            if _pair_key(pair) not in seen:
                seen.add(_pair_key(pair))
                out.append(pair)
    return out


def reranker_pairs(cfg: RewardRankerConfig, round_: int, unlabeled: Sequence[Problem],
                   candidate_sets: Sequence[tuple[list[Sample], list[dict]]], previous_pairs: Sequence[Pair],
                   previous_reranker: Any, forbidden: Sequence[str]) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """``(all pairs, new sampled pairs, hard-negative pairs)`` reranker ``round_`` trains on.

    ``candidate_sets``: rounds 1..``round_``'s samples and verdicts (ids made
    unique by `with_round_ids`), the last one the newest policy's.
    ``previous_reranker`` (round >= 2): anything with ``score_problems``, the
    reranker the hard negatives are mined with.
    """
    samples, results = candidate_sets[-1]
    seed = stage_seed(cfg, round_, 2)
    new = build_pairs(unlabeled, samples, results, max_pairs_per_problem=cfg.max_pairs_per_problem, seed=seed,
                      forbidden_task_ids=forbidden)
    if round_ == 1:
        return new, new, []
    earlier = [s for ss, _ in candidate_sets[:-1] for s in ss], [r for _, rs in candidate_sets[:-1] for r in rs]
    hard = mine_hard_negatives(previous_reranker, unlabeled, samples, results,
                               negatives_per_problem=cfg.negatives_per_problem,
                               positives_per_negative=cfg.positives_per_negative, forbidden_task_ids=forbidden,
                               positive_pool=earlier)
    fresh = new if cfg.hard_negatives == "with_positives" else []
    return merge_pairs(previous_pairs, fresh, hard), fresh, hard
