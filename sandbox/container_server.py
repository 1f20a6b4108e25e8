"""The trusted server that runs as PID 1 inside each sandbox container.

The Docker backend (sandbox/docker_backend.py) starts it and speaks to it over
the container's attached stdin/stdout: length-prefixed JSON, one request (a
job, its limits and a nonce) in, one response (the verdict, the nonce, and
whether the container is still clean) out. It runs on any Python 3.8+ with
the standard library only, because a user may name their own image.

It hosts the shared harness's warm worker (sandbox/harness/, the same
package the process backend runs, unchanged). The worker forks its candidate
zygote before this server reads any request; per job the zygote forks a fresh
candidate in an empty work directory, and the worker hands the tests to its
judge process. Judge and zygote are kept across runs only while provably
untouched (see harness/processes.py); a touched zygote retires the container.

Why PID 1: the init process of a PID namespace cannot be killed from inside
it (SIGKILL and SIGSTOP from inside are ignored, and ``kill(-1, sig)`` skips
it). A candidate that kills everything it can reach cannot take the server
down, and after every run the server itself sends ``kill(-1, SIGKILL)``:
every process of the run, however it forked, setsid() or daemonised, is gone
before the next run starts. A container runs one job at a time.

The protocol stream is out of reach of the run: the harness gives the judge
and the candidate only their own pipes (stdio is /dev/null or a capped pipe),
and the server is not dumpable, so a same-uid process cannot open
/proc/1/fd/1 or ptrace it (children inherit that). Responses also echo the
request's random nonce, which no process of the run is given.

After the run the server kills what is left, empties /work, /tmp and
/dev/shm, and lists what makes the container dirty: a timeout, an
out-of-memory kill, an infra error, a run that broke its sandbox (a killed
test process or zygote: ``provoked``), processes that outlived the run, SysV
IPC or POSIX message queue objects left behind, or anything that could not be
wiped. After answering a dirty run it exits: the backend replaces the
container and never sends it another job. It also exits, mid-run if need be,
when the backend closes its stdin (the owning process is gone).
"""
import ctypes
import json
import os
import select
import signal
import sys
import time
import traceback

# The harness package ships next to this file (in the image: /opt/itercode/harness).
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import worker as harness  # noqa: E402 - needs the path above
from harness.processes import (intact, ipc_leftovers, kill_all_but, kill_everything,  # noqa: E402
                               settled_fingerprint)
from harness.wipe import empty_dir, is_empty  # noqa: E402
from harness.wire import take_frame, write_frame  # noqa: E402

WORK = "/work"
WIPE_DIRS = ("/work", "/tmp", "/dev/shm")
STDERR_KEEP = 4000


def _no_dump():
    """Make this process non-dumpable: /proc/1/* then belongs to root and
    ptrace is refused to same-uid processes without CAP_SYS_PTRACE."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 4
    except Exception:
        pass


def send(obj):
    write_frame(1, json.dumps(obj).encode())


# Bytes of requests read off stdin (during a run, to see end of file behind
# them); recv() takes whole frames from here first.
_early = bytearray()
_running = [False]
_checking = [False]


def recv():
    """The next request, or None at end of file."""
    while True:
        body = take_frame(_early)
        if body is not None:
            return json.loads(body)
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return None
        _early.extend(chunk)


def oom_kills():
    """The container cgroup's OOM-kill counter (v1 or v2), or -1 if unknown."""
    for path, key in (("/sys/fs/cgroup/memory/memory.oom_control", "oom_kill"),
                      ("/sys/fs/cgroup/memory.events", "oom_kill")):
        try:
            with open(path) as f:
                for line in f:
                    name, _, value = line.partition(" ")
                    if name == key:
                        return int(value)
        except OSError:
            continue
    return -1


def start_judge(worker):
    """Have the harness start its judge now, while no candidate exists, and
    return its fingerprint (None when the judge did not settle)."""
    worker.judge.ensure()
    return settled_fingerprint(worker.judge.pid)


