"""The PNG plot of a run: held-out pass@k per round (matplotlib, Agg backend)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codegen.io import atomic_path
from loops.table import heldout_ks


def plot_metrics(rows: list[dict[str, Any]], out_path: str | Path, title: str = "ITERTL") -> Path:
    """Write a PNG of held-out pass@k per round (plus the reference split's pass@1 if present).

    Written to a temporary file and renamed, like every other artifact.
    """
    import matplotlib  # heavy: loads only when a plot is drawn

    matplotlib.use("Agg")  # no display here; Agg renders straight to PNG
    import matplotlib.pyplot as plt  # heavy: after the Agg backend is chosen

    out_path = Path(out_path)
    rows = sorted(rows, key=lambda r: r["round"])
    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for k in heldout_ks(rows):
        ys = [100 * r[f"heldout_pass@{k}"] if r.get(f"heldout_pass@{k}") is not None else float("nan") for r in rows]
        ax.plot(rounds, ys, marker="o", label=f"held-out pass@{k}")
    if any(r.get("reference_pass@1") is not None for r in rows):
        ys = [100 * r["reference_pass@1"] if r.get("reference_pass@1") is not None else float("nan") for r in rows]
        ax.plot(rounds, ys, marker="s", linestyle="--", color="gray", label="reference pass@1 (forgetting probe)")
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("pass rate (%)")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out_path
