"""The feedback format: what a refinement round shows the model.

A round after the first shows the best and the worst candidate so far (the
worst only when it differs from the best), each with its verdict line
(`codegen.decoding.verifiers.Check.line`) and, when one of the public
examples failed, the call, the expected value and what came back. For a
base code model the feedback is code comments before the prompt, so the
model still continues the function::

    # Earlier attempts at nonmultiple_add_min, with what the checks said.
    # Best so far (examples: 0/1 passed):
    #   nonmultiple_add_min([0, 4]) should be 8, got 4
    # |     xs = [x for x in xs if x % 5 != 0]
    # |     return min(xs) if xs else 0
    # Worst so far (examples: error):
    #   NameError: name 'ys' is not defined
    # |     return min(ys)
    # Write a version that passes every check.
    def nonmultiple_add_min(xs):
        \"\"\"(the prompt's docstring, its example included)\"\"\"

A chat model gets the same facts in prose through its chat template
(`chat_feedback`): the instruction and the function in a code block, then
the attempts, each in a code block of its own; its answer is started with
an opened code block that repeats the prompt (`codegen.samplers.chat`), so
its completion has the same shape in every round.

When the prompt with feedback leaves the model too little room for its
answer, the feedback shrinks step by step (`SHORTER`): the worst attempt
goes first, then lines of the best one's code; its verdict line and failing
example stay to the last, and only then does the round use the plain prompt.

The completion a round writes continues the original prompt: the program
the sandbox runs is ``problem.program(completion)``, without the feedback.
The repair examples the ITERTL loop trains on (`loops.itertl.repair_rows`)
are built with `base_feedback` too, so the model trains on exactly this text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from codegen.decoding.verifiers import Check

MAX_ATTEMPT_LINES = 12  # lines of an attempt shown; a long one is cut (the prompt must fit the context)
MAX_LINE_CHARS = 100


@dataclass
class Attempt:
    """A candidate as feedback shows it: the completion and its check."""

    completion: str
    check: Check


def _shown_lines(completion: str, max_lines: int) -> list[str]:
    lines = [line.rstrip()[:MAX_LINE_CHARS] for line in completion.rstrip().splitlines()]
    lines = [line for line in lines if line.strip()] or ["(empty)"]
    if len(lines) > max_lines:
        lines = lines[:max_lines] + ["..."]
    return lines


def _shown_attempts(best: Attempt, worst: Attempt | None, max_lines: int, title: str, failure: str,
                    code: Callable[[list[str]], list[str]]) -> list[str]:
    """The best attempt (and the worst, when it differs), each as lines: ``title`` formatted with the
    attempt's ``name`` and check ``line``, ``failure`` with what failed, then ``code`` of its first lines."""
    shown = [("Best so far", best)]
    if worst is not None and worst.completion != best.completion:
        shown.append(("Worst so far", worst))
    out = []
    for name, attempt in shown:
        out.append(title.format(name=name, line=attempt.check.line))
        if attempt.check.failure:
            out.append(failure.format(attempt.check.failure))
        if max_lines:
            out += code(_shown_lines(attempt.completion, max_lines))
    return out


# What to leave out, in order, when the feedback does not fit the model's context:
# (show the worst attempt, lines of each attempt's code). The verdict lines stay.
SHORTER = ((True, MAX_ATTEMPT_LINES), (False, MAX_ATTEMPT_LINES), (False, 4), (False, 0))


def base_feedback(function: str, best: Attempt, worst: Attempt | None = None,
                  max_lines: int = MAX_ATTEMPT_LINES) -> str:
    """The comment block put before the prompt of a base model (ends with a newline).

    >>> from codegen.decoding.verifiers import Check
    >>> bad = Attempt("    return 4\\n", Check(0, 1, "failed", failure="f(1) should be 2, got 4"))
    >>> print(base_feedback("f", bad), end="")
    # Earlier attempts at f, with what the checks said.
    # Best so far (examples: 0/1 passed):
    #   f(1) should be 2, got 4
    # |     return 4
    # Write a version that passes every check.
    """
    out = [f"# Earlier attempts at {function}, with what the checks said.",
           *_shown_attempts(best, worst, max_lines, "# {name} ({line}):", "#   {}",
                            lambda lines: [f"# | {line}" for line in lines]),
           "# Write a version that passes every check."]
    return "\n".join(out) + "\n"


def chat_feedback(function: str, best: Attempt, worst: Attempt | None = None,
                  max_lines: int = MAX_ATTEMPT_LINES) -> str:
    """The same facts as `base_feedback`, in prose for a chat model's user message."""
    out = [f"Earlier attempts at {function}, with what the checks said:",
           *_shown_attempts(best, worst, max_lines, "\n{name} ({line}):", "- {}",
                            lambda lines: ["```python\n" + "\n".join(lines) + "\n```"]),
           "\nWrite a version that passes every check."]
    return "\n".join(out)
