"""Choosing the answer: score candidates, run the request's tests, order them.

The order is: candidates that pass the request's tests first (when it carries
tests), then more of the tests passed, then the scorer's score (a trained
reranker, or the candidate's mean token log-probability), then generation
order. Scoring and sandbox runs are blocking calls (torch, subprocesses), so
they run in worker threads and never stall the event loop that feeds the
engine.
"""
from __future__ import annotations

import asyncio
import math
import re
import threading
from dataclasses import dataclass
from typing import Any

from codegen.decoding import best_first, verdict_key
from codegen.judging import Judge
from codegen.problems import Problem
from rerankers import Reranker
from sandbox import DEFAULT_BACKEND
from sandbox.base import Limits


@dataclass
class Candidate:
    index: int  # order of generation
    text: str  # what the model wrote
    code: str  # what the sandbox runs after the problem's prefix (chat: the fenced block)
    mean_logprob: float | None
    num_tokens: int
    finish_reason: str
    score: float | None = None
    verdict: dict[str, Any] | None = None
    rank: int = -1
    round: int = 0  # iterative decoding's round (0 for best-of-n)
    check: dict[str, Any] | None = None  # iterative decoding's verifier check (`codegen.decoding.Check.to_dict`)


def extract_code(text: str) -> str:
    """The first fenced code block of a chat answer, or the whole answer.

    >>> extract_code("Here:\\n```python\\ndef f():\\n    return 1\\n```\\nDone.")
    'def f():\\n    return 1\\n'
    >>> extract_code("def f(): pass")
    'def f(): pass'
    """
    m = re.search(r"```[A-Za-z0-9_+-]*[ \t]*\n(.*?)```", text, re.S)
    return m.group(1) if m else text


def order(candidates: list[Candidate]) -> list[Candidate]:
    """Sort best first (best-of-n, `codegen.decoding`) and set each candidate's ``rank``.

    >>> a = Candidate(0, "a", "a", -0.1, 1, "stop", score=-0.1, verdict={"passed": False, "tests_passed": 0, "tests_total": 1})
    >>> b = Candidate(1, "b", "b", -3.0, 1, "stop", score=-3.0, verdict={"passed": True, "tests_passed": 1, "tests_total": 1})
    >>> [c.index for c in order([a, b])]
    [1, 0]
    """

    in_generation_order = sorted(candidates, key=lambda c: c.index)  # ties go to the earlier candidate
    ranked = best_first(in_generation_order, [verdict_key(c.score, c.verdict) for c in in_generation_order])
    for r, c in enumerate(ranked):
        c.rank = r
    return ranked


class LogprobScorer:
    """The baseline every report compares against: mean token log-probability."""

    name = "mean_logprob"

    async def score(self, problem: Problem, candidates: list[Candidate]) -> list[float]:
        return [c.mean_logprob if c.mean_logprob is not None else -math.inf for c in candidates]


class RerankerScorer:
    """A trained reranker (`rerankers.Reranker`), called one batch at a time."""

    def __init__(self, path: str, sandbox: str | None = None, sandbox_workers: int | None = None,
                 judge: Judge | None = None):
        self.name = f"reranker:{path}"
        # The examples get a judge of their own unless given one (`for_server`): their limits
        # differ, and a Docker pool restarts its containers whenever the limits change.
        self.reranker = Reranker.load(path, sandbox=sandbox, sandbox_workers=sandbox_workers, judge=judge)
        if self.reranker.examples is not None:  # a sandbox that cannot run fails at start-up
            self.reranker.examples.judge.start()
        self._lock = threading.Lock()  # one forward pass at a time on the shared model

    def _score(self, problem: Problem, texts: list[str]) -> list[float]:
        with self._lock:
            return [float(s) for s in self.reranker.score(problem, texts)]

    async def score(self, problem: Problem, candidates: list[Candidate]) -> list[float]:
        scores = await asyncio.to_thread(self._score, problem, [c.text for c in candidates])
        if len(scores) != len(candidates):
            raise RuntimeError(f"the reranker returned {len(scores)} scores for {len(candidates)} candidates")
        return scores

    def close(self) -> None:
        """Stop the sandbox a reranker with example feedback runs candidates in."""
        with self._lock:
            self.reranker.close()


class TestRunner:
    """Runs request-carried tests through a `codegen.judging.Judge` (cache and infra retry included)."""

    def __init__(self, backend: str = DEFAULT_BACKEND, workers: int | None = None,
                 timeout_s: float = Limits.timeout_s, memory_mb: int = Limits.memory_mb, options: dict | None = None):
        self.judge = Judge(backend, workers, options=options)
        self.limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb)

    @classmethod
    def for_config(cls, config) -> "TestRunner":
        """The runner a `ServerConfig` asks for (``--sandbox``, ``--sandbox-workers``, ``--sandbox-timeout``)."""
        return cls(config.sandbox, workers=config.sandbox_workers, timeout_s=config.sandbox_timeout_s,
                   memory_mb=config.sandbox_memory_mb, options=config.sandbox_options())

    def start(self) -> None:
        """Start the sandbox now, so that a backend that cannot run fails at start-up, not on a request."""
        self.judge.start()

    async def run(self, problem: Problem, candidates: list[Candidate]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self.judge.run_pairs, [(problem, c.code) for c in candidates], self.limits)

    def close(self) -> None:
        self.judge.close()
