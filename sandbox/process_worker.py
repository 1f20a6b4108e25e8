"""The host's handle of one process-backend worker (`sandbox.process.ProcessExecutor` drives them).

`_WorkerProc` starts one harness worker (``sandbox/harness/``, stdlib only)
in isolated mode with a fixed safe environment, waits for its hello (what
isolation it got), exchanges length-prefixed JSON frames with it over its
pipes, and stops it, removing its slot's cgroups.
"""
from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from sandbox.harness.runqueue import longest_wall_s
from sandbox.harness.wire import read_frame, write_frame
from sandbox.harness.worker import SAFE_ENV
from sandbox.process_host import remove_cgroups

SANDBOX_DIR = str(Path(__file__).resolve().parent)
# The worker's own environment: SAFE_ENV, plus eager symbol binding so that
# no run pays for the dynamic linker's lazy PLT fix-ups (each one a
# copy-on-write fault in the forked candidate); the worker hands its
# children SAFE_ENV alone.
WORKER_ENV = {**SAFE_ENV, "LD_BIND_NOW": "1"}
# The worker runs the harness package from this directory, in isolated mode (-I)
# and without site (-S): see harness.worker.main.
WORKER_MAIN = f"import sys; sys.path.insert(0, {SANDBOX_DIR!r}); from harness.worker import main; sys.exit(main())"


def _read_frame(fd: int, deadline: float | None) -> dict | None:
    body = read_frame(fd, deadline=deadline)
    return None if body is None else json.loads(body)


def _write_frame(fd: int, obj: dict) -> None:
    write_frame(fd, json.dumps(obj).encode())


class _WorkerProc:
    """Host-side handle of one harness worker."""

    def __init__(self, slot: int, config: dict, python: str):
        self.slot = slot
        self.config = config
        self.proc = subprocess.Popen(
            [python, "-I", "-S", "-c", WORKER_MAIN, "--config", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True,
            env=WORKER_ENV,  # the caller's environment (its secrets) never enters the worker's memory
        )
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        hello = _read_frame(self.rfd, time.monotonic() + 60)
        if not hello or not hello.get("ready"):
            self.kill()
            raise RuntimeError(f"sandbox worker {slot} did not start")
        self.info = hello

    def send(self, job: dict) -> None:
        _write_frame(self.wfd, job)

    def recv(self, timeout_s: float) -> dict:
        # The worker enforces each run's timeout itself; this guards against a stuck worker.
        reply = _read_frame(self.rfd, time.monotonic() + longest_wall_s(timeout_s) + 30)
        if reply is None:
            raise EOFError("sandbox worker exited")
        return reply

    def close(self, grace: float = 2.0) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        self.remove_cgroups()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.remove_cgroups()

    def remove_cgroups(self) -> None:
        if self.config.get("cgroup_name"):
            remove_cgroups(self.config["cgroup_name"])
