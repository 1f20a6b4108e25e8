"""The pickers every reranker is compared against.

- `random_scores`: a seeded random order; its expected pick rate is plain
  pass@1, so a reranker must beat it to be worth running.
- `mean_logprob_scores`: the sampler's own confidence (mean token
  log-probability), the usual free baseline for best-of-n selection.

Both return one float per candidate, higher is better, like `Reranker.score`.
"""
from __future__ import annotations

import hashlib
import math
import random
from typing import Sequence

from codegen.problems import Problem
from codegen.samples import Sample


def random_scores(problem: Problem, candidates: Sequence[str], seed: int = 0) -> list[float]:
    """Uniform random scores, reproducible per (problem, seed).

    >>> p = Problem("t/0", "", "", "f")
    >>> random_scores(p, ["a", "b"]) == random_scores(p, ["a", "b"])
    True
    """
    digest = hashlib.sha256(f"{seed}:{problem.task_id}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    return [rng.random() for _ in candidates]


def mean_logprob_scores(samples: Sequence[Sample]) -> list[float]:
    """Each sample's mean token log-probability; a sample without one ranks last.

    >>> mean_logprob_scores([Sample("t", "a", mean_logprob=-0.5), Sample("t", "b")])
    [-0.5, -inf]
    """
    return [
        float(s.mean_logprob) if s.mean_logprob is not None and not math.isnan(s.mean_logprob) else -math.inf
        for s in samples
    ]
