"""Problems: the unit of work that samplers answer and sandboxes check.

A `Problem` carries everything the sandbox needs to judge a completion:

- ``prompt``: the text shown to the model.
- ``code_prefix``: the trusted code a completion continues. For HumanEval it is
  the prompt itself (signature + docstring + helpers); for MBPP-style problems,
  whose prompt is prose, it is empty and the completion is a whole program.
- ``tests``: program text that raises on failure. It may define
  ``check(candidate)`` (HumanEval style) or be bare asserts that call
  ``entry_point`` by name (MBPP style).
- ``entry_point``: the function under test.

Loaders live in `codegen.datasets` (HumanEval, MBPP layout, plain JSONL,
``synthetic:SPLIT``); `load_problems(spec)` dispatches on the spec.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Problem:
    task_id: str
    prompt: str
    tests: str
    entry_point: str
    code_prefix: str = ""
    canonical_solution: str | None = None
    language: str = "python"
    meta: dict[str, Any] = field(default_factory=dict)

    def program(self, completion: str) -> str:
        """The full candidate program for ``completion``.

        >>> Problem("t", "def f():\\n", "", "f", code_prefix="def f():\\n").program("    return 1\\n")
        'def f():\\n    return 1\\n'
        """
        return self.code_prefix + completion

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Problem":
        return cls(**d)
