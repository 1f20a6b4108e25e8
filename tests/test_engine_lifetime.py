"""Engines die with their owner, SIGKILL included, and the engine cache shares them.

- the reaper alone (no vLLM): an owner that started a process ignoring SIGTERM,
  with a grandchild under it, is killed with SIGKILL; both are gone soon after;
  a normal stop kills nothing;
- the real thing: `itercode sample --backend vllm` (without
  VLLM_CPU_KVCACHE_SPACE, and showing none of vLLM's log lines) and `itercode
  serve` are killed with SIGKILL mid-run; no EngineCore, Worker or resource
  tracker is left a few seconds later;
- the engine cache: two samplers on one model share one engine, which stops
  with the last close.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
# The engines below must start on the factory's own memory budget, as a user's would.
ENV.pop("VLLM_CPU_KVCACHE_SPACE", None)

OWNER = textwrap.dedent('''
    import multiprocessing, signal, subprocess, sys, time
    from codegen.samplers.reaper import Reaper

    STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"

    def engine_core():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as vLLM's EngineCore does while it works
        subprocess.Popen([sys.executable, "-c", STUBBORN])  # its worker
        time.sleep(600)

    if __name__ == "__main__":
        reaper = Reaper.start()
        core = multiprocessing.get_context("spawn").Process(target=engine_core)
        core.start()
        while len(__import__("psutil").Process(core.pid).children()) < 1:
            time.sleep(0.05)
        reaper.ready()
        print("ready", flush=True)
        if sys.argv[1] == "stop":
            reaper.stop()
            print("stopped", reaper.proc.returncode, flush=True)
        time.sleep(600)
''')


def _start_owner(tmp_path: Path, mode: str) -> subprocess.Popen:
    script = tmp_path / "owner.py"
    script.write_text(OWNER)
    proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _descendants(pid: int) -> list:
    return psutil.Process(pid).children(recursive=True)


def _left_after(procs: list, seconds: float) -> list[str]:
    """The processes of ``procs`` still running after ``seconds`` (zombies count as gone)."""
    deadline = time.monotonic() + seconds
    alive = list(procs)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        time.sleep(0.1)
    return [f"{p.pid} {p.name()}" for p in alive if _running(p)]


def _running(p) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_reaper_kills_what_the_owner_started_when_the_owner_is_killed(tmp_path):
    owner = _start_owner(tmp_path, "kill")
    procs = _descendants(owner.pid)
    names = [p.cmdline()[-1] for p in procs]
    assert len(procs) >= 3, names  # the watcher, the "EngineCore" and its "worker" (and maybe a resource tracker)
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    assert _left_after(procs, 5) == []


def test_reaper_stop_kills_nothing(tmp_path):
    owner = _start_owner(tmp_path, "stop")
    try:
        assert owner.stdout.readline().split() == ["stopped", "0"]  # the watcher exited at once
        procs = _descendants(owner.pid)
        assert procs and all(_running(p) for p in procs)
    finally:
        procs = _descendants(owner.pid)
        os.killpg(owner.pid, signal.SIGKILL)
        owner.wait()
        for p in procs:  # the stopped watcher no longer cleans up: do it here
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_samplers_on_one_model_share_one_engine_until_the_last_close(starter_model):
    from codegen.samplers import SamplingParams, make_sampler
    from codegen.samplers.engine import _ENGINES

    first = make_sampler("hf", str(starter_model), batch_size=8)
    second = make_sampler("hf", str(starter_model), batch_size=2)
    engine = first.engine
    assert second.engine is engine and engine.users >= 2
    first.close()
    assert engine.alive
    [[c]] = second.generate(["def f(x):\n"], SamplingParams(n=1, temperature=0, max_tokens=4))
    assert c.num_tokens >= 1
    second.close()
    if engine.users == 0:  # nobody else in this test process holds it
        assert not engine.alive and engine not in _ENGINES.values()


# ---- the real engine -------------------------------------------------------------


def _engine_processes(owner: subprocess.Popen, timeout_s: float) -> list:
    """The owner's processes once its vLLM engine is up (EngineCore and Worker among them)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if owner.poll() is not None:
            pytest.fail(f"the owner exited with {owner.returncode} before its engine was up")
        procs = _descendants(owner.pid)
        names = {p.name() for p in procs if _running(p)}
        if {"VLLM::EngineCore", "VLLM::Worker"} <= names:
            return procs
        time.sleep(0.5)
    pytest.fail(f"no vLLM engine under the owner after {timeout_s} s")


def _kill_and_check(owner: subprocess.Popen, procs: list) -> None:
    os.kill(owner.pid, signal.SIGKILL)
    owner.wait()
    left = _left_after(procs, 10)
    for p in procs:  # never leave them to the next test, whatever the assertion says
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    assert left == [], f"still running 10 s after the owner was killed: {left}"


@pytest.mark.vllm
@pytest.mark.slow
def test_sample_killed_mid_run_leaves_no_engine_process(starter_model, tmp_path):
    pytest.importorskip("vllm")
    cmd = [sys.executable, "-m", "codegen.app.cli", "sample", "--backend", "vllm", "--model", str(starter_model),
           "--problems", "synthetic:heldout", "--n", "64", "--max-tokens", "256", "--out", str(tmp_path / "s.jsonl")]
    owner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                             start_new_session=True)
    try:
        procs = _engine_processes(owner, 400)
        # Sampling has begun when the progress bar shows (stderr is the terminal's again after the start).
        before = []
        for line in iter(owner.stderr.readline, ""):
            if "vllm generate" in line:
                break
            before.append(line)
        procs = _descendants(owner.pid) or procs
        # vLLM's own lines (Triton, NUMA binding, tcmalloc, chunked prefill...) stayed in its log file.
        assert [line.split()[0] for line in before if line.strip()] == ["sampling"], before
    except BaseException:
        os.killpg(owner.pid, signal.SIGKILL)
        raise
    _kill_and_check(owner, procs)
    assert not (tmp_path / "s.jsonl").exists()


@pytest.mark.vllm
@pytest.mark.slow
def test_serve_killed_leaves_no_engine_process(starter_model, tmp_path):
    pytest.importorskip("vllm")
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "codegen.app.cli", "serve", "--backend", "vllm", "--model", str(starter_model),
           "--port", str(port), "--log-level", "warning"]
    owner = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV,
                             start_new_session=True)
    try:
        _engine_processes(owner, 400)
        deadline = time.monotonic() + 300
        while not _answers(f"http://127.0.0.1:{port}/health", httpx):
            assert time.monotonic() < deadline and owner.poll() is None, "itercode serve never answered /health"
            time.sleep(0.5)
        procs = _descendants(owner.pid)
    except BaseException:
        os.killpg(owner.pid, signal.SIGKILL)
        raise
    _kill_and_check(owner, procs)


def _answers(url: str, httpx) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
