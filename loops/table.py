"""The per-round tables of a run (from its metrics.jsonl); the plot is in loops.plot.

Metric rows use plain keys: ``round``; ``validation_pass@K`` for each K (the
split settings are chosen on); ``<test>_pass@K`` for each test split
(``test_fresh``, ``heldout``: only ever reported, measured at round 0 and the
last round); ``reference_pass@1`` and ``learned_pass@1`` (forgetting probes:
the labelled split, and problems earlier rounds trained on); and what each
round learned from: ``sampled_pass_rate`` (share of its samples that passed),
``kept_problems``, ``kept`` (distinct kept programs), ``passing_programs``
(distinct passing programs before the per-problem cap), ``kept_steps_<d>``
(share of kept problems with d steps), ``sample_diversity`` and
``validation_diversity`` (distinct completions per problem / n), ``replay``
and ``train_loss``. Policy RL runs (`loops.grpo`) add ``algo``, ``steps``,
``completions`` (sampled in training), ``train_reward_first`` /
``train_reward_last`` and the canary's ``canary_fired``, ``canary_flags``,
``canary_first_step``. A missing value prints as "-".

`format_table` prints up to five blocks: validation and probes per round, the
test splits apart from them, the training data per round, iterative DPO's
pairs (``pairs``, ``pair_problems``, ``failing_programs`` and TRL's
``reward_margin``, ``reward_chosen``, ``reward_rejected``, ``reward_accuracy``)
and policy RL. The RewardRanker loop (`loops.rewardranker`) adds its
reranker's data and accuracy (``reranker_pairs``, ``hard_negatives``, ``hard_negative_pairs``,
``validation_pairwise_accuracy``, ``logprob_weight``) and, per scored split,
the picks among the policy's own candidates (``<split>_pick_reranker``,
``<split>_pick_reranker_logprob``, ``<split>_pick_rule``,
``<split>_pick_logprob``, ``<split>_oracle_pass@n``): a block each.
`format_points` prints an RL run's validation points (its steps.jsonl; a
column for the iteration when they carry one).
"""
from __future__ import annotations

import re
from typing import Any

PROBES = ("reference", "learned")
_PASS_KEY = re.compile(r"(.+)_pass@(\d+)")


def split_ks(rows: list[dict[str, Any]], name: str) -> list[int]:
    """The k of every ``<name>_pass@k`` in ``rows``, ascending."""
    return sorted({int(m.group(2)) for r in rows for key in r
                   if (m := _PASS_KEY.fullmatch(key)) and m.group(1) == name})


def reported_split_names(rows: list[dict[str, Any]]) -> list[str]:
    """Names of the scored sets that are neither validation nor a probe, in the order rows first show them."""
    names: list[str] = []
    for r in rows:
        for key in r:
            m = _PASS_KEY.fullmatch(key)
            if m and m.group(1) not in ("validation", *PROBES) and m.group(1) not in names:
                names.append(m.group(1))
    return names


def _fmt(value: Any, pct: bool) -> str:
    if value is None:
        return "-"
    if pct and isinstance(value, (int, float)):
        return f"{100 * value:.1f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _steps_cell(row: dict[str, Any]) -> str | None:
    """``kept_steps_<d>`` shares as one cell: ``2:45 3:38 4:17`` (percent of kept problems)."""
    shares = sorted((int(key.rsplit("_", 1)[1]), value) for key, value in row.items()
                    if key.startswith("kept_steps_") and value is not None)
    return " ".join(f"{d}:{100 * v:.0f}" for d, v in shares) or None


def _block(rows: list[dict[str, Any]], columns: list[tuple[str, str, bool]], title: str) -> list[str]:
    """One fixed-width block: ``columns`` are (key, header, percent?); only columns with a value are shown."""
    columns = [columns[0]] + [c for c in columns[1:] if any(r.get(c[0]) is not None for r in rows)]
    if len(columns) == 1 or not rows:
        return []
    cells = [[header for _, header, _ in columns]]
    for r in sorted(rows, key=lambda r: r["round"]):
        cells.append([_fmt(r.get(key), pct) for key, _, pct in columns])
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    return [title, *lines]


