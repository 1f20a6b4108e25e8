"""The non-iterative baseline ITERTL is measured against.

Same starting model, same optimizer settings, and as many optimizer steps as
all the loop's rounds together (``rounds * train_steps``), but trained once,
on the reference solutions alone: no self-generated data, no rounds. ITERTL's
claim is that iterating on its own passing samples beats this.

It is scored on the loop's own validation and test splits, with the same
sampling settings, so every figure has the baseline beside it.

The baseline keeps its own resumable run directory, ``<runs_dir>/<name>-baseline``,
with stages ``round-<rounds>/train``, ``round-<rounds>/evaluate`` (validation)
and ``round-<rounds>/test`` (the test splits; the round number says "as many
steps as that many rounds").
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codegen.io import write_jsonl_atomic
from loops.config import RESUMABLE_KEYS, ITERTLConfig
from loops.itertl import model_for_round
from loops.rundir import RunDir
from loops.sampler_pool import Log, SamplerPool
from loops.splits import load_splits
from loops.stages import check_test_stage, evaluate_stage, score_test_splits, scores_of_test_stage
from loops.trainers import train_sft


def run_reference_baseline(cfg: ITERTLConfig, base_model: str, log: Log = print) -> dict[str, Any]:
    """Train ``base_model`` on the reference split for ``rounds * train_steps`` steps; score it.

    Returns one metrics row: the validation scores (``validation_pass@k`` ...)
    and every test split's (``test_fresh_pass@k``, ``heldout_pass@k`` ...).
    """
    root = Path(cfg.runs_dir) / f"{cfg.name}-baseline"
    run = RunDir.open(root, {**cfg.to_dict(), "baseline_of": cfg.name, "base_model_path": base_model},
                      RESUMABLE_KEYS - {"rounds"}, cfg.defaults())
    steps = cfg.rounds * cfg.train_steps
    pool = SamplerPool(cfg, log)
    try:
        splits = load_splits(cfg)
        rows = [{"prompt": p.prompt, "completion": p.canonical_solution, "task_id": p.task_id, "source": "reference"}
                for p in splits["reference"]]

        def train(d: Path) -> dict:
            write_jsonl_atomic(d / "train.jsonl", rows)
            info = train_sft(base_model, rows, d / "model", steps=steps, cfg=cfg,
                             learning_rate=cfg.learning_rate, seed=cfg.seed + 99, scratch=d / ".tmp-trainer")
            return {"model": "model", **info}

        t0 = time.monotonic()
        log(f"baseline: {steps} steps on {len(rows)} reference solutions from {base_model}")
        run.run_stage(cfg.rounds, "train", train)
        model = str(run.stage_dir(cfg.rounds, "train") / "model")
        # No reference probe: the baseline trains on all of reference, so probing it says nothing.
        probes = {"validation": splits["validation"]}
        metrics = dict(run.run_stage(cfg.rounds, "evaluate",
                                     lambda d: evaluate_stage(pool.get(model), model, probes, cfg, d, cfg.rounds)))
        if cfg.test:
            check_test_stage(run, cfg, cfg.rounds)
            metrics.update(scores_of_test_stage(run.run_stage(
                cfg.rounds, "test", lambda d: score_test_splits(pool.get(model), model, splits["test"], cfg, d,
                                                                cfg.rounds))))
        run.write_metrics([metrics])  # so `itercode runs show NAME-baseline` prints it too
        log(f"baseline: done in {time.monotonic() - t0:.1f}s")
        return metrics
    finally:
        pool.close()
        run.close()


def baseline_for_run(cfg: ITERTLConfig, log: Log = print) -> dict[str, Any]:
    """The baseline for an ITERTL run whose round 0 already exists (it reuses that base model)."""
    with RunDir(cfg.run_dir) as run:
        base = model_for_round(run, cfg, 0)
    return run_reference_baseline(cfg, base, log)
