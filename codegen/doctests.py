"""The examples a prompt shows in its docstring, as tests the sandbox can run.

HumanEval-style prompts (and the synthetic family's) show calls with their
expected results: a line ``>>> add([1, 2])`` and under it the line ``3``.
Those examples are public: they are part of the prompt a model sees, unlike
the hidden tests that grade it. Running a candidate on them is fair at
inference time, which makes them useful to rerankers (`rerankers.feedback`)
and to callers who want a cheap check before trusting a program.

Only one-line calls of the prompt's own function with a one-line expected
value are taken; other doctest forms (printed output, exceptions,
multi-line values) are skipped rather than guessed at.
"""
from __future__ import annotations

import ast
import re

from sandbox.base import Limits

# The limits of a run on the examples (a reranker's feedback, iterative decoding's
# verifier): tiny calls, so a short timeout keeps a looping candidate from stalling
# scoring or a round. A reranker reads "# examples: timeout", so it stays fixed.
EXAMPLE_LIMITS = Limits(timeout_s=2.0)
# ">>> name(args)" then, on the next line, the expected value.
EXAMPLE = re.compile(r"^[ \t]*>>> (\w+)\((.*)\)[ \t]*\n[ \t]*(\S.*?)[ \t]*$", re.M)
DEF = re.compile(r"^def (\w+)\(", re.M)


def prompt_function(prompt: str) -> str | None:
    """The function a prompt asks for: its last top-level ``def`` (None if it has none).

    >>> prompt_function('import math\\ndef helper(x):\\n    pass\\ndef target(xs):\\n    \"\"\"doc\"\"\"\\n')
    'target'
    """
    names = DEF.findall(prompt)
    return names[-1] if names else None


def docstring_examples(prompt: str, entry_point: str | None = None) -> list[tuple[str, str]]:
    """(call, expected) source pairs for the examples of ``entry_point`` (default: the prompt's function).

    >>> docstring_examples('def f(x):\\n    \"\"\"\\n    >>> f([1, 2])\\n    3\\n    \"\"\"\\n')
    [('f([1, 2])', '3')]
    """
    entry_point = entry_point or prompt_function(prompt)
    examples = []
    for name, args, expected in EXAMPLE.findall(prompt):
        if name != entry_point or expected.startswith(('"""', "'''", ">>>")):
            continue
        call = f"{name}({args})"
        try:  # both sides must be Python expressions, or the example is not one we can check
            ast.parse(call, mode="eval")
            ast.parse(expected, mode="eval")
        except SyntaxError:
            continue
        examples.append((call, expected))
    return examples


def example_tests(prompt: str, entry_point: str | None = None) -> str | None:
    """Tests from the docstring's examples, one top-level assert each (None without examples).

    Top-level asserts, not a ``check`` function: the sandbox counts each one
    as a test, so a verdict says how many of the examples a candidate gets right.

    >>> print(example_tests('def f(x):\\n    \"\"\"\\n    >>> f([1, 2])\\n    3\\n    \"\"\"\\n'))
    assert f([1, 2]) == 3
    <BLANKLINE>
    """
    examples = docstring_examples(prompt, entry_point)
    if not examples:
        return None
    return "".join(f"assert {call} == {expected}\n" for call, expected in examples)
