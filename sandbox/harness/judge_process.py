"""The worker's handle on its long-lived judge process.

The judge runs as its own uid (when the worker is root), is not dumpable
(nobody attaches to it or reads its memory) and dies with its worker. Per
job it receives the two call pipes (SCM_RIGHTS) and the job as one frame,
and answers with the verdict frame (see judge.judge_serve).
"""
from __future__ import annotations

import json
import os
import resource
import select
import signal
import socket
import time

from .judge import judge_serve
from .kernel import PR_SET_DUMPABLE, PR_SET_PDEATHSIG, close_fds_except, flush_stdio, move_fds, prctl, set_rlimit
from .wire import MAX_CONTROL_FRAME, FrameTooLarge, read_frame, write_frame


class JudgeProcess:
    def __init__(self, uid: int | None):
        self.uid = uid
        self.pid, self.sock = -1, None

    @property
    def running(self) -> bool:
        return self.sock is not None

    def ensure(self) -> None:
        """A live judge: one killed from outside (e.g. a container server's sweep) is replaced."""
        if self.sock is not None and self._gone():
            self.stop()
        if self.sock is None:
            self.start()

    def start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        flush_stdio()
        pid = os.fork()
        if pid == 0:
            try:
                parent.close()
                os.chdir("/")
                if self.uid is not None:
                    os.setgroups([])
                    os.setresgid(self.uid, self.uid, self.uid)
                    os.setresuid(self.uid, self.uid, self.uid)
                prctl(PR_SET_DUMPABLE, 0)  # nobody attaches to, or reads the memory of, the judge
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                set_rlimit(resource.RLIMIT_CORE, 0)
                set_rlimit(resource.RLIMIT_FSIZE, 1 << 20)
                set_rlimit(resource.RLIMIT_AS, 4 << 30)
                devnull = os.open("/dev/null", os.O_RDWR)
                move_fds({devnull: 0, child.fileno(): 3})
                os.dup2(0, 1)
                os.dup2(0, 2)
                close_fds_except({0, 1, 2, 3})
                judge_serve(socket.socket(fileno=3))
            finally:
                os._exit(0)
        child.close()
        self.pid, self.sock = pid, parent

    def send(self, job: dict, req_w: int, resp_r: int) -> None:
        """Hand the judge one job and the candidate's call pipes."""
        socket.send_fds(self.sock, [b"J"], [req_w, resp_r])
        write_frame(self.sock.fileno(), json.dumps(job).encode())

    def reply(self, deadline: float) -> dict | None:
        """The judge's answer for the current job (None: no answer by the deadline)."""
        fd = self.sock.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            raw = read_frame(fd, MAX_CONTROL_FRAME)
            return None if raw is None else json.loads(raw)
        except (OSError, ValueError, FrameTooLarge):
            return None

    def stop(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            while True:
                try:
                    os.waitpid(self.pid, 0)
                except ChildProcessError:
                    break
                except InterruptedError:
                    continue
                break
            self.pid = -1

    def _gone(self) -> bool:
        try:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0
