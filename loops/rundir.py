"""Run directories: where a loop keeps its work, so that any stage can resume.

Layout::

    runs/<name>/
      config.yaml          the config the run started with (a resumed run must match it)
      state.json           which stages finished, what they produced, which one is running
      lineage.json         per round: the model it started from and the checkpoint it made
      metrics.jsonl        one row per evaluated round (rewritten whole, atomically)
      steps.jsonl          RL runs: one row per validation point (step, training reward, validation
                           pass@1, status rates, canary flag), rewritten as training goes
      plot.png             pass@1 / pass@k per round (RL runs: reward and validation against step)
      round-<k>/<stage>/   each stage's artifacts

The resume rule: a stage is finished exactly when state.json says so, and
state.json is only updated after every artifact of the stage is in place. A
stage that did not finish (the process was killed) is wiped and redone; a
finished one is never redone. Every file and checkpoint directory is written
with codegen.io's atomic writers, so a reader sees the old file or the new
one, never half of one.

Any loop driver can use this (ITERTL, RewardRanker...): it knows stages and
rounds, not models.
"""
from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from codegen.errors import UserError
from codegen.io import TMP_PREFIX, read_jsonl, write_json_atomic, write_jsonl_atomic, write_text_atomic

STATE_VERSION = 1


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def stage_key(round_: int, stage: str) -> str:
    return f"round-{round_}/{stage}"


