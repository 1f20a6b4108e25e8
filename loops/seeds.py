"""A learning claim over seeds: ITERTL and its non-iterative baseline, N seeds, one starter.

DESIGN.md's "Learning claims": the same starter, the simplest baseline beside
the loop, test splits apart from validation, mean and standard deviation over
three seeds. A seed is the loop's sampling and training randomness (``seed``);
the starter model is built once, by the first seed's run, and every other
seed starts from that same checkpoint.

Run directories, each resumable on its own: the first seed is the config's
own run (``runs/<name>``, so a finished `make demo` counts as seed 0), the
others ``runs/<name>-seed<S>``; each has its baseline beside it
(``...-baseline``).

`summarize` gives the figures as one JSON object, in percent::

    {"test_fresh": {"starter": {"pass@1": m, "pass@1_sd": s, "pass@10": m, "pass@10_sd": s},
                    "itertl": {...}, "baseline": {...}},
     "heldout": {...}, "validation": {...}, "seeds": 3}

(one entry per test split, then validation; pass@1 and the largest k of
``eval_ks``; the standard deviation is the sample one, n - 1, and null for a
single seed). `format_summary` prints the same as a table.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Sequence

from codegen.errors import UserError
from loops.baseline import baseline_for_run
from loops.config import ITERTLConfig
from loops.itertl import model_for_round, run_itertl
from loops.rundir import RunDir
from loops.sampler_pool import Log

ARMS = ("starter", "itertl", "baseline")  # the JSON's order (issue 13's); the table reads starter, baseline, ITERTL
TABLE_ARMS = ("starter", "baseline", "itertl")
ARM_LABELS = {"starter": "starter (round 0)", "baseline": "non-iterative baseline", "itertl": "ITERTL"}
# Issue 13's bar: ITERTL beats the baseline by this many points of pass@1 on the first
# test split (the fresh one), mean of the seeds, with pass@max-k not below the starter's.
TARGET_MARGIN = 5.0


def seed_config(cfg: ITERTLConfig, index: int, starter: str | None) -> ITERTLConfig:
    """The config of the ``index``-th seed run: seed ``cfg.seed + index``, its own run name,
    and (after the first) the first run's base model, so every seed starts from one checkpoint."""
    if index == 0:
        return cfg
    base = starter if cfg.base_model == "starter" else cfg.base_model
    if not base:
        raise UserError("the first seed's run has no base model yet; run it first")
    return cfg.model_copy(update={"name": f"{cfg.name}-seed{cfg.seed + index}", "seed": cfg.seed + index,
                                  "base_model": base})


def run_seeds(cfg: ITERTLConfig, seeds: int, log: Log = print) -> list[dict[str, Any]]:
    """Run (or resume) ITERTL and its baseline for ``seeds`` seeds; one result per seed.

    Each result: ``seed``, ``name``, ``rows`` (the loop's metrics rows),
    ``baseline`` (its metrics row) and the wall ``seconds`` of this invocation.
    """
    if seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {seeds}")
    out = []
    starter = None
    for index in range(seeds):
        run_cfg = seed_config(cfg, index, starter)
        log(f"=== seed {run_cfg.seed} ({index + 1} of {seeds}): run {run_cfg.run_dir}")
        t0 = time.monotonic()
        run = run_itertl(run_cfg, log)
        baseline = baseline_for_run(run_cfg, log)
        if index == 0:
            with RunDir(run_cfg.run_dir) as first:
                starter = model_for_round(first, run_cfg, 0)
        out.append({"seed": run_cfg.seed, "name": run_cfg.name, "rows": run.metrics(), "baseline": baseline,
                    "seconds": round(time.monotonic() - t0, 1)})
    return out


def arm_rows(result: dict[str, Any], rounds: int) -> dict[str, dict[str, Any]]:
    """One seed's metrics row per arm: round 0, the baseline, the loop's last round."""
    by_round = {r["round"]: r for r in result["rows"]}
    if 0 not in by_round or rounds not in by_round:
        raise UserError(f"run {result['name']} has no evaluated round 0 and round {rounds}; rerun it to finish")
    return {"starter": by_round[0], "baseline": result["baseline"], "itertl": by_round[rounds]}


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    return round(100 * mean, 2), (round(100 * sd, 2) if sd is not None else None)


