"""The candidate zygote: the only process candidates are forked from.

A candidate forked from a process that once held a job could find that job's
tests in its inherited memory (frames, the garbage collector, or a raw scan
of its own pages). So the worker forks this zygote once, right after its
one-time isolation and *before it receives any job*, and never forks a
candidate itself. The zygote is never sent a job either: per run it gets the
run's limits, its work dir and three pipe ends (SCM_RIGHTS); the candidate
reads its program from the call pipe after it has forked. The zygote holds
nothing of any job, ever, so neither does any candidate.

Protocol on a SOCK_SEQPACKET pair, one message per packet:
worker -> zygote: ``[limits, workdir]`` with fds (call-in read end, reply
write end, output write end): fork a candidate; ``K``: end the run (kill the
candidate, which is the init of the run's PID namespace when there is one,
so every process of the run dies), reap it; zygote -> worker, after ``K``:
``{"exit": code}`` or ``{"error": why}``.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket

from .candidate import SETUP_FAILED, CandidateSetup, candidate_main
from .kernel import CLONE_NEWPID, PR_SET_DUMPABLE, PR_SET_PDEATHSIG, flush_stdio, prctl, setns, unshare


class Zygote:
    """The worker's handle on its zygote."""

    def __init__(self, setup: CandidateSetup, pidns_fd: int):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        flush_stdio()
        pid = os.fork()
        if pid == 0:
            try:
                parent.close()
                _serve(child, setup, pidns_fd)
            finally:
                os._exit(0)
        child.close()
        self.pid, self.sock = pid, parent

    def spawn(self, limits: dict, workdir: str, fds: list[int]) -> None:
        """Fork a candidate for this run (asynchronously: ``finish`` says how it went)."""
        socket.send_fds(self.sock, [json.dumps([limits, workdir]).encode()], fds)

    def finish(self, timeout_s: float = 10.0) -> dict:
        """End the run: ``{"exit": code}``, or ``{"error": why}`` (the zygote is then unusable)."""
        try:
            self.sock.send(b"K")
            if not select.select([self.sock], [], [], timeout_s)[0]:
                return {"error": "the candidate zygote did not answer"}
            raw = self.sock.recv(4096)
            return json.loads(raw) if raw else {"error": "the candidate zygote is gone"}
        except (OSError, ValueError) as exc:
            return {"error": f"the candidate zygote failed: {exc}"}

    def alive(self) -> bool:
        try:
            return os.waitpid(self.pid, os.WNOHANG)[0] == 0
        except ChildProcessError:
            return False

    def stop(self) -> None:
        self.sock.close()
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except (OSError, ChildProcessError):
            pass


def _serve(sock: socket.socket, setup: CandidateSetup, pidns_fd: int) -> None:
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # dies with its worker
    prctl(PR_SET_DUMPABLE, 0)  # a candidate of the same uid can neither trace it nor read its memory
    child, error = -1, ""
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3)
        except OSError:
            msg, fds = b"", []
        if not msg:
            _end(child, setup.pidns)
            return
        if msg == b"K":
            reply = _end(child, setup.pidns) if child > 0 else {"error": error or "no candidate was started"}
            sock.send(json.dumps(reply).encode())
            child, error = -1, ""
            continue
        try:
            limits, workdir = json.loads(msg)
            if len(fds) != 3:
                raise ValueError(f"expected 3 fds, got {len(fds)}")
            child = _fork(setup, pidns_fd, limits, workdir, fds, sock)
        except (OSError, ValueError) as exc:
            error = f"could not start the candidate: {exc}"
        for fd in fds:
            os.close(fd)


def _fork(setup: CandidateSetup, pidns_fd: int, limits: dict, workdir: str, fds: list[int], sock) -> int:
    if setup.pidns:
        unshare(CLONE_NEWPID)  # the next child is the init of a fresh PID namespace
    pid = -1
    try:
        pid = os.fork()
    finally:
        if setup.pidns and pid != 0:
            setns(pidns_fd, CLONE_NEWPID)
    if pid == 0:
        req_r, resp_w, out_w = fds
        try:
            sock.close()
            call_fds = setup.enter(limits, workdir, out_w, req_r, resp_w)
        except BaseException as exc:  # noqa: BLE001
            for fd in (1, out_w):
                try:
                    os.write(fd, f"sandbox setup failed: {exc!r}\n".encode())
                    break
                except OSError:
                    pass
            os._exit(SETUP_FAILED)
        candidate_main(*call_fds)
    return pid


def _end(child: int, pidns: bool) -> dict:
    if child <= 0:
        return {"error": "no candidate was started"}
    for kill in ((os.kill,) if pidns else (os.killpg, os.kill)):
        try:
            kill(child, signal.SIGKILL)  # the PID namespace's init: every process of the run dies
        except OSError:
            pass
    while True:
        try:
            _, status = os.waitpid(child, 0)
            return {"exit": os.waitstatus_to_exitcode(status)}
        except InterruptedError:
            continue
        except ChildProcessError:
            return {"error": "the candidate could not be reaped"}
