"""Reading a run directory from a test while its loop runs, or after it was killed; killing a real
loop inside its stages and resuming it (the SIGKILL tests of every loop)."""
from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator


def read_state(root: Path) -> dict:
    """The run's state.json; a run not started yet (or a file being replaced) reads as empty."""
    try:
        return json.loads((root / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}, "running": None}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_every_json_file_is_whole(root: Path) -> None:
    """Every JSON and JSONL file under ``root`` parses: none was left half-written."""
    for path in root.rglob("*"):
        if path.suffix == ".json" and path.is_file():
            json.loads(path.read_text())
        elif path.suffix == ".jsonl" and path.is_file():
            read_jsonl(path)


# ------------------------------------------------------------------ killing a real loop inside its stages
REPO = Path(__file__).resolve().parents[1]


def finished_stages(root: Path) -> dict[str, dict]:
    """``{stage key: entry}`` of the stages state.json says finished (copies: later changes do not show)."""
    return {k: dict(v) for k, v in read_state(root)["stages"].items() if v.get("status") == "done"}


def assert_not_redone(state: dict, before: dict[str, dict], when: str) -> None:
    """Every stage finished ``before`` is in ``state`` exactly as it was: skipped, never run again."""
    for key, entry in before.items():
        assert state["stages"][key] == entry, f"{key} was redone {when}"


@dataclass
class Kill:
    """What one SIGKILL inside a stage left: the stage, the stages finished before, state.json after, the output."""

    target: str
    before: dict[str, dict]
    after: dict
    output: str


def inside_a_stage(target: str) -> float:
    """Seconds after a stage starts that are well inside it (a train stage first loads its model)."""
    return 0.5 if target.endswith("train") else 0.1


def kill_inside_stages(command: list[str], root: Path, targets: list[str], env: dict[str, str],
                       settle: Callable[[str], float] = inside_a_stage) -> Iterator[Kill]:
    """Start ``command`` (a loop on run directory ``root``) once per target; when state.json says the
    target stage is running, wait ``settle(target)`` seconds (well inside it) and SIGKILL the loop.

    Yields a `Kill` after each kill, before the next start (the caller checks the run as the kill left
    it), having asserted that the loop was killed inside the target and that no stage finished
    before it was redone.
    """
    for target in targets:
        before = finished_stages(root)
        proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 600
        while read_state(root).get("running") != target:
            assert proc.poll() is None, f"loop ended before reaching {target}:\n{proc.stdout.read()[-4000:]}"
            assert time.monotonic() < deadline, f"never reached {target}"
            time.sleep(0.02)
        time.sleep(settle(target))
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate()[0]
        after = read_state(root)
        assert after["running"] == target and after["stages"][target]["status"] == "running", output[-4000:]
        assert_not_redone(after, before, f"before the kill at {target}")
        yield Kill(target, before, after, output)


def resume_to_the_end(command: list[str], root: Path, env: dict[str, str], timeout: float = 900
                      ) -> tuple[subprocess.CompletedProcess, dict]:
    """Run ``command`` once more to the end; assert it succeeds, redoes no finished stage and leaves every
    stage done. Returns the finished process and state.json."""
    before = finished_stages(root)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    state = read_state(root)
    assert_not_redone(state, before, "on the final resume")
    assert state["running"] is None and all(v["status"] == "done" for v in state["stages"].values())
    return done, state