def summarize(results: Sequence[dict[str, Any]], cfg: ITERTLConfig) -> dict[str, Any]:
    """The JSON object of the module docstring, from `run_seeds`' results."""
    ks = sorted({1, max(cfg.eval_ks)})
    arms = [arm_rows(r, cfg.rounds) for r in results]
    summary: dict[str, Any] = {}
    for split in [*cfg.test_names, "validation"]:
        entry: dict[str, Any] = {}
        for arm in ARMS:
            stats: dict[str, Any] = {}
            for k in ks:
                key = f"{split}_pass@{k}"
                values = [a[arm].get(key) for a in arms]
                if any(v is None for v in values):
                    missing = next(r["name"] for r, v in zip(results, values) if v is None)
                    raise UserError(f"{arm} of run {missing} has no {key}; was it run with other test splits? "
                                    "rerun it under a new name")
                stats[f"pass@{k}"], stats[f"pass@{k}_sd"] = _mean_sd(values)
            entry[arm] = stats
        summary[split] = entry
    summary["seeds"] = len(results)
    return summary


def target_line(summary: dict[str, Any], cfg: ITERTLConfig) -> str | None:
    """Met or missed against TARGET_MARGIN on the first test split, with the figures."""
    if not cfg.test_names:
        return None
    split = next(iter(cfg.test_names))
    kmax = max(cfg.eval_ks)
    s = summary[split]
    margin = s["itertl"]["pass@1"] - s["baseline"]["pass@1"]
    breadth = s["itertl"][f"pass@{kmax}"] - s["starter"][f"pass@{kmax}"]
    met = margin >= TARGET_MARGIN and breadth >= 0
    return (f"target on {split} (ITERTL pass@1 >= baseline + {TARGET_MARGIN:.0f} points, pass@{kmax} not below the "
            f"starter's; mean of {summary['seeds']} seeds): {'MET' if met else 'MISSED'}: pass@1 ITERTL - baseline "
            f"{margin:+.1f}, pass@{kmax} ITERTL - starter {breadth:+.1f}")


def _cell(stats: dict[str, Any], k: int) -> str:
    sd = stats.get(f"pass@{k}_sd")
    return f"{stats[f'pass@{k}']:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")


def format_summary(summary: dict[str, Any], cfg: ITERTLConfig, results: Sequence[dict[str, Any]] = ()) -> str:
    """The summary as text: test splits first, validation apart, pass@1 and pass@max-k side by side."""
    ks = sorted({1, max(cfg.eval_ks)})
    seeds = ", ".join(str(r["seed"]) for r in results) if results else str(summary["seeds"])
    labels = dict(ARM_LABELS)
    labels["baseline"] = f"non-iterative: {cfg.rounds * cfg.train_steps} steps on reference"
    labels["itertl"] = f"ITERTL: {cfg.rounds} round{'s' if cfg.rounds != 1 else ''} x {cfg.train_steps} steps"
    width = max(len(v) for v in labels.values()) + 4
    lines = [(f"ITERTL against the non-iterative baseline, one starter, seeds {seeds}: pass rates in %, "
              f"mean ± sd over seeds (n={cfg.eval_n} samples per problem, T={cfg.eval_temperature})"),
             " " * width + "".join(f"{f'pass@{k}':<16}" for k in ks)]
    for split in [*cfg.test_names, "validation"]:
        kind = "settings are chosen here" if split == "validation" else "test: only reported"
        lines.append(f"{split} ({kind})")
        for arm in TABLE_ARMS:
            lines.append(f"  {labels[arm]:<{width - 2}}" + "".join(f"{_cell(summary[split][arm], k):<16}" for k in ks))
    target = target_line(summary, cfg)
    if target:
        lines += ["", target]
    if results:
        first = next(iter(cfg.test_names), "validation")
        lines += ["", f"per seed, {first} pass@1 (starter / baseline / ITERTL) and wall time of this invocation:"]
        for r in results:
            arms = arm_rows(r, cfg.rounds)
            figures = " / ".join(f"{100 * arms[a][f'{first}_pass@1']:.1f}" for a in TABLE_ARMS)
            lines.append(f"  seed {r['seed']}: {figures}   {r['seconds']:.0f}s   {Path(cfg.runs_dir) / r['name']}")
    return "\n".join(line.rstrip() for line in lines)
