"""Opening a loop's run: the one preamble every loop driver starts with.

    with open_session(cfg, RESUMABLE_KEYS, describe, log) as s:
        s.start_base()
        s.evaluate(0, model, probes, test=True)

`open_session` opens (or resumes) the run directory, keeps one
`SamplerPool`, loads the problem sets (`loops.splits.load_splits`), says in
one log line what the run is and whether it resumes, and closes the pool and
the run's lock however the driver ends. The `Session` it yields runs stages
through `RunDir.run_logged` and holds the steps all drivers take alike:
building the starter, sampling and executing a round, evaluating a model
(and scoring the test splits when due).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from codegen.problems import Problem
from codegen.samples import read_samples
from loops.config import LoopConfig
from loops.rundir import RunDir
from loops.sampler_pool import Log, SamplerPool
from loops.splits import load_splits, reference_probe_of
from loops.stages import check_test_stage, evaluate_stage, execute_stage, sample_stage, score_test_splits, starter_stage
from loops.table import format_points, format_table


@dataclass
class Session:
    """One open run: its directory, its sampling engine, its problem sets and the reference probe."""

    cfg: Any  # the driver's config: a LoopConfig subclass
    run: RunDir
    pool: SamplerPool
    splits: dict[str, Any]
    reference_probe: list[Problem]
    log: Log

    def stage(self, round_: int, name: str, fn: Callable[[Path], dict]) -> dict:
        """Run (or skip, when finished) stage ``name`` of round ``round_``, saying so in the log."""
        return self.run.run_logged(round_, name, fn, self.log)

    def start_base(self) -> None:
        """Round 0's starter stage, when the run starts from codegen.starter's model."""
        if self.cfg.base_model == "starter":
            self.stage(0, "starter", lambda d: starter_stage(self.cfg, d))

    def sample_and_execute(self, round_: int, model: str, problems: Sequence[Problem],
                           sample: Callable[..., dict] = sample_stage) -> tuple[Path, Path]:
        """The round's sample stage (``sample``, `loops.stages.sample_stage`'s signature) from ``model``
        and its execute stage; the paths of their ``samples.jsonl`` and ``results.jsonl``."""
        self.stage(round_, "sample", lambda d: sample(self.pool.get(model), problems, self.cfg, d,
                                                      model_name=model, round_=round_))
        samples_path = self.run.stage_dir(round_, "sample") / "samples.jsonl"
        self.stage(round_, "execute", lambda d: execute_stage(problems, read_samples(samples_path)[0], self.cfg, d))
        return samples_path, self.run.stage_dir(round_, "execute") / "results.jsonl"

    def probes(self, learned: list[Problem] | None = None) -> dict[str, list[Problem]]:
        """What the evaluate stage scores: validation, the reference probe and (ITERTL, DPO) ``learned``."""
        probes = {"validation": self.splits["validation"], "reference": self.reference_probe}
        return probes if learned is None else {**probes, "learned": learned}

    def evaluate(self, round_: int, model: str, probes: dict[str, Sequence[Problem]], *, test: bool) -> None:
        """The evaluate stage of ``model`` on ``probes``; with ``test``, the test stage on every test split
        (a finished test stage that lacks a split of the config is refused: `check_test_stage`)."""
        self.stage(round_, "evaluate", lambda d: evaluate_stage(self.pool.get(model), model, probes, self.cfg, d,
                                                                round_))
        if test:
            check_test_stage(self.run, self.cfg, round_)
            self.stage(round_, "test", lambda d: score_test_splits(self.pool.get(model), model, self.splits["test"],
                                                                   self.cfg, d, round_))

    def log_table(self, rows: list[dict[str, Any]], title: str, points: list[dict] | None = None) -> None:
        """The run's closing lines: the metrics table titled ``<title> <run root> (...)``, the RL
        validation ``points`` when given, and where the plot is."""
        self.log("")
        self.log(format_table(rows, title=f"{title} {self.run.root} (pass rates in %, n={self.cfg.eval_n}, "
                                          f"T={self.cfg.eval_temperature}, sampler={self.cfg.sampler})"))
        if points is not None:
            self.log("")
            self.log(format_points(points))
        self.log(f"plot: {self.run.plot_path}")


@contextlib.contextmanager
def open_session(cfg: LoopConfig, resumable_keys: frozenset[str], describe: Callable[[dict[str, Any]], str],
                 log: Log = print) -> Iterator[Session]:
    """Open (or resume) ``cfg``'s run and log ``run <root><describe(splits)>``, plus how many stages a
    resumed run had finished; the pool and the run are closed on the way out, whatever happens."""
    run = RunDir.open(cfg.run_dir, cfg.to_dict(), resumable_keys, cfg.defaults())
    pool = SamplerPool(cfg, log)
    finished_before = run.finished_stages()
    try:
        splits = load_splits(cfg)
        log(f"run {run.root}{describe(splits)}"
            + (f"; resuming after {len(finished_before)} finished stages" if finished_before else ""))
        yield Session(cfg, run, pool, splits, reference_probe_of(cfg, splits), log)
    finally:
        pool.close()
        run.close()
