"""The candidate side: the process that runs the model's program.

It loads the program (its top-level code runs), looks up the entry point and
then serves calls: ``call`` frames in on one pipe, answers out on another,
as plain data. It never holds the tests: it is forked from the zygote, which
never received any job (see zygote.py).
"""
from __future__ import annotations

import builtins
import json
import math
import os
import resource
import signal
import sys
import traceback

from .kernel import (CLONE_NEWIPC, PR_SET_NO_NEW_PRIVS, PR_SET_PDEATHSIG, install_seccomp, move_fds, prctl,
                     set_rlimit, unshare)
from .plaindata import NotPlainData, dumps, loads
from .wire import MAX_DATA_FRAME, read_frame, write_frame

MAX_PROGRAM = 1 << 20  # bytes of program text: the worker queues it in a pipe before the candidate exists
SETUP_FAILED = 121  # exit code of a candidate process whose isolation setup failed

class _CappedStream:
    """sys.stdout/sys.stderr of the candidate: forwards to a fd until ``cap``
    characters, then discards, so a chatty but correct program is not slowed
    down by the pipe (fd-level writes are capped by the worker as well)."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, fd: int, budget: list):
        self._fd, self._budget = fd, budget

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        left = self._budget[0]
        if left > 0:
            part = s[:left]
            self._budget[0] = left - len(part)
            try:
                os.write(self._fd, part.encode("utf-8", "replace"))
            except OSError:
                self._budget[0] = 0
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def writable(self):
        return True


def _send(fd: int, obj) -> None:
    write_frame(fd, dumps(obj))


def candidate_main(req_fd: int, resp_fd: int) -> None:
    """Run inside the candidate process (already isolated): read the program
    (the first frame on the call pipe), load it, then answer calls until the
    judge closes the pipe. Never returns."""
    try:
        raw = read_frame(req_fd, MAX_PROGRAM + 4096)
        if raw is None:
            os._exit(0)
        program, entry_point = json.loads(raw)
        namespace = {"__name__": "__candidate__", "__builtins__": builtins}
        try:
            code = compile(program, "<candidate>", "exec")
            exec(code, namespace)
        except MemoryError:
            _send(resp_fd, ("load_oom", "MemoryError while loading the program"))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: a hack is a load error
            tb = "".join(traceback.format_exception_only(type(exc), exc))[-4000:]
            _send(resp_fd, ("load_error", tb))
            os._exit(0)
        fn = namespace.get(entry_point)
        if not callable(fn):
            _send(resp_fd, ("load_error", f"the program does not define a function named {entry_point!r}"))
            os._exit(0)
        _send(resp_fd, ("ready",))
        while True:
            raw = read_frame(req_fd, MAX_DATA_FRAME)
            if raw is None:
                os._exit(0)
            args, kwargs = loads(raw)
            try:
                value = fn(*args, **kwargs)
                try:
                    payload = dumps(("ok", value))
                except NotPlainData as exc:
                    payload = dumps(("bad_return", str(exc)))
                except (ValueError, RecursionError) as exc:
                    payload = dumps(("bad_return", f"{type(exc).__name__}: {exc}"[:500]))
            except MemoryError:
                payload = dumps(("exc", "MemoryError", ""))
            except BaseException as exc:  # noqa: BLE001 - report every failure as data
                try:
                    name, msg = type(exc).__name__, str(exc)[:1000]
                except BaseException:  # noqa: BLE001 - a hostile __str__
                    name, msg = "Exception", "<unprintable>"
                payload = dumps(("exc", str(name)[:100], str(msg)))
            if len(payload) > MAX_DATA_FRAME:
                payload = dumps(("bad_return", f"result of {len(payload)} bytes exceeds the cap"))
            write_frame(resp_fd, payload)
    except BaseException:  # noqa: BLE001
        os._exit(3)
    os._exit(0)


class CandidateSetup:
    """How a freshly forked candidate isolates itself: made once in the
    worker (before the zygote is forked), used in every run.

    ``enter`` runs once per run in a fresh fork: it avoids `import`
    statements and new objects, since each page it touches is a copy-on-write
    fault (measured as the bulk of a run's cost)."""

    def __init__(self, uid: int | None, pidns: bool, cgroups: bool, guarded_host: bool, seccomp_bpf=None):
        self.uid, self.pidns, self.cgroups, self.guarded_host = uid, pidns, cgroups, guarded_host
        self.seccomp_bpf = seccomp_bpf
        self.devnull = os.open("/dev/null", os.O_RDWR)
        # The run's stdout/stderr objects, made once: a fork gets its own copy.
        self.budget = [0]
        self.streams = (_CappedStream(1, self.budget), _CappedStream(2, self.budget))

    def enter(self, limits: dict, workdir: str, out_w: int, req_r: int, resp_w: int) -> tuple[int, int]:
        """In the forked candidate (still root): finish isolation, drop to
        the slot's uid, arrange fds. Returns the call fds."""
        if self.pidns:
            unshare(CLONE_NEWIPC)  # SysV IPC objects die with the run
        else:
            os.setpgid(0, 0)  # without a PID namespace the run is killed by process group
        os.chdir(workdir)
        # fds first: F_DUPFD above 64 must happen before RLIMIT_NOFILE may drop below it.
        move_fds({self.devnull: 0, out_w: 1, req_r: 3, resp_w: 4})
        os.dup2(1, 2)
        os.closerange(5, 1 << 20)  # one close_range(2) call
        cpu = int(math.ceil(limits["timeout_s"])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        set_rlimit(resource.RLIMIT_AS, limits["memory_mb"] << 20)
        set_rlimit(resource.RLIMIT_FSIZE, limits["max_file_mb"] << 20)
        set_rlimit(resource.RLIMIT_NOFILE, limits["max_open_files"])
        set_rlimit(resource.RLIMIT_CORE, 0)
        if self.cgroups:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")  # the run is what the memory limit's OOM killer takes
            os.close(fd)
        if self.uid is not None:
            os.setgroups([])
            os.setresgid(self.uid, self.uid, self.uid)
            set_rlimit(resource.RLIMIT_NPROC, limits["max_processes"])
            os.setresuid(self.uid, self.uid, self.uid)
        if not self.guarded_host:
            # Every mount is nosuid and the host sweeps the slot's cgroup when
            # a worker dies; without those, the process has to guard itself.
            prctl(PR_SET_NO_NEW_PRIVS, 1)
        if not self.guarded_host:
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        self.budget[0] = limits["max_output_kb"] << 10
        sys.stdout = sys.__stdout__ = self.streams[0]
        sys.stderr = sys.__stderr__ = self.streams[1]
        if self.seccomp_bpf:  # last: the setup above needs calls the filter refuses (unshare)
            install_seccomp(self.seccomp_bpf)
        return 3, 4
