"""Execution feedback for rerankers: how a candidate does on the prompt's own examples.

A reward model that reads only the code must notice, say, a ``7`` where the
docstring asked for a ``9``; a tiny model rarely does. Like LEVER (Ni et al.,
2023), an execution-aware reranker also reads what running the candidate
did, here on the examples the prompt's docstring shows (public, part of the
prompt; never the hidden tests). One line is appended to each candidate
before the model reads it::

    # examples: 1/1 passed        every example gave the shown result
    # examples: 0/2 passed        some gave another result
    # examples: error             it crashed, or did not even load
    # examples: timeout
    # examples: none              the prompt shows no checkable example

The same line is made in training (`rerankers.train`) and in scoring
(`rerankers.model.Reranker`); a reranker records in ``reranker.json`` which
feedback it was trained with, so scoring always matches training.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

from codegen.doctests import EXAMPLE_LIMITS, example_tests, prompt_function
from codegen.errors import UserError
from codegen.judging import Judge
from codegen.problems import Problem
from sandbox import DEFAULT_BACKEND

FEEDBACK_KINDS = ("examples", "none")
NO_EXAMPLES = "# examples: none\n"


def check_kind(kind: str) -> str:
    if kind not in FEEDBACK_KINDS:
        raise UserError(f"unknown reranker feedback {kind!r}: use one of {', '.join(FEEDBACK_KINDS)}")
    return kind


def feedback_line(result: dict | None) -> str:
    """The line for one sandbox result on the examples (None: no examples to run)."""
    if result is None:
        return NO_EXAMPLES
    status = result.get("status")
    if status in ("passed", "failed"):
        return f"# examples: {result.get('tests_passed', 0)}/{result.get('tests_total', 0)} passed\n"
    if status == "infra_error":  # a sandbox hiccup says nothing about the candidate
        return NO_EXAMPLES
    return f"# examples: {'timeout' if status == 'timeout' else 'error'}\n"


def example_share(line: str) -> float:
    """The share of examples a feedback line says passed; -1 for a crash or timeout, 0 for none.

    >>> [example_share(x) for x in ("# examples: 1/2 passed\\n", "# examples: error\\n", NO_EXAMPLES)]
    [0.5, -1.0, 0.0]
    """
    body = line.removeprefix("# examples: ").strip()
    if body.endswith(" passed"):
        passed, total = body.removesuffix(" passed").split("/")
        return int(passed) / max(int(total), 1)
    return 0.0 if line == NO_EXAMPLES else -1.0


def with_feedback(completion: str, line: str) -> str:
    """``completion`` followed by its feedback line, on a line of its own."""
    return completion + ("" if completion.endswith("\n") or not completion else "\n") + line


class ExampleRunner:
    """Runs candidates on their prompts' docstring examples through a `codegen.judging.Judge`.

    The judge's sandbox starts on first use and is reused until `close`;
    verdicts go through the verdict cache like any other, so a candidate seen
    in training and again in scoring runs once. ``judge``: a running judge to
    share (e.g. an RL run's, whose rewards use the same sandbox); `close` then
    leaves it to its owner. ``options``: the backend's own options for a judge
    made here (``sandbox.backend_options``, e.g. a Ray cluster's address).
    """

    def __init__(self, backend: str = DEFAULT_BACKEND, workers: int | None = None, *, judge: Judge | None = None,
                 options: dict | None = None):
        self.owns_judge = judge is None
        self.judge = Judge(backend, workers, options=options) if judge is None else judge

    def lines(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        """One feedback line per (prompt, completion)."""
        problems: dict[str, Problem | None] = {}
        pairs, where = [], []
        for i, (prompt, completion) in enumerate(zip(prompts, completions)):
            task_id = "examples/" + hashlib.sha256(prompt.encode()).hexdigest()[:16]
            if task_id not in problems:
                tests = example_tests(prompt)
                # Examples are only found under a ``def`` in the prompt, so the prompt is code the
                # completion continues (HumanEval style): it is the program's prefix.
                problems[task_id] = (Problem(task_id, prompt, tests, prompt_function(prompt), code_prefix=prompt)
                                     if tests else None)
            if problems[task_id] is not None:
                pairs.append((problems[task_id], completion))
                where.append(i)
        out = [NO_EXAMPLES] * len(prompts)
        if pairs:
            for i, result in zip(where, self.judge.run_pairs(pairs, EXAMPLE_LIMITS)):
                out[i] = feedback_line(result)
        return out

    def close(self) -> None:
        if self.owns_judge:
            self.judge.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
