"""Stopping an `itercode serve` (or `vllm serve`) subprocess, for tests and benchmarks."""
from __future__ import annotations

import os
import signal
import subprocess


def stop_server(proc: subprocess.Popen, grace_s: float = 30.0) -> None:
    """SIGINT first (uvicorn shuts down cleanly and its lifespan stops the engine), then kill the group.

    ``proc`` must have been started with ``start_new_session=True`` so that the
    engine's worker processes share its process group.
    """
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