# Iterative DPO's rows (loops.dpo); an ITERTL row has none of them, so the block is left out.
PAIR_COLUMNS = [("pairs", "pairs", False), ("pair_problems", "pair problems", False),
                ("failing_programs", "failing programs", False), ("reward_margin", "margin", False),
                ("reward_chosen", "chosen reward", False), ("reward_rejected", "rejected reward", False),
                ("reward_accuracy", "reward accuracy", True)]


# The RewardRanker loop's reranker per iteration (loops.rewardranker).
RERANKER_COLUMNS = [("reranker_pairs", "reranker pairs", False), ("new_pairs", "new sampled pairs", False),
                    ("hard_negatives", "hard negatives mined", False),
                    ("hard_negative_pairs", "hard-negative pairs", False),
                    ("reranker_train_accuracy", "train accuracy", True),
                    ("validation_pairwise_accuracy", "pairwise accuracy (validation candidates)", True),
                    ("logprob_weight", "log-prob weight w (chosen on validation)", False)]
# Pickers among a policy's own candidates of one split: (key suffix, header).
PICK_COLUMNS = [("pick_reranker", "reranker"), ("pick_reranker_logprob", "reranker + w*log-prob"),
                ("pick_rule", "rule: examples, then log-prob"), ("pick_logprob", "log-prob"),
                ("pick_random", "random"), ("oracle_pass@n", "oracle")]


def pick_blocks(rows: list[dict[str, Any]]) -> list[list[str]]:
    """One block per split whose candidates were reranked: the policy's pass@1 beside each picker's."""
    splits = []
    for r in rows:
        for key in r:
            if key.endswith("_pick_rule") and key[: -len("_pick_rule")] not in splits:
                splits.append(key[: -len("_pick_rule")])
    blocks = []
    for name in splits:
        columns = [("round", "round", False), (f"{name}_pass@1", "policy pass@1", True)]
        columns += [(f"{name}_{suffix}", header, True) for suffix, header in PICK_COLUMNS]
        picked = [r for r in rows if r.get(f"{name}_pick_rule") is not None]
        blocks.append(_block(picked, columns, f"reranked pass@1 on {name} (one pick per problem among the "
                                              "policy's own candidates)"))
    return blocks


