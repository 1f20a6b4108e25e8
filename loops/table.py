"""The per-round table of a run (from its metrics.jsonl); the plot is in loops.plot.

Metric rows use plain keys: ``round``, ``heldout_pass@K`` for each K,
``reference_pass@1``, ``learned_pass@1`` (problems earlier rounds trained on),
``sampled_pass_rate`` (share of this round's samples that passed),
``kept``/``replay`` (self-generated / reference training examples) and
``train_loss``. A missing value prints as "-".
"""
from __future__ import annotations

import re
from typing import Any


def heldout_ks(rows: list[dict[str, Any]]) -> list[int]:
    ks = {int(m.group(1)) for r in rows for key in r if (m := re.fullmatch(r"heldout_pass@(\d+)", key))}
    return sorted(ks)


def _fmt(value: Any, pct: bool) -> str:
    if value is None:
        return "-"
    if pct and isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(rows: list[dict[str, Any]], title: str | None = None) -> str:
    """A fixed-width text table, one line per round; pass rates in percent.

    >>> print(format_table([{"round": 0, "heldout_pass@1": 0.1}]))   # doctest: +NORMALIZE_WHITESPACE
    round  heldout pass@1
    0      10.0
    """
    columns: list[tuple[str, str, bool]] = [("round", "round", False)]
    columns += [(f"heldout_pass@{k}", f"heldout pass@{k}", True) for k in heldout_ks(rows)]
    optional = [
        ("reference_pass@1", "reference pass@1", True),
        ("learned_pass@1", "learned pass@1", True),
        ("learned_problems", "learned", False),
        ("sampled_pass_rate", "sampled pass%", True),
        ("kept", "kept", False),
        ("replay", "replay", False),
        ("train_loss", "train loss", False),
    ]
    columns += [c for c in optional if any(r.get(c[0]) is not None for r in rows)]
    cells = [[header for _, header, _ in columns]]
    for r in sorted(rows, key=lambda r: r["round"]):
        cells.append([_fmt(r.get(key), pct) for key, _, pct in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    if title:
        lines.insert(0, title)
    return "\n".join(lines)
