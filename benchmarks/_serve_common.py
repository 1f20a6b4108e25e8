"""Shared by the serve benchmarks: a model to serve, and a server on loopback.

`model_path` builds the starter model once into .itercode-cache/bench/ when no
--model is given (quick: seconds; full: the demo's size, minutes).
`Served` starts a server command in its own process group on a free loopback
port, waits for it to answer, and stops it (SIGINT, then SIGKILL of the
group) on exit, so a benchmark never leaves an engine behind.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from codegen.app.server.process import stop_server

ROOT = Path(__file__).resolve().parents[1]
ITERCODE = str(Path(sys.executable).with_name("itercode"))
VLLM = str(Path(sys.executable).with_name("vllm"))


def model_path(model: str | None, full: bool) -> str:
    """``model`` as given, or the starter model built once into the benchmark cache."""
    if model:
        return model
    out = ROOT / ".itercode-cache" / "bench" / ("starter-full" if full else "starter-quick")
    if not (out / "config.json").exists():
        from codegen.starter import build_starter

        print(f"building the {'full' if full else 'quick'} starter model into {out} (once)...", flush=True)
        build_starter(out, seed=0, quick=not full)
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A server process on loopback; ``with Served(cmd_without_port, ready_path="/health") as s: s.base``."""

    def __init__(self, cmd: list[str], *, ready_path: str = "/health", ready_s: float = 600, env: dict | None = None,
                 label: str = "server"):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.cmd = [*cmd, "--port", str(self.port)]
        self.ready_path, self.ready_s, self.label = ready_path, ready_s, label
        self.env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"), **(env or {})}
        self.log = tempfile.NamedTemporaryFile(prefix=f"itercode-bench-{label}-", suffix=".log", delete=False)
        self.proc: subprocess.Popen | None = None
        self.startup_s = 0.0

    def __enter__(self) -> "Served":
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True, env=self.env)
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited with {self.proc.returncode}; log {self.log.name}:\n{self.tail()}")
            try:
                if httpx.get(self.base + self.ready_path, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() - t0 > self.ready_s:
                self.__exit__()
                raise RuntimeError(f"{self.label} not ready after {self.ready_s} s; log {self.log.name}:\n{self.tail()}")
            time.sleep(0.5)
        self.startup_s = time.monotonic() - t0
        return self

    def tail(self, n: int = 3000) -> str:
        self.log.flush()
        return Path(self.log.name).read_bytes()[-n:].decode(errors="replace")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop_server(self.proc)
        self.log.close()


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation; nan for no values."""
    if not values:
        return float("nan")
    v = sorted(values)
    pos = (len(v) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)
