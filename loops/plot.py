"""The PNG plot of a run: validation pass@k per round, the test splits where measured; an RL run's
reward and validation against step (matplotlib, Agg)."""
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


def plot_rl(points: list[dict[str, Any]], rows: list[dict[str, Any]], out_path: str | Path,
            title: str = "GRPO") -> Path:
    """Write a PNG of an RL run against the optimizer step: validation pass@1 (greedy, the hidden tests; left
    axis) and the mean training reward of each interval (right axis), a red X and a shaded span where the
    reward-hacking canary fired, and the round rows' sampled pass@1 (validation, test splits) at the start
    and the end of training.
    """
    import matplotlib  # heavy: loads only when a plot is drawn

    matplotlib.use("Agg")  # no display here; Agg renders straight to PNG
    import matplotlib.pyplot as plt  # heavy: after the Agg backend is chosen
    from matplotlib.ticker import MaxNLocator  # heavy: matplotlib

    out_path = Path(out_path)
    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    reward_ax = ax.twinx()
    steps = [p["step"] for p in points]
    ax.plot(steps, [100 * p["validation_pass@1"] for p in points], marker="o", color="tab:blue",
            label="validation pass@1 (greedy, every point)")
    rewarded = [(p["step"], p["train_reward"]) for p in points if p.get("train_reward") is not None]
    reward_ax.plot([s for s, _ in rewarded], [r for _, r in rewarded], marker=".", color="tab:orange",
                   label="training reward (mean since the last point)")
    flagged = [p for p in points if p.get("canary")]
    for p in flagged:
        ax.axvspan(p["canary"]["first_step"], p["step"], color="tab:red", alpha=0.06)
    if flagged:
        ax.scatter([p["step"] for p in flagged], [100 * p["validation_pass@1"] for p in flagged], marker="X", s=140,
                   color="tab:red", zorder=5, clip_on=False, label="canary fired: reward up, validation down")
    end = max(steps + [r.get("steps") or 0 for r in rows], default=0)
    at = {0: 0, 1: end}  # round 0 is the base model, round 1 the trained one
    styles = (("s", "tab:green"),) + TEST_STYLES * 4
    for name, (marker, color) in zip(["validation", *reported_split_names(rows)], styles):
        measured = [(at[r["round"]], 100 * r[f"{name}_pass@1"]) for r in rows
                    if r.get(f"{name}_pass@1") is not None and r["round"] in at]
        if measured:
            kind = "sampled" if name == "validation" else "test, sampled"
            ax.plot([x for x, _ in measured], [y for _, y in measured], marker=marker, linestyle="--", color=color,
                    label=f"{name} pass@1 ({kind})")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("pass rate (%)")
    reward_ax.set_ylabel("training reward")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    handles = [h for a in (ax, reward_ax) for h in a.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.12, 1), fontsize=8)  # outside: past the right axis
    fig.tight_layout()
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return out_path
