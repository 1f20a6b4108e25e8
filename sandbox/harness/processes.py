"""The processes of one sandbox container, as its server (PID 1) sees them:
listing and killing every other process, and a fingerprint of a process it
keeps across runs (the warm judge, the candidate zygote) to tell whether a run
touched it. Standard library only; shipped in the image with the harness.

Why fingerprints: the harness keeps one judge process per worker for many
jobs (it caches compiled test suites), and one zygote that forks the
candidates. In the process backend the candidate runs under another uid and
cannot touch either; in a container they share one, so a candidate could
signal them, stop them, lower their priority or shrink their rlimits
(prlimit needs only the same uid), to spoil the *next* run. So after every
run each is kept only if it looks exactly as it did when it started, before
any candidate existed: asleep waiting for work, no signal pending, not
traced, same rlimits, nice value, scheduling policy and CPU set. No candidate
process is alive at the time of the check, so nothing can change them after it.
"""
import os
import signal
import time


def other_pids():
    me = os.getpid()
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != me:
            pids.append(int(name))
    return pids


def kill_everything():
    """SIGKILL every process but this one and reap them all; return how many there were."""
    leftover = len(other_pids())
    for _ in range(100):
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Every process in the container is a child of PID 1 or becomes one
        # when its parent dies, so blocking waits collect them all.
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
            except InterruptedError:
                continue
        if not other_pids():
            break
    return leftover


def kill_all_but(spare):
    """SIGKILL every process but this one and the ``spare`` pids; reap them; return how many there were."""
    leftover = len([p for p in other_pids() if p not in spare])
    for _ in range(1000):
        pids = [p for p in other_pids() if p not in spare]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap_ready()
        time.sleep(0.0005)
    _reap_ready()
    return leftover


def _reap_ready():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def process_state(pid):
    """The judge's observable settings, or None if it is gone."""
    try:
        with open("/proc/%d/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read().rsplit(")", 1)[1].split()
        with open("/proc/%d/limits" % pid) as f:
            limits = f.read()
    except (OSError, ValueError):
        return None
    return {
        "state": status.get("State", "?").split()[0],
        "traced": status.get("TracerPid", "0").strip() != "0",
        "pending": int(status.get("SigPnd", "0"), 16) | int(status.get("ShdPnd", "0"), 16),
        # fields 19 (nice), 40 (rt_priority), 41 (policy) of /proc/PID/stat
        "fingerprint": (stat[16], stat[37], stat[38], status.get("Cpus_allowed_list", "").strip(), limits),
    }


def settled_fingerprint(pid):
    """Wait until ``pid`` sleeps waiting for work (its own setup is done) and
    return ``(pid, fingerprint)``; None when it did not settle."""
    for _ in range(2000):
        state = process_state(pid) if pid > 0 else None
        if state is None:
            return None
        if state["state"] == "S":
            return (pid, state["fingerprint"])
        time.sleep(0.0005)
    return None


def intact(pid, known):
    """True when ``pid`` is the process recorded in ``known`` and looks exactly as it did then."""
    if known is None or pid != known[0]:
        return False  # the harness replaced it during the run: start a clean one
    deadline = time.monotonic() + 0.5  # having answered, it may take a moment (a busy host) to wait again
    while True:
        state = process_state(pid)
        if state is None or state["state"] != "R" or time.monotonic() > deadline:
            break
        time.sleep(0.0005)
    return (state is not None and state["state"] == "S" and not state["traced"] and not state["pending"]
            and state["fingerprint"] == known[1])


def ipc_leftovers():
    """SysV IPC objects or POSIX message queues a run left in this container."""
    found = []
    for kind in ("shm", "sem", "msg"):
        try:
            with open("/proc/sysvipc/" + kind) as f:
                if len(f.read().splitlines()) > 1:
                    found.append("sysv " + kind)
        except OSError:
            pass
    try:
        if os.listdir("/dev/mqueue"):
            found.append("mqueue")
    except OSError:
        pass
    return found
