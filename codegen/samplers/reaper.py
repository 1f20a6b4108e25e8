"""Engine processes die with their owner, SIGKILL included.

vLLM runs its engine in child processes (the EngineCore, and on the CPU a
Worker under it) beside a multiprocessing resource tracker. When the owner is
killed with SIGKILL they stay: the EngineCore ignores SIGTERM while it works,
the Worker follows it only after its current step, and the tracker waits for
both. A `Reaper` is a small watcher process started just before an engine.
It notes the processes the owner starts until the engine is up (`ready`);
when the owner dies without `stop`, it SIGKILLs them and everything under
them, then exits. It runs in its own session and ignores SIGINT and SIGHUP,
so that a terminal's Ctrl-C or hang-up, or a kill of the owner's process
group, reaches the owner but not the watcher.

Why not the alternatives: prctl(PR_SET_PDEATHSIG) must be called inside the
child, which vLLM starts with "spawn" on the CPU (a fresh interpreter) and
may fork on a GPU, and it fires when the *thread* that started the child
ends, not the process. Keeping the engine in-process
(VLLM_ENABLE_V1_MULTIPROCESSING=0) halved sampling throughput on this CPU,
and vLLM's AsyncLLM runs its EngineCore in a process of its own anyway.

The watcher is ``python -m codegen.samplers.reaper OWNER_PID KNOWN_PID...``;
it reads "ready" and "stop" lines on stdin.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 0.2  # how often the owner is checked: it is cheap
NOTE_S = 1.0  # how often its children are listed while the engine starts: a scan of /proc costs ~10 ms


class Reaper:
    """The watcher for one engine of this process."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    @classmethod
    def start(cls) -> "Reaper":
        """Start watching this process; call before the engine starts its processes."""
        import psutil  # optional: it comes with vLLM, whose engines are the ones watched

        known = [str(p.pid) for p in psutil.Process().children()]
        # The watcher imports this module: give it the directory codegen was imported from.
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "codegen.samplers.reaper", str(os.getpid()), *known],
                                stdin=subprocess.PIPE, start_new_session=True, text=True, env=env)
        return cls(proc)

    def ready(self) -> None:
        """The engine is up: the processes started so far are its own."""
        if self.proc.poll() is not None:
            logging.getLogger("itercode").warning(
                "the engine's watcher exited early (code %s): its processes may outlive this one if it is killed",
                self.proc.returncode)
        self._say("ready")

    def stop(self) -> None:
        """The engine stopped normally: the watcher exits and kills nothing."""
        self._say("stop")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _say(self, word: str) -> None:
        try:
            self.proc.stdin.write(word + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the watcher is gone already


def watch(owner_pid: int, known: set[int]) -> int:
    """The watcher's loop: note the owner's new children until "ready"; kill them if the owner dies first."""
    import psutil  # optional: it comes with vLLM, whose engines are the ones watched

    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        owner = psutil.Process(owner_pid)
    except psutil.NoSuchProcess:
        return 0
    known |= {os.getpid()}
    noted: dict[int, psutil.Process] = {}
    noting, stdin, noted_at = True, sys.stdin.fileno(), 0.0
    while True:
        if noting and time.monotonic() - noted_at >= NOTE_S:
            _note_children(owner, known, noted)
            noted_at = time.monotonic()
        if not _alive(owner):
            _kill_trees(noted.values())
            return 0
        words, stdin = _read_words(stdin)
        if "ready" in words:
            _note_children(owner, known, noted)
            noting = False
        if "stop" in words:
            return 0


def _alive(proc) -> bool:
    """Running and not a zombie: a killed owner stays a zombie until its parent reaps it."""
    import psutil  # optional: it comes with vLLM, whose engines are the ones watched

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _note_children(owner, known: set[int], noted: dict) -> None:
    import psutil  # optional: it comes with vLLM, whose engines are the ones watched

    try:
        for child in owner.children():
            if child.pid not in known and child.pid not in noted:
                noted[child.pid] = child  # psutil.Process remembers the start time: a reused pid is not it
    except psutil.NoSuchProcess:
        pass


def _kill_trees(roots) -> None:
    import psutil  # optional: it comes with vLLM, whose engines are the ones watched

    victims = []
    for root in roots:
        try:
            if root.is_running():
                victims += [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for proc in victims:  # parents first, so none starts a replacement
        try:
            proc.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=5)


def _read_words(fd: int | None) -> tuple[list[str], int | None]:
    """The words the owner wrote within POLL_S, and the descriptor (None once the owner closed it)."""
    ready, _, _ = select.select([fd] if fd is not None else [], [], [], POLL_S)
    if not ready:
        return [], fd
    data = os.read(fd, 4096)
    # End of input: the owner closed the pipe or died; keep watching the owner itself.
    return data.decode().split(), (fd if data else None)


if __name__ == "__main__":
    sys.exit(watch(int(sys.argv[1]), {int(p) for p in sys.argv[2:]}))