def format_table(rows: list[dict[str, Any]], title: str | None = None) -> str:
    """Fixed-width text tables, one line per round; pass rates in percent.

    >>> print(format_table([{"round": 0, "validation_pass@1": 0.1, "heldout_pass@1": 0.2}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    validation (every setting is chosen here) and forgetting probes, per round
    round  validation pass@1
    0      10.0
    <BLANKLINE>
    test splits (only reported: no setting is chosen on them)
    round  heldout pass@1
    0      20.0
    """
    round_col = ("round", "round", False)
    scores = [round_col] + [(f"validation_pass@{k}", f"validation pass@{k}", True) for k in split_ks(rows, "validation")]
    scores += [("reference_pass@1", "reference pass@1", True), ("learned_pass@1", "learned pass@1", True),
               ("learned_problems", "learned", False)]
    tests = [round_col]
    for name in reported_split_names(rows):
        ks = split_ks(rows, name)
        tests += [(f"{name}_pass@{k}", f"{name} pass@{k}", True) for k in sorted({ks[0], ks[-1]})]
    # repair rows (ITERTL's repair_share) get columns only in runs that made some
    data_rows = [{**r, "kept_by_steps": _steps_cell(r), "repair": r.get("repair") or None,
                  "repair_from_reference": r.get("repair_from_reference") or None} for r in rows]
    data = [round_col, ("sampled_pass_rate", "sampled pass%", True), ("kept_problems", "kept problems", False),
            ("kept", "kept programs", False), ("passing_programs", "passing programs", False),
            ("kept_by_steps", "kept by steps %", False), ("sample_diversity", "sample diversity", False),
            ("validation_diversity", "validation diversity", False), ("replay", "replay", False),
            ("repair", "repair", False), ("repair_from_reference", "repair from reference", False),
            ("train_loss", "train loss", False)]
    rl_rows = [{**r, "canary": canary_cell(r)} for r in rows]
    rl = [round_col, ("algo", "algo", False), ("steps", "steps", False), ("completions", "completions sampled", False),
          ("train_reward_first", "reward at first point", False), ("train_reward_last", "reward at last point", False),
          ("canary", "reward-hacking canary", False)]
    blocks = [
        _block(rows, scores, "validation (every setting is chosen here) and forgetting probes, per round"),
        _block([r for r in rows if any(r.get(key) is not None for key, _, _ in tests[1:])], tests,
               "test splits (only reported: no setting is chosen on them)"),
        _block(data_rows, data, "what each round learned from (diversity: distinct samples per problem / n)"),
        _block(rows, [round_col, *PAIR_COLUMNS], "preference pairs and DPO reward margins (TRL's logs, mean per step)"),
        _block([r for r in rl_rows if r["canary"] is not None], rl,
               "policy RL (canary: training reward rising while validation pass@1 falls)"),
        _block([r for r in rows if r.get("iteration")], [round_col, *RERANKER_COLUMNS], "the reranker of each iteration (RewardRanker)"),
        *pick_blocks(rows),
    ]
    lines = [title] if title else []
    for block in filter(None, blocks):
        if len(lines) > (1 if title else 0):
            lines.append("")
        lines += block
    return "\n".join(lines)


def canary_cell(row: dict[str, Any]) -> str | None:
    """``FIRED 2x, first at step 30`` or ``quiet`` for a row of an RL run; None for any other row."""
    if row.get("canary_fired") is None:
        return None
    if not row["canary_fired"]:
        return "quiet"
    return f"FIRED {row.get('canary_flags')}x, first at step {row.get('canary_first_step')}"


def _flag_cell(flag: dict[str, Any] | None) -> str:
    if not flag:
        return ""
    return (f"FIRED: reward {flag['reward_rise']:+.3f}, validation -{100 * flag['val_drop']:.1f} points "
            f"(steps {flag['first_step']}-{flag['step']})")


def format_points(points: list[dict[str, Any]]) -> str:
    """An RL run's validation points as a table: step, mean training reward over the interval, validation
    pass@1 (greedy, %), the reward's status rates over the interval (%), and the canary's flag.

    >>> print(format_points([{"step": 0, "train_reward": None, "validation_pass@1": 0.25, "canary": None},
    ...                      {"step": 10, "train_reward": 0.5, "validation_pass@1": 0.3, "canary": None}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    validation points (greedy pass@1 beside the mean training reward since the last point)
    step  train reward  validation pass@1
    0     -             25.0
    10    0.500         30.0
    """
    rows = [{**p, "round": (p.get("iteration", 0), p["step"]), "flag": _flag_cell(p.get("canary")) or None}
            for p in points]
    columns = [("step", "step", False), ("train_reward", "train reward", False),
               ("validation_pass@1", "validation pass@1", True),
               ("status/tests/passed", "tests passed %", True), ("status/tests/failed", "failed %", True),
               ("status/tests/error", "error %", True), ("status/tests/timeout", "timeout %", True),
               ("status/examples/passed", "examples passed %", True), ("status/reward_none", "reward None %", True),
               ("flag", "canary", False)]
    if any("iteration" in p for p in points):  # RewardRanker: one RL run per iteration, each from step 0
        columns.insert(0, ("iteration", "iteration", False))
    return "\n".join(_block(rows, columns, "validation points (greedy pass@1 beside the mean training reward "
                                          "since the last point)"))