class RunDir:
    """One run's directory: everything written to it or asked about it goes through here.

    Open it with `RunDir.open` to work in it (that takes the run's lock); `RunDir.find`
    gives a read-only view for inspection (`itercode runs show`).
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self._lock_fd: int | None = None

    # ----- opening, config and lock
    @classmethod
    def open(cls, root: str | Path, config: dict[str, Any], resumable_keys: frozenset[str] = frozenset(),
             defaults: dict[str, Any] | None = None) -> "RunDir":
        """Create the run, or reopen it to resume.

        Reopening with a config that differs in a key outside ``resumable_keys``
        is an error: the finished stages were made under the old values. A key
        the saved config lacks (one added to the schema after the run began)
        counts as its value in ``defaults``: the run was made as that default.
        """
        run = cls(root)
        run.root.mkdir(parents=True, exist_ok=True)
        run._take_lock()
        # Temporary files at the top level belong to a process that was killed
        # mid-write (we hold the lock, so no live writer owns them).
        for leftover in run.root.glob(TMP_PREFIX + "*"):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)
        saved_path = run.root / "config.yaml"
        if saved_path.exists():
            saved = {**(defaults or {}), **(yaml.safe_load(saved_path.read_text()) or {})}
            changed = sorted(k for k in set(saved) | set(config)
                             if saved.get(k) != config.get(k) and k not in resumable_keys)
            if changed:
                run.close()
                diffs = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
                raise UserError(
                    f"run {str(run.root)!r} was started with a different config ({diffs}); "
                    "rerun with the same config to resume it, or give the new config its own name=NEW_NAME")
        write_text_atomic(saved_path, yaml.safe_dump(config, sort_keys=False))
        if not (run.root / "state.json").exists():
            write_json_atomic(run.root / "state.json", {"version": STATE_VERSION, "created_at": _now(),
                                                        "running": None, "stages": {}})
        return run

    def _take_lock(self) -> None:
        # flock is released by the kernel when the process dies, even by SIGKILL.
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"run {str(self.root)!r} is in use by another process; wait for it to end, "
                            "or start this one under another name=NEW_NAME") from None
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ----- state
    @property
    def state(self) -> dict[str, Any]:
        path = self.root / "state.json"
        if not path.exists():
            return {"version": STATE_VERSION, "running": None, "stages": {}}
        return json.loads(path.read_text())

    def _write_state(self, state: dict[str, Any]) -> None:
        write_json_atomic(self.root / "state.json", state)

    def stage_dir(self, round_: int, stage: str) -> Path:
        return self.root / f"round-{round_}" / stage

    def is_done(self, round_: int, stage: str) -> bool:
        entry = self.state["stages"].get(stage_key(round_, stage))
        return bool(entry and entry.get("status") == "done")

    def info(self, round_: int, stage: str) -> dict[str, Any]:
        """What a finished stage recorded (its ``info`` dict); {} if not finished."""
        entry = self.state["stages"].get(stage_key(round_, stage)) or {}
        return entry.get("info", {}) if entry.get("status") == "done" else {}

    def run_stage(self, round_: int, stage: str, fn: Callable[[Path], dict[str, Any] | None]) -> dict[str, Any]:
        """Run ``fn(stage_dir)`` unless the stage already finished; return its info dict.

        A leftover directory from an attempt that was killed is wiped first, so
        ``fn`` always starts from an empty directory.
        """
        key = stage_key(round_, stage)
        if self.is_done(round_, stage):
            return self.info(round_, stage)
        d = self.stage_dir(round_, stage)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        state = self.state
        entry = state["stages"].setdefault(key, {})
        entry.update(status="running", started_at=_now(), attempts=entry.get("attempts", 0) + 1)
        state["running"] = key
        self._write_state(state)

        try:
            info = fn(d) or {}
        except BaseException as e:
            # Recorded for `runs show`; the stage still counts as unfinished and is redone.
            state = self.state
            state["stages"][key].update(status="failed", error=f"{type(e).__name__}: {e}"[:500])
            state["running"] = None
            self._write_state(state)
            raise

        state = self.state
        state["stages"][key].update(status="done", finished_at=_now(), info=info)
        state["running"] = None
        self._write_state(state)
        return info

    def run_logged(self, round_: int, stage: str, fn: Callable[[Path], dict[str, Any] | None],
                   log: Callable[[str], None]) -> dict[str, Any]:
        """`run_stage`, saying through ``log`` whether the stage was skipped, started and how long it took."""
        if self.is_done(round_, stage):
            log(f"round {round_} {stage}: done already, skipped")
            return self.info(round_, stage)
        log(f"round {round_} {stage} ...")
        t0 = time.monotonic()
        info = self.run_stage(round_, stage, fn)
        log(f"round {round_} {stage}: finished in {time.monotonic() - t0:.1f}s")
        return info

    def finished_stages(self) -> list[str]:
        return [k for k, v in self.state["stages"].items() if v.get("status") == "done"]

    def rel(self, path: str | Path) -> str:
        """``path`` relative to the run root (how artifacts are recorded)."""
        return str(Path(path).resolve().relative_to(self.root.resolve()))

    def path(self, rel: str) -> Path:
        return self.root / rel

    # ----- lineage and metrics
    def record_lineage(self, round_: int, entry: dict[str, Any]) -> None:
        path = self.root / "lineage.json"
        lineage = json.loads(path.read_text()) if path.exists() else []
        lineage = [e for e in lineage if e.get("round") != round_] + [{"round": round_, **entry}]
        lineage.sort(key=lambda e: e["round"])
        write_json_atomic(path, lineage)

    def lineage(self) -> list[dict[str, Any]]:
        path = self.root / "lineage.json"
        return json.loads(path.read_text()) if path.exists() else []

    def write_metrics(self, rows: list[dict[str, Any]]) -> Path:
        """Rewrite metrics.jsonl whole (sorted by round): a redone stage can never duplicate a row."""
        rows = sorted(rows, key=lambda r: r["round"])
        return write_jsonl_atomic(self.root / "metrics.jsonl", rows)

    def metrics(self) -> list[dict[str, Any]]:
        path = self.root / "metrics.jsonl"
        return read_jsonl(path) if path.exists() else []

    @property
    def points_path(self) -> Path:
        return self.root / "steps.jsonl"

    def write_points(self, rows: list[dict[str, Any]]) -> Path:
        """Rewrite steps.jsonl whole: an RL run's validation points so far (a redone stage starts it afresh)."""
        return write_jsonl_atomic(self.points_path, rows)

    def points(self) -> list[dict[str, Any]]:
        """An RL run's validation points (steps.jsonl); [] for a run without any."""
        return read_jsonl(self.points_path) if self.points_path.exists() else []

    # ----- what `itercode runs show` asks
    @property
    def plot_path(self) -> Path:
        return self.root / "plot.png"

    def unfinished_stages(self) -> dict[str, dict[str, Any]]:
        """Stages that started and did not finish (running when killed, or failed), by key."""
        return {k: v for k, v in self.state["stages"].items() if v.get("status") != "done"}

    @classmethod
    def find(cls, run: str, runs_dir: str | Path = "runs") -> "RunDir":
        """A run given by name (under ``runs_dir``) or by path, to read (no lock); error if neither exists."""
        for candidate in (Path(run), Path(runs_dir) / run):
            if (candidate / "state.json").exists() or (candidate / "metrics.jsonl").exists():
                return cls(candidate)
        raise UserError(f"no run {run!r}: neither {run!r} nor {str(Path(runs_dir) / run)!r} is a run directory "
                        "(one holds state.json); list them with `ls runs/`")