def wipe():
    """Empty the writable directories; return what could not be removed.

    Never raises: a run can leave any tree (deep, wide, unreadable, special
    files; see harness/wipe.py), and whatever goes wrong here, however
    unexpected, is reported as "not wiped", which makes the container dirty
    (replaced), never a crash of this server."""
    failed = []
    for top in WIPE_DIRS:
        try:
            failed += empty_dir(top)
        except Exception as e:  # noqa: BLE001 - see the docstring
            failed.append("%s (the wipe failed: %s: %s)" % (top, type(e).__name__, e))
    return failed


def load_worker(seccomp=None):
    """The shared harness's warm worker, created once in this process (PID 1).

    The worker runs here, not in a child, because PID 1 is the one process a
    candidate cannot kill: the harness forks the judge and the candidate from
    it per job, exactly as in the process backend. Namespaces are off: the
    container already is the network, mount, PID and IPC namespace, and
    unshare() is refused without capabilities. ``seccomp`` is the syscall
    filter for candidates ({"bpf": hex, "about": str}, built by the backend).
    """
    # SIGINT would raise KeyboardInterrupt in the judge at whatever moment a
    # candidate chose; ignored here, it is ignored in every process forked.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    worker = harness.Worker({"slot": 0, "namespaces": "off", "cgroup_name": "", "seccomp": seccomp})
    # The candidate zygote (forked in Worker(), before any request was read)
    # shares the candidate's uid here: like the judge, it must look after
    # every run exactly as it does now, or the container is not reused.
    worker.zygote_fingerprint = settled_fingerprint(worker.zygote.pid)
    worker.judge_fingerprint = start_judge(worker)
    return harness, worker


def handle(req, harness, worker):
    """Run one job through the harness; clean up; return the response."""
    job, nonce = dict(req["job"]), req["nonce"]
    if not all(is_empty(d) for d in WIPE_DIRS):  # a container takes a job only when clean: the host's fault
        return {"nonce": nonce, "dirty": ["not clean before the run"], "judge_kept": False,
                "verdict": {"status": harness.INFRA_ERROR, "stderr": "the sandbox container was not clean before the run"}}
    started = time.monotonic()
    before = oom_kills()
    workdir = os.path.join(WORK, "run")
    os.mkdir(workdir, 0o700)
    job["limits"] = dict(req["limits"], _workdir=workdir)
    # No control fd: the backend may already have queued the next request on
    # stdin (pipelining), which the harness would take for "stop". A backend
    # that went away is noticed through SIGIO (see die_with_backend).
    _running[0] = True
    check_backend()  # a SIGIO that came between runs was ignored
    try:
        verdict = worker.run_job(job, control_fd=None)
    finally:
        _running[0] = False
    judge, zygote = worker.judge.pid, worker.zygote.pid
    judge_ok = worker.judge_fingerprint is not None and judge > 0
    leftover = kill_all_but({zygote, judge} if judge_ok else {zygote})
    judge_kept = judge_ok and intact(judge, worker.judge_fingerprint)
    if not judge_kept:
        worker.judge.stop()
        worker.judge_fingerprint = start_judge(worker)
    oom = oom_kills() > before >= 0
    dirty = []
    if verdict.get("provoked"):
        # Inside one container the candidate shares the judge's and the
        # zygote's uid, so it can kill them (e.g. kill(-1, 9)): the run broke
        # its sandbox. The backend confirms that on a fresh container.
        dirty.append("provoked: " + verdict["provoked"][:200])
    elif oom and verdict.get("status") != harness.PASSED:
        verdict["status"] = harness.OOM
    if verdict["status"] in (harness.TIMEOUT, harness.OOM, harness.INFRA_ERROR):
        dirty.append("status " + verdict["status"])
    if oom:
        dirty.append("cgroup oom kill")
    if not intact(zygote, worker.zygote_fingerprint):
        dirty.append("the candidate zygote was touched")
    if leftover:
        dirty.append("%d process(es) outlived the run" % leftover)
    dirty += ipc_leftovers()
    not_wiped = wipe()
    if not_wiped and not verdict.get("provoked"):
        verdict["provoked"] = "the clean-up after the run failed: " + "; ".join(not_wiped[:3])
    dirty += ["not wiped: " + f for f in not_wiped]
    verdict.setdefault("duration_s", time.monotonic() - started)
    return {"nonce": nonce, "verdict": verdict, "dirty": dirty, "judge_kept": judge_kept}


