"""The RLCoder run's table for `itercode runs show` (light: no torch, no pydantic)."""
from __future__ import annotations

from typing import Any

# copy_rule: a baseline without learning (the block holding a near copy of the context's last line, or none)
ARMS = ("infile", "bm25", "copy_rule", "rlcoder", "rlcoder_no_stop", "oracle")


def is_rlcoder_run(rows: list[dict[str, Any]]) -> bool:
    """Whether metrics rows are an RLCoder run's (`itercode runs show` prints them with `format_rlcoder`)."""
    return any(r.get("stage") in ("gate", "retriever", "evaluate") for r in rows)


def format_rlcoder(rows: list[dict[str, Any]], title: str = "") -> str:
    """The gate, the retriever's rounds and the arms' EM / ES / retrieved tokens, as text."""
    out = [title] if title else []
    for r in rows:
        if r.get("stage") == "gate":
            out.append(f"gate (target loss, nats): best block {r['gate_best']:.3f}  no block {r['gate_none']:.3f}  "
                       f"random block {r['gate_random']:.3f}")
    out.append(f"{'round':>5}  {'labelled':>8}  {'stop labels':>11}  {'not BM25 top':>12}  {'train loss':>10}")
    for r in rows:
        if r.get("stage") == "retriever":
            out.append(f"{r['round']:>5}  {r.get('examples', '-'):>8}  {r.get('stop_share', 0):>11.2f}  "
                       f"{r.get('label_not_bm25_top', 0):>12.2f}  {r.get('train_loss') or float('nan'):>10.4f}")
    ev = [r for r in rows if r.get("stage") == "evaluate"]
    if ev:
        out.append(f"{'arm':<16} {'EM %':>6} {'ES %':>6} {'retrieved tokens':>16}")
        for arm in ARMS:
            e = ev[-1]
            out.append(f"{arm:<16} {e.get(f'{arm}_em', float('nan')):>6.1f} {e.get(f'{arm}_es', float('nan')):>6.1f} "
                       f"{e.get(f'{arm}_retrieved_tokens', float('nan')):>16.1f}")
    return "\n".join(out)
