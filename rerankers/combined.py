"""The reranker's score with the policy's own confidence (LEVER), and the reranker's pairwise accuracy.

LEVER (Ni et al., 2023) ranks a candidate by the verifier's probability times
the generator's; in log space that is a sum. Here the ranking key is

    score + w * mean_logprob

``score`` is the reranker's logit, ``mean_logprob`` the policy's mean token
log-probability of the candidate (the sampler records it). ``w`` is chosen
on validation candidates (`choose_logprob_weight`: the grid point with the
best reranked pass@1, the smallest such one on a tie, so ``w = 0``, the plain
reranker, wins every tie) and stored in the reranker directory's
``reranker.json`` (`record_logprob_weight`), where `itercode eval --rerank`
and the RewardRanker loop read it. A weight on a reranker that another
policy's candidates were scored with is only a starting point: choose it again
on the validation candidates of the policy being reranked.

`pairwise_accuracy` is the share of a problem's (passing, failing) candidate
pairs the reranker orders right, over problems it has not trained on: the
reward model's own figure, before any pick.

Light module (no torch).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from codegen.decoding import best_index
from codegen.errors import UserError
from codegen.io import write_json_atomic
from codegen.samples import Sample
from rerankers.model import META_FILE

# Candidate weights on the policy's mean log-prob (0: the reranker alone). Reranker logits of the tiny
# models here span a few units and mean log-probs about -0.1 to -2, so the grid reaches from a tie-break
# to the log-prob dominating.
DEFAULT_LOGPROB_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)


def combined_scores(scores: Sequence[float], samples: Sequence[Sample], weight: float) -> list[float]:
    """``score + weight * mean_logprob`` per candidate; a candidate without a log-prob ranks last when
    ``weight > 0``, and ``weight == 0`` is the reranker's score alone.

    >>> combined_scores([1.0, 0.5], [Sample("t", "a", mean_logprob=-2.0), Sample("t", "b", mean_logprob=-0.1)], 0.5)
    [0.0, 0.45]
    """
    if len(scores) != len(samples):
        raise ValueError(f"{len(scores)} scores for {len(samples)} candidates: one score per candidate")
    if weight == 0:
        return [float(s) for s in scores]
    out = []
    for score, sample in zip(scores, samples):
        lp = sample.mean_logprob
        out.append(-math.inf if lp is None or math.isnan(lp) else float(score) + weight * float(lp))
    return out


def pick_rate_of(groups: Sequence[tuple[Any, Sequence[Sample], Sequence[bool]]],
                 keys: Mapping[str, Sequence[Any]]) -> float:
    """Share of problems whose best-keyed candidate passed (``keys`` by task id, in candidate order)."""
    if not groups:
        return 0.0
    return sum(passed[best_index(keys[p.task_id])] for p, _, passed in groups) / len(groups)


def choose_logprob_weight(groups: Sequence[tuple[Any, Sequence[Sample], Sequence[bool]]],
                          scores: Mapping[str, Sequence[float]],
                          weights: Sequence[float] = DEFAULT_LOGPROB_WEIGHTS) -> tuple[float, dict[str, float]]:
    """The weight of ``weights`` whose combined ranking picks the most passing candidates of ``groups``
    (validation candidates: `rerankers.report.group_candidates`), and the pick rate of each.

    A tie goes to the smallest weight: the log-prob earns its place only by picking better.
    Without any log-prob in the candidates the answer is 0.
    """
    if not weights or any(w < 0 or math.isnan(w) for w in weights):
        raise UserError(f"logprob weights must be a non-empty list of numbers >= 0, got {list(weights)}; "
                        "e.g. [0, 0.5, 1, 2]")
    if not any(s.mean_logprob is not None for _, ss, _ in groups for s in ss):
        return 0.0, {"0": pick_rate_of(groups, scores)}
    rates = {}
    for w in sorted(set(float(w) for w in weights)):
        keyed = {p.task_id: combined_scores(scores[p.task_id], ss, w) for p, ss, _ in groups}
        rates[f"{w:g}"] = pick_rate_of(groups, keyed)
    best = max(rates.values())
    chosen = min(float(w) for w, rate in rates.items() if rate == best)
    return chosen, rates


def pairwise_accuracy(groups: Sequence[tuple[Any, Sequence[Sample], Sequence[bool]]],
                      scores: Mapping[str, Sequence[float]],
                      statuses: Mapping[str, str] | None = None) -> dict[str, Any]:
    """How often the reranker scores a passing candidate above a failing one of the same problem.

    Every (passing, failing) pair of distinct programs (text after stripping
    trailing whitespace, first occurrence kept) of each problem counts once; a
    tie counts half. ``statuses`` (sample id -> verdict status) leaves host
    ``infra_error`` candidates out, as training does. Returns ``accuracy``
    (None without any pair), ``pairs`` and ``problems`` (those with a pair).

    >>> from codegen.problems import Problem
    >>> p = Problem("t", "", "", "f")
    >>> ss = [Sample("t", "a"), Sample("t", "b"), Sample("t", "c")]
    >>> pairwise_accuracy([(p, ss, [True, False, False])], {"t": [0.5, 0.1, 0.9]})
    {'accuracy': 0.5, 'pairs': 2, 'problems': 1}
    """
    right, total, problems = 0.0, 0, 0
    for problem, samples, passed in groups:
        seen: dict[str, tuple[float, bool]] = {}
        for sample, score, ok in zip(samples, scores[problem.task_id], passed):
            if statuses is not None and statuses.get(sample.sample_id) == "infra_error":
                continue
            seen.setdefault(sample.completion.rstrip(), (float(score), bool(ok)))
        good = [s for s, ok in seen.values() if ok]
        bad = [s for s, ok in seen.values() if not ok]
        if good and bad:
            problems += 1
            total += len(good) * len(bad)
            right += sum(1.0 if g > b else 0.5 if g == b else 0.0 for g in good for b in bad)
    return {"accuracy": right / total if total else None, "pairs": total, "problems": problems}


def record_logprob_weight(reranker_dir: str | Path, weight: float, chosen_on: dict[str, Any]) -> dict[str, Any]:
    """Write ``logprob_weight`` (and how it was chosen) into the reranker's ``reranker.json``, atomically.

    Rewriting with the same figures is harmless, so a redone stage may call it again.
    """
    path = Path(reranker_dir) / META_FILE
    if not path.exists():
        raise UserError(f"{path} does not exist: {reranker_dir} is not a reranker written by `itercode reranker train`")
    meta = json.loads(path.read_text())
    meta["logprob_weight"] = float(weight)
    meta["logprob_weight_chosen_on"] = chosen_on
    write_json_atomic(path, meta)
    return meta
