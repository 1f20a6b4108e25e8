"""Verifiers: what iterative decoding (and best-of-n) scores candidates with.

A verifier takes (problem, completion) pairs, batched across problems, and
returns one `Check` each: how many of its checks the candidate passed, a
score, whether the verifier is satisfied (iterative decoding stops early
then), a one-line verdict and, for a failing example, what went wrong. A
check's `Check.key` ranks candidates (`codegen.decoding.bestof`): the share
of checks passed first (an error or timeout below any wrong answer), then
the score.

- ``examples``: the docstring's public examples (`codegen.doctests`), run in
  the sandbox. They are part of the prompt, so using them at inference time
  is fair. A failing example reports its call, the expected value and what
  came back (the value, or the exception it raised) as plain data from the
  sandbox. Satisfied when every example passes.
- ``reranker``: a score function (a trained reranker's; this layer does not
  load one, the application layer passes `Reranker.score_problems`). Never
  satisfied: a reward model's score has no calibrated "good enough".
- ``examples+reranker``: examples first, the reranker's score breaks ties.
- ``noisy:P`` (``noisy:P:BASE``): another verifier (default examples+reranker)
  whose outcome is flipped for a share P of the candidates, seeded per
  (seed, task, completion): a pass reads as a fail and back, the score changes
  sign. It measures how IAD degrades with verifier quality.
- ``oracle``: the hidden tests. They grade the answer, so a run that uses
  them says nothing about deployment: every check it makes carries
  ``analysis_only`` and every output that uses it says so.

`make_verifier(spec, judge=..., score_fn=...)` builds one from its name.

>>> Check(passed=0, total=1, status="failed", failure="f(1) should be 2, got 3").line
'examples: 0/1 passed'
>>> Check(passed=1, total=1, status="passed", score=0.25).key > Check(passed=0, total=1, status="failed", score=9.0).key
True
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import random
import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from codegen.doctests import EXAMPLE_LIMITS, docstring_examples
from codegen.errors import UserError
from codegen.judging import Judge
from codegen.problems import Problem
from sandbox.base import Limits

VERIFIERS = ("examples", "reranker", "examples+reranker", "noisy:P", "oracle")
DEFAULT_NOISY_BASE = "examples+reranker"
MAX_SHOWN = 160  # characters of a returned value or an error message that feedback shows

ScoreFn = Callable[[Sequence[tuple[Problem, str]]], list[float]]


@dataclass
class Check:
    """One candidate's verdict from a verifier.

    ``passed``/``total``: checks passed of those run (examples or hidden
    tests); None when the verifier runs none (score only) or the problem
    shows no example. ``status``: the sandbox status ("passed", "failed",
    "error", "timeout", "infra_error"), "none" without examples, "scored"
    for a score-only verifier.
    """

    passed: int | None = None
    total: int | None = None
    status: str = "scored"
    score: float | None = None
    failure: str | None = None  # e.g. "f([0, 4]) should be 8, got 9"
    satisfied: bool = False
    label: str = "examples"  # what ran: "examples", "hidden tests" (oracle), "tests" (a request's own)
    analysis_only: bool = False
    flipped: bool = False  # a noisy verifier reported the opposite outcome
    score_name: str = "reranker score"  # what the score is, as the verdict line names it

    @property
    def share(self) -> float | None:
        """The share of checks passed; -1 for an error or timeout; None when none ran."""
        if self.status in ("error", "timeout", "oom"):
            return -1.0
        if not self.total:
            return None
        return (self.passed or 0) / self.total

    @property
    def key(self) -> tuple:
        """Higher is better: the share of checks passed (none run counts 0), then the score."""
        share = self.share
        score = self.score if self.score is not None and not math.isnan(self.score) else -math.inf
        return (0.0 if share is None else share, score)

    @property
    def line(self) -> str:
        """The verdict line feedback shows, e.g. ``examples: 1/2 passed; reranker score 0.31``."""
        parts = []
        if self.status != "scored":
            if self.status in ("passed", "failed"):
                parts.append(f"{self.label}: {self.passed}/{self.total} passed")
            elif self.status == "none":
                parts.append(f"{self.label}: none to run")
            elif self.status == "infra_error":
                parts.append(f"{self.label}: not run (sandbox failure)")
            else:
                parts.append(f"{self.label}: {self.status}")
        if self.score is not None and not math.isnan(self.score):
            parts.append(f"{self.score_name} {self.score:.2f}")
        if self.analysis_only:
            parts.append("oracle, analysis only")
        return "; ".join(parts) or "no verdict"

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["line"] = self.line
        if d["score"] is not None and not math.isfinite(d["score"]):
            d["score"] = None  # JSON has no infinities
        return d


class Verifier(Protocol):
    name: str
    analysis_only: bool

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        """One `Check` per (problem, completion), in order."""
        ...


# ---- sandbox-backed verifiers -----------------------------------------------------------

_CALL_HELPER = (
    "def _itercode_call(i, thunk):\n"
    "    try:\n"
    "        return thunk()\n"
    "    except Exception as e:\n"
    "        raise AssertionError(f'example {i} raised {type(e).__name__}: {e}'[:400]) from None\n"
)
# The judge's message ends with the first failure's "AssertionError: example I returned R" line.
_FAILED = re.compile(r"AssertionError: example (\d+) (returned|raised) (.*)$", re.M)
_OUTPUT_MARK = "--- candidate output ---"


def reporting_example_tests(examples: Sequence[tuple[str, str]]) -> str:
    """Tests from (call, expected) pairs, one top-level assert each, whose failure says what came back.

    >>> print(reporting_example_tests([("f(1)", "2")]).splitlines()[-1])
    assert (_got := _itercode_call(0, lambda: f(1))) == 2, 'example 0 returned ' + repr(_got)[:400]
    """
    asserts = [f"assert (_got := _itercode_call({i}, lambda: {call})) == {expected}, "
               f"'example {i} returned ' + repr(_got)[:400]\n" for i, (call, expected) in enumerate(examples)]
    return _CALL_HELPER + "".join(asserts)


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _message(stderr: str) -> str:
    """The judge's own message: what the candidate printed comes after it and is not trusted."""
    return (stderr or "").split(_OUTPUT_MARK, 1)[0].strip()


