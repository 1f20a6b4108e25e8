"""The PNG plot of a run: validation pass@k per round, the test splits where measured (matplotlib, Agg)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from codegen.io import atomic_path
from loops.table import reported_split_names, split_ks

TEST_STYLES = (("D", "tab:red"), ("^", "tab:purple"), ("v", "tab:brown"), ("P", "tab:olive"), ("X", "tab:pink"))


def _series(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [100 * r[key] if r.get(key) is not None else float("nan") for r in rows]


def plot_metrics(rows: list[dict[str, Any]], out_path: str | Path, title: str = "ITERTL") -> Path:
    """Write a PNG of validation pass@k per round, each test split's pass@1 and pass@max-k
    (dashed, at the rounds that measured them) and the reference split's pass@1 if present.

    Written to a temporary file and renamed, like every other artifact.
    """
    import matplotlib  # heavy: loads only when a plot is drawn

    matplotlib.use("Agg")  # no display here; Agg renders straight to PNG
    import matplotlib.pyplot as plt  # heavy: after the Agg backend is chosen

    out_path = Path(out_path)
    rows = sorted(rows, key=lambda r: r["round"])
    rounds = [r["round"] for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for k in split_ks(rows, "validation"):
        ax.plot(rounds, _series(rows, f"validation_pass@{k}"), marker="o", label=f"validation pass@{k}")
    for name, (marker, color) in zip(reported_split_names(rows), TEST_STYLES * 4):
        ks = split_ks(rows, name)
        for k, style in zip(sorted({ks[0], ks[-1]}), ("--", ":")):
            measured = [(r["round"], 100 * r[f"{name}_pass@{k}"]) for r in rows if r.get(f"{name}_pass@{k}") is not None]
            ax.plot([x for x, _ in measured], [y for _, y in measured], marker=marker, linestyle=style,
                    color=color, label=f"{name} pass@{k} (test)")
    if any(r.get("reference_pass@1") is not None for r in rows):
        ax.plot(rounds, _series(rows, "reference_pass@1"), marker="s", linestyle="--", color="gray",
                label="reference pass@1 (forgetting probe)")
    ax.set_xlabel("round (0 = base model)")
    ax.set_ylabel("pass rate (%)")
    ax.set_xticks(rounds)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)  # outside: up to a dozen lines
    fig.tight_layout()
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out_path