def bytes_waiting(fd):
    """How many bytes can be read from ``fd`` now (0 on a readable fd means end of file)."""
    import array
    import fcntl
    import termios

    buf = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, buf)
    except OSError:
        return -1
    return buf[0]


def check_backend():
    """During a run: move queued request bytes aside; exit if stdin is at end of file.

    Outside a run the main loop's own read sees the end of file. Not
    re-entered: a SIGIO handled inside this function (Python runs handlers
    between any two bytecodes) would read the bytes counted here and leave
    the outer read blocking on an empty pipe."""
    if not _running[0] or _checking[0]:
        return
    _checking[0] = True
    try:
        while True:
            # select first, then count: readable with nothing to read is end
            # of file (counting first would race a request arriving between).
            readable = select.select([0], [], [], 0)[0]
            n = bytes_waiting(0)
            if n > 0:
                _early.extend(os.read(0, n))
                continue
            if readable and n == 0:
                try:
                    os.kill(-1, signal.SIGKILL)
                finally:
                    os._exit(0)
            return
    finally:
        _checking[0] = False


def die_with_backend():
    """Exit as soon as the backend closes our stdin, even in the middle of a run.

    Requests may be queued on stdin ahead of time (pipelining), so "readable"
    alone means nothing; the kernel sends SIGIO whenever stdin changes, and
    the handler exits only on end of file (readable with nothing to read):
    the owning itercode process is gone (SIGKILL included), so every process
    here goes too and the container removes itself.
    """
    import fcntl

    me = os.getpid()

    def on_io(signum, frame):
        if os.getpid() != me:  # a forked child inherited the handler: not ours to act on
            return
        check_backend()

    signal.signal(signal.SIGIO, on_io)
    try:
        fcntl.fcntl(0, fcntl.F_SETOWN, me)
        fcntl.fcntl(0, fcntl.F_SETFL, fcntl.fcntl(0, fcntl.F_GETFL) | os.O_ASYNC)
    except OSError:
        pass  # then the backend's absence is noticed at the next read, after the run


def seccomp_arg(argv):
    """The candidates' syscall filter from ``--seccomp JSON`` on the command
    line (the backend puts it there; an image's own CMD has none)."""
    if "--seccomp" in argv[:-1]:
        return json.loads(argv[argv.index("--seccomp") + 1])
    return {"about": "the container was started without --seccomp"}


def main():
    _no_dump()  # inherited by every process the harness forks
    die_with_backend()
    os.umask(0o077)
    try:
        harness, worker = load_worker(seccomp_arg(sys.argv[1:]))
    except Exception:
        send({"ready": False, "error": traceback.format_exc()[-STDERR_KEEP:]})
        return
    send({"ready": True, "python": sys.version.split()[0], "pid": os.getpid(), "uid": os.getuid(),
          "harness": getattr(harness, "HARNESS_VERSION", "?"), "isolation": worker.describe()})
    while True:
        req = recv()
        if req is None:  # the backend closed our stdin: it is gone or done
            kill_everything()
            return
        try:
            resp = handle(req, harness, worker)
        except Exception:  # after a run started: the backend confirms on a fresh container
            kill_everything()
            reason = "the container server failed: " + traceback.format_exc()[-STDERR_KEEP:]
            resp = {"nonce": req.get("nonce"), "dirty": ["server error"],
                    "verdict": {"status": "error", "provoked": reason, "stderr": reason}}
        send(resp)
        if resp["dirty"]:
            # Never run another job here; the backend replaces this container
            # and runs elsewhere any request it had already queued to us.
            kill_everything()
            return


if __name__ == "__main__":
    main()