def last_error_line(stderr: str) -> str | None:
    """The last line of the judge's message (``NameError: name 'y' is not defined``), or None."""
    lines = [line for line in _message(stderr).splitlines() if line.strip()]
    return _short(lines[-1]) if lines else None


def example_failure(verdict: dict, examples: Sequence[tuple[str, str]]) -> str | None:
    """What a failing verdict on the examples says: the call, the expected value and what came back."""
    status = verdict.get("status")
    if status == "timeout":
        return f"{examples[0][0]} did not return within {EXAMPLE_LIMITS.timeout_s:g} s" if len(examples) == 1 else \
            f"the examples did not finish within {EXAMPLE_LIMITS.timeout_s:g} s"
    if status == "failed":
        found = _FAILED.findall(_message(verdict.get("stderr", "")))
        if found:
            index, kind, what = found[-1]
            call, expected = examples[int(index)]
            return f"{call} should be {expected}, " + ("got " if kind == "returned" else "raised ") + _short(what)
    if status in ("failed", "error", "oom"):
        return last_error_line(verdict.get("stderr", ""))
    return None


class ExamplesVerifier:
    """The docstring's public examples, run through ``judge`` (a `codegen.judging.Judge`)."""

    name = "examples"
    analysis_only = False

    def __init__(self, judge: Judge, limits: Limits = EXAMPLE_LIMITS):
        self.judge, self.limits = judge, limits
        self._suites: dict[str, tuple[Problem, list] | None] = {}

    def _suite(self, problem: Problem) -> tuple[Problem, list] | None:
        if problem.task_id not in self._suites:
            examples = docstring_examples(problem.prompt, problem.entry_point)
            self._suites[problem.task_id] = (dataclasses.replace(problem, tests=reporting_example_tests(examples)),
                                             examples) if examples else None
        return self._suites[problem.task_id]

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        out: list[Check | None] = [None] * len(items)
        pairs, where = [], []
        for i, (problem, completion) in enumerate(items):
            suite = self._suite(problem)
            if suite is None:
                out[i] = Check(status="none")
            else:
                pairs.append((suite[0], completion))
                where.append(i)
        verdicts = self.judge.run_pairs(pairs, self.limits) if pairs else []
        for i, verdict in zip(where, verdicts):
            examples = self._suite(items[i][0])[1]
            passed_ = int(verdict.get("tests_passed") or 0)
            ok = verdict.get("status") == "passed"
            out[i] = Check(passed=passed_ if verdict.get("status") != "infra_error" else None,
                           total=len(examples), status=verdict.get("status", "error"), satisfied=ok,
                           failure=None if ok else example_failure(verdict, examples))
        return out  # type: ignore[return-value]


class TestsVerifier:
    """A problem's own tests (``problem.tests``) through ``judge``.

    As ``oracle`` (the default) these are the hidden tests that grade the
    answer: every check is labelled analysis-only. The server uses the same
    class, not analysis-only, for the tests a request carries (the user's own).
    """

    def __init__(self, judge: Judge, limits: Limits = Limits(), *, oracle: bool = True):
        self.judge, self.limits = judge, limits
        self.analysis_only = oracle
        self.name = "oracle" if oracle else "tests"
        self.label = "hidden tests" if oracle else "tests"

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        verdicts = self.judge.run_pairs(list(items), self.limits) if items else []
        return [check_of_verdict(v, self.label, self.analysis_only) for v in verdicts]


