"""Best-of-n: from n candidates of one problem to the answer.

Each candidate has a key, higher is better, and
the top one is the answer. A key is a score (a trained reranker's, the
sampler's mean log-probability, a seeded random number) or a tuple compared
in order; `verdict_key` builds the one the server uses when a request
carries tests: passed first, then the share of tests passed, then the score.
A tie goes to the earlier candidate (generation order), so a rerun picks the
same answer. A missing or NaN score ranks below every real one.

`itercode eval --rerank` (`rerankers.report`), the server
(`codegen.app.server.ranking`) and iterative decoding (`codegen.decoding.iterative`,
which keeps its best-so-far with these keys) all choose here.

>>> best_index([1.0, 3.0, 3.0, 2.0])
1
>>> best_first(["a", "b", "c"], [verdict_key(-0.1, {"passed": False}), verdict_key(-3.0, {"passed": True}),
...                              verdict_key(float("nan"))])
['b', 'a', 'c']
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence, TypeVar

from codegen.rewards import passed, share_of_tests_passed

T = TypeVar("T")


def _comparable(key: Any) -> Any:
    """A key that sorts: None and NaN become -inf (they rank last), anything else stays."""
    if key is None or (isinstance(key, float) and math.isnan(key)):
        return -math.inf
    return key


def ranking(keys: Sequence[Any]) -> list[int]:
    """Candidate indices, best first: higher keys first, ties in candidate order."""
    keys = [_comparable(k) for k in keys]
    # sorted() is stable with reverse=True too: equal keys keep their order.
    return sorted(range(len(keys)), key=keys.__getitem__, reverse=True)


def best_index(keys: Sequence[Any]) -> int:
    """Index of the best candidate (the first one of a tie)."""
    if not keys:
        raise ValueError("best-of-n needs at least one candidate")
    return ranking(keys)[0]


def best_first(candidates: Sequence[T], keys: Sequence[Any]) -> list[T]:
    """``candidates`` ordered best first by ``keys`` (one key per candidate)."""
    if len(keys) != len(candidates):
        raise ValueError(f"{len(candidates)} candidates but {len(keys)} keys: one key per candidate")
    return [candidates[i] for i in ranking(keys)]


def verdict_key(score: float | None, verdict: Mapping[str, Any] | None = None) -> tuple:
    """Passed its tests, then the share of them passed, then ``score``; no verdict counts as no pass."""
    if verdict is None:
        return (False, 0.0, _comparable(score))
    return (passed(verdict), share_of_tests_passed(verdict), _comparable(score))
