"""Which CPU each sandbox slot runs on.

A run is a chain of hand-offs between one slot's processes (the worker asks
the zygote for a candidate, the judge calls the candidate, the worker takes
the verdict), each waking the next and going to sleep. Kept on one core,
every hand-off is a switch on a warm cache; left to the scheduler, the next
step is often woken on the other core, which has to wake up first, and cores
sit idle between hand-offs. Measured on this project's 2-core machine
(benchmarks/sandbox_throughput.py): pinned slots give the process backend
1.25x the throughput of unpinned ones with 2 workers and ~1.15x with one,
at ~12% less CPU per run; the Docker backend gains ~1.1x.

Executors claim their CPUs with one lock file per CPU (``flock``, released
when the executor closes, is collected or its process dies), so that two
executors on one machine (two itercode commands, the pools of a node's Ray
actors) never pin their slots to the same CPU. Slots are pinned only if each
can have a CPU of its own; otherwise none is, and the scheduler places them.
"""
from __future__ import annotations

import fcntl
import os
import tempfile

LOCK_DIR = os.path.join(tempfile.gettempdir(), "itercode-cpus")


class CpuClaim:
    """The CPU of each of ``workers`` slots (``cpus``: one int per slot, or
    None for every slot when they are not pinned).

    ``pin`` None (the default): claim a free CPU per slot among those this
    process may use, or pin none; True: pin round-robin over those CPUs
    whatever other executors hold; False: never pin.

    >>> CpuClaim(2, pin=False).cpus
    [None, None]
    """

    def __init__(self, workers: int, pin: bool | None = None):
        self.cpus: list[int | None] = [None] * workers
        self._locks: list = []
        allowed = sorted(os.sched_getaffinity(0))
        if pin is True:
            self.cpus = [allowed[slot % len(allowed)] for slot in range(workers)]
        elif pin is None and workers <= len(allowed):
            claimed = []
            for cpu in allowed if _ready_lock_dir() else ():
                lock = _try_lock(cpu)
                if lock is not None:
                    claimed.append(cpu)
                    self._locks.append(lock)
                    if len(claimed) == workers:
                        self.cpus = claimed
                        return
            self.release()  # not enough free CPUs: pin none

    def release(self) -> None:
        """Let other executors have these CPUs (the slots keep their affinity until they stop)."""
        for lock in self._locks:
            lock.close()
        self._locks = []


def _ready_lock_dir() -> bool:
    """Make the lock directory (open to every user's executors); False when out of reach."""
    try:
        os.makedirs(LOCK_DIR, exist_ok=True)
        if os.stat(LOCK_DIR).st_uid == os.geteuid():
            os.chmod(LOCK_DIR, 0o1777)  # any user's executor may claim CPUs too
        return True
    except OSError:
        return False


def _try_lock(cpu: int):
    """An open, exclusively locked file for ``cpu``, or None when another
    executor holds it (or its file is out of reach)."""
    try:
        fd = os.open(os.path.join(LOCK_DIR, f"cpu-{cpu}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None
    if os.fstat(fd).st_uid == os.geteuid():
        os.fchmod(fd, 0o666)  # another user's executor may test the lock too
    lock = os.fdopen(fd, "r+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return lock
    except OSError:
        lock.close()
        return None