def check_of_verdict(verdict: dict, label: str = "tests", analysis_only: bool = False) -> Check:
    """A `Check` from a verdict dict on a problem's tests (`codegen.judging.verdict_dict`)."""
    ok = verdict.get("status") == "passed"
    return Check(passed=int(verdict.get("tests_passed") or 0), total=int(verdict.get("tests_total") or 0),
                 status=verdict.get("status", "error"), satisfied=ok, label=label, analysis_only=analysis_only,
                 failure=None if ok else last_error_line(verdict.get("stderr", "")))


# ---- score-based and composite verifiers ------------------------------------------------------

class ScoreVerifier:
    """Scores from ``score_fn`` (e.g. a reranker's `score_problems`, flattened); never satisfied."""

    name = "reranker"
    analysis_only = False

    def __init__(self, score_fn: ScoreFn):
        self.score_fn = score_fn

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        scores = self.score_fn(list(items)) if items else []
        if len(scores) != len(items):
            raise RuntimeError(f"the score function returned {len(scores)} scores for {len(items)} candidates")
        return [Check(score=float(s)) for s in scores]


class CombinedVerifier:
    """The examples' verdict with the score function's score beside it (examples first in the key)."""

    analysis_only = False

    def __init__(self, examples: Verifier, scores: Verifier, name: str = "examples+reranker"):
        self.examples, self.scores, self.name = examples, scores, name

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        checks = self.examples.check(items)
        for check, scored in zip(checks, self.scores.check(items)):
            check.score = scored.score
        return checks


class NoisyVerifier:
    """``inner`` with its outcome flipped for a share ``rate`` of candidates (seeded per task and completion)."""

    def __init__(self, inner: Verifier, rate: float, seed: int = 0):
        if not 0 <= rate <= 1:
            raise UserError(f"noisy verifier: the flip rate must be in [0, 1], got {rate}")
        self.inner, self.rate, self.seed = inner, rate, seed
        self.name = f"noisy:{rate:g}:{inner.name}"
        self.analysis_only = inner.analysis_only

    def _flips(self, problem: Problem, completion: str) -> bool:
        digest = hashlib.sha256(f"{self.seed}\0{problem.task_id}\0{completion}".encode()).digest()
        return random.Random(digest).random() < self.rate

    def check(self, items: Sequence[tuple[Problem, str]]) -> list[Check]:
        checks = self.inner.check(items)
        return [flipped(c) if self._flips(p, text) else c for c, (p, text) in zip(checks, items)]


def flipped(check: Check) -> Check:
    """The opposite outcome: all checks pass where some failed (or it crashed) and none where all did."""
    score = -check.score if check.score is not None else None
    if not check.total or check.status in ("none", "scored", "infra_error"):
        return dataclasses.replace(check, score=score, flipped=True)
    ok = not check.satisfied
    return dataclasses.replace(check, passed=check.total if ok else 0, status="passed" if ok else "failed",
                               satisfied=ok, failure=None, score=score, flipped=True)


# ---- by name ------------------------------------------------------------------------------------

def make_verifier(spec: str, *, judge: Judge | None = None, score_fn: ScoreFn | None = None,
                  seed: int = 0) -> Verifier:
    """The verifier ``spec`` names (see the module docstring); ``judge`` runs the sandbox ones.

    >>> make_verifier("noisy:0.2:examples", judge=Judge()).name
    'noisy:0.2:examples'
    """
    if spec.startswith("noisy:"):
        _, _, rest = spec.partition(":")
        rate_text, _, base = rest.partition(":")
        try:
            rate = float(rate_text)
        except ValueError:
            raise UserError(f"--verifier {spec}: write the flip rate as a number, e.g. noisy:0.2") from None
        if base.startswith("noisy") or base == "oracle":
            raise UserError(f"--verifier {spec}: a noisy verifier wraps examples, reranker or examples+reranker")
        return NoisyVerifier(make_verifier(base or DEFAULT_NOISY_BASE, judge=judge, score_fn=score_fn), rate, seed)
    needs_judge = spec in ("examples", "examples+reranker", "oracle")
    needs_scores = spec in ("reranker", "examples+reranker")
    if spec not in ("examples", "reranker", "examples+reranker", "oracle"):
        raise UserError(f"unknown verifier {spec!r}: use one of {', '.join(VERIFIERS)}")
    if needs_judge and judge is None:
        raise ValueError(f"the {spec} verifier runs the sandbox: pass judge=")
    if needs_scores and score_fn is None:
        raise UserError(f"the {spec} verifier needs a reranker: pass --reranker DIR (from `itercode reranker train`)")
    if spec == "examples":
        return ExamplesVerifier(judge)
    if spec == "oracle":
        return TestsVerifier(judge, oracle=True)
    if spec == "reranker":
        return ScoreVerifier(score_fn)
    return CombinedVerifier(ExamplesVerifier(judge), ScoreVerifier(score_fn))
