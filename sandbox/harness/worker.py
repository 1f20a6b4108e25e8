"""The warm worker: one sandbox slot. It isolates itself once (see
isolation.py), forks the candidate zygote before it receives any job (see
zygote.py), keeps a long-lived judge, and runs one job at a time: the
zygote forks the candidate, the judge runs the tests against it, the worker
waits, ends the run, wipes the scratch dirs and answers.

It speaks length-prefixed JSON frames with the host: one ready frame (what
isolation it got), then a verdict frame per job frame.

Who is to blame: a fault before the candidate exists (no judge, no zygote,
a dirty scratch dir) is the host's, ``infra_error``. A failure after the run
started (the judge dies without a verdict, the run's processes cannot be
reaped, the clean-up fails) could have been provoked by the run: the verdict
says ``error`` with ``provoked`` naming the reason, and ``retire`` asks the
host for a fresh worker, on which the host runs the job once more to confirm.
"""
from __future__ import annotations

import fcntl
import gc
import json
import os
import select
import signal
import sys
import time

from .candidate import MAX_PROGRAM, SETUP_FAILED, CandidateSetup
from .isolation import Isolation
from .judge import ERROR, INFRA_ERROR, OOM, PASSED, TIMEOUT, solution_imports
from .judge_process import JudgeProcess
from .kernel import libc, seccomp_from_config
from .runqueue import MAX_GIVEN_BACK, waited_for_cpu_s
from .wipe import empty_dir, is_empty, remove_tree
from .wire import MAX_CONTROL_FRAME, encode_frame, read_frame, write_frame
from .zygote import Zygote

HARNESS_VERSION = "4"  # 4: a timeout does not count the time a run waited for a CPU
F_SETPIPE_SZ = 1031

SAFE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONHASHSEED": "0",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}

# Modules most candidate programs import, loaded once in the warm worker so a
# run's `import` costs nothing (children inherit them through fork). Kept
# short on purpose: every extra module makes each fork and each run's
# copy-on-write faults dearer (measured: the longer list with decimal,
# hashlib, datetime, unicodedata... cost ~10% more CPU per run); the rest are
# imported from disk by the runs that need them.
# (Not `random`: its at-fork hook reseeds in every child, ~40 page faults and
# ~0.15 ms per run; programs that want it import it.)
PRELOAD = ("typing", "math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string",
           "copy", "operator", "resource", "fcntl", "socket")


class HostFault(Exception):
    """The sandbox failed before the run started: the host's fault."""


class Provoked(Exception):
    """The sandbox failed after the run started: possibly the run's doing."""


class Worker:
    """One warm worker slot. ``config`` keys (all optional):

    slot (int), cpu (int: the CPU this slot's processes run on; absent or
    None: any), candidate_uid / judge_uid (int, used when running as root),
    namespaces ("auto" | "on" | "off"), root (host paths a run may see; see
    isolation.py), cgroup_name (str: cgroup v1 group under memory/ and pids/
    to create for this slot, "" for none), tmpfs_mb (size of the private
    /tmp and /dev/shm each), seccomp ({"bpf": hex, "about": str}: the syscall
    filter every candidate installs last, from sandbox/syscall_filter.py;
    see kernel.seccomp_from_config).
    """

    def __init__(self, config: dict):
        self.slot = int(config.get("slot", 0))
        self.cpu, pin_note = _pin(config.get("cpu"))  # first: the judge, zygote and every run inherit it
        self.is_root = os.geteuid() == 0
        self.candidate_uid = int(config.get("candidate_uid", 65534)) if self.is_root else None
        self.judge_uid = int(config.get("judge_uid", 65533)) if self.is_root else None
        self.iso = Isolation(config, self.candidate_uid)
        if pin_note:
            self.iso.notes.append(pin_note)
        for name in PRELOAD:
            try:
                __import__(name)
            except ImportError:
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Work done once here rather than in every run: the environment is
        # scrubbed (the host already started us with SAFE_ENV and eager
        # symbol binding alone, so the process's environment block holds no
        # secret either), the worker
        # leads its own session (no controlling terminal for any run), the
        # libc entry points are resolved.
        os.environ.clear()
        os.environ.update(SAFE_ENV)
        if os.getsid(0) != os.getpid():
            try:
                os.setsid()
            except OSError:
                pass
        for name in ("unshare", "setns", "mount", "prctl", "syscall"):
            getattr(libc(), name)
        seccomp_bpf, self.seccomp = seccomp_from_config(config.get("seccomp"))
        self.setup = CandidateSetup(self.candidate_uid, self.iso.pidns, bool(self.iso.cgroups),
                                    guarded_host=self.iso.readonly and bool(self.iso.cgroups), seccomp_bpf=seccomp_bpf)
        self.judge = JudgeProcess(self.judge_uid)
        self._own_workdir = False
        self._scratch_clean = False  # known empty: our own wipe after the last run emptied it
        gc.collect()
        gc.freeze()  # keep the warm heap shared with forked children
        self.zygote = Zygote(self.setup, self.iso.pidns_fd)  # before any job reaches this process

    def describe(self) -> dict:
        return {"slot": self.slot, "cpu": self.cpu, "pid": os.getpid(), "root": self.is_root, **self.iso.describe(),
                "candidate_uid": self.candidate_uid, "judge_uid": self.judge_uid,
                "seccomp": self.seccomp, "zygote": True, "version": HARNESS_VERSION}

    def close(self) -> None:
        """Stop the judge and the zygote and kill what is left in the slot's
        cgroups (the host removes the groups: after the chroot they are out of reach)."""
        self.judge.stop()
        self.zygote.stop()
        self.iso.kill_cgroups(spare={os.getpid()})

    # -- one run ---------------------------------------------------------------
    def run_job(self, job: dict, control_fd: int | None = None) -> dict:
        """Judge one job; return the verdict dict. Never raises for a bad program."""
        t0 = time.monotonic()
        try:
            verdict = self._run(job, job["limits"], t0, control_fd)
        except Provoked as exc:
            self.judge.stop()
            verdict = {"status": ERROR, "tests_passed": 0, "tests_total": 0, "stderr": str(exc),
                       "provoked": str(exc), "retire": True}
        except Exception as exc:  # noqa: BLE001 - HostFault and anything unforeseen before the run
            self.judge.stop()
            verdict = {"status": INFRA_ERROR, "tests_passed": 0, "tests_total": 0, "retire": True,
                       "stderr": f"sandbox failure: {type(exc).__name__}: {exc}"}
        verdict["job_id"] = job.get("job_id", "")
        verdict["duration_s"] = round(time.monotonic() - t0, 6)
        return verdict

    def _prepare(self, limits: dict) -> str:
        """The host's part, before any candidate exists; returns the run's work dir."""
        if not self.zygote.alive():
            raise HostFault("the candidate zygote is gone")
        self.judge.ensure()
        self.iso.apply_limits(limits)
        self._own_workdir = False
        if limits.get("_workdir"):  # the caller made (and cleans) the run's directory
            return limits["_workdir"]
        if not self.iso.scratch:  # no private /tmp: a fresh directory per run, removed afterwards
            import tempfile

            self._own_workdir = True
            workdir = tempfile.mkdtemp(prefix="itercode-run-")
            if self.candidate_uid is not None:
                os.chown(workdir, self.candidate_uid, self.candidate_uid)
            return workdir
        # A worker takes a job only when clean: checked before its first job;
        # after that its own wipe (of a run whose processes were all dead)
        # either emptied the dirs or retired the worker.
        if not self._scratch_clean and not all(is_empty(top) for top in self.iso.scratch):
            raise HostFault(f"the scratch dirs {self.iso.scratch} were not clean before the run")
        self._scratch_clean = False
        return self.iso.scratch[0]

    def _run(self, job: dict, limits: dict, t0: float, control_fd: int | None) -> dict:
        program = json.dumps([job["program"], job["entry_point"]]).encode()
        if len(program) > MAX_PROGRAM:
            return {"status": ERROR, "tests_passed": 0, "tests_total": 0,
                    "stderr": f"the program is {len(program)} bytes, over the sandbox's cap of {MAX_PROGRAM}"}
        workdir = self._prepare(limits)
        oom_before = self.iso.oom_kills()
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        if len(program) > 60_000:
            fcntl.fcntl(req_w, F_SETPIPE_SZ, len(program) + 8)
        os.write(req_w, encode_frame(program))  # fits the pipe: the candidate reads it once it exists
        try:
            self.zygote.spawn(limits, workdir, [req_r, resp_w, out_w])
        except OSError as exc:
            raise HostFault(f"could not reach the candidate zygote: {exc}") from None
        finally:
            for fd in (req_r, resp_w, out_w):
                os.close(fd)
        try:
            judge_job = {k: job[k] for k in ("job_id", "tests", "entry_point", "trusted_prefix") if k in job}
            judge_job["solution_imports"] = solution_imports(job["program"], job["tests"])  # modules the tests may use
            try:
                self.judge.send(judge_job, req_w, resp_r)
            except OSError as exc:  # the candidate already runs: in a container it can kill the judge at load
                raise Provoked(f"the test process could not be reached: {exc}") from None
            os.close(req_w)
            os.close(resp_r)
            req_w = resp_r = -1
            result, output, timed_out, aborted, given_back = self._wait(out_r, t0, limits["timeout_s"],
                                                                        limits["max_output_kb"] << 10, control_fd)
        finally:
            ending = self.zygote.finish()
            for fd in (req_w, resp_r):
                if fd >= 0:
                    os.close(fd)
        if not self.iso.pidns:
            # No PID namespace: whatever left the run's process group (setsid)
            # is swept out of the slot's cgroup.
            self.iso.kill_cgroups(spare={os.getpid(), self.judge.pid, self.zygote.pid})
        not_wiped = self._wipe(workdir)
        output += _drain(out_r)
        os.close(out_r)
        if aborted:
            raise RuntimeError("the worker was told to stop")
        if "error" in ending:
            raise Provoked(f"the run could not be ended: {ending['error']}")
        if not_wiped:
            raise Provoked(f"the clean-up after the run failed: {not_wiped[:3]}")
        if result is None and self.judge.running:
            # The candidate is gone, so a healthy judge answers at once; one that
            # does not (stuck in the tests' own code) is replaced.
            result = self.judge.reply(time.monotonic() + 1.0)
            if result is None:
                self.judge.stop()
            elif timed_out:
                result = None
        if result is not None and result.get("job_id") != job.get("job_id", ""):
            raise Provoked("the test process answered out of step")
        return self._verdict(result, output, timed_out, ending.get("exit"), oom_before, limits, given_back)

    def _verdict(self, result: dict | None, output: bytes, timed_out: bool, cand_status: int | None,
                 oom_before: int, limits: dict, given_back: float) -> dict:
        oomed = bool(self.iso.cgroups) and self.iso.oom_kills() > oom_before
        if timed_out:
            status, passed, total, message = TIMEOUT, 0, 0, f"wall-clock timeout of {limits['timeout_s']} s"
            if given_back >= 0.05:
                message += f" (besides {given_back:.1f} s it waited for a CPU the host gave to others)"
        elif result is None:
            raise Provoked("the test process died without a verdict")
        elif result.get("status") == INFRA_ERROR:
            raise Provoked(f"the test process failed: {result.get('message', '')}")
        else:
            status = result.get("status", ERROR)
            passed, total = int(result.get("tests_passed", 0)), int(result.get("tests_total", 0))
            message = str(result.get("message", ""))
            if result.get("died"):
                sig = -cand_status if cand_status is not None and cand_status < 0 else None
                if cand_status == SETUP_FAILED and not result.get("loaded"):
                    raise HostFault("the candidate's sandbox setup failed")
                elif oomed:
                    status, message = OOM, message + " (killed by the memory limit)"
                elif sig == signal.SIGXCPU:
                    status, message = TIMEOUT, message + " (CPU time limit)"
                elif note := _describe_exit(cand_status):
                    message += f" ({note})"
        if status not in (PASSED, TIMEOUT, OOM) and oomed:
            status = OOM
        text = message.strip()
        out_text = output.decode("utf-8", "replace")
        if out_text.strip():
            text += ("\n" if text else "") + "--- candidate output ---\n" + out_text
        cap = limits["max_output_kb"] << 10
        if len(text) > cap:
            text = text[:cap] + "\n[truncated]"
        return {"status": status, "tests_passed": passed, "tests_total": total, "stderr": text}

    def _wipe(self, workdir: str) -> list[str]:
        """Remove everything the run left in its work dir and /dev/shm (all
        its processes are dead by now, so nothing races the removal); return
        what could not be removed ([] = clean). Any tree a run can make is
        handled (see wipe.py); a non-empty answer retires this worker."""
        if workdir not in self.iso.scratch:
            # A caller's directory is the caller's to clean; our own temp dir
            # goes, even if the run replaced it with a symlink.
            return remove_tree(workdir) if self._own_workdir else []
        failed = []
        for top in self.iso.scratch:
            failed += empty_dir(top)
            try:  # the run owns its tops and may have changed their mode
                os.chmod(top, 0o700 if self.candidate_uid is not None else 0o1777)
            except OSError as exc:
                failed.append(f"{top} (chmod: {exc.strerror})")
        self._scratch_clean = not failed
        return failed

    def _wait(self, out_r: int, t0: float, timeout_s: float, cap: int, control_fd: int | None):
        """Wait for the judge's verdict, draining candidate output, until the deadline:
        ``timeout_s`` after ``t0``, plus the time the run's processes were kept
        waiting for a CPU (runqueue.py), at most MAX_GIVEN_BACK x ``timeout_s``.
        Returns (verdict or None, output, timed out, aborted, seconds given back)."""
        result, output, timed_out, aborted = None, bytearray(), False, False
        given_back = 0.0
        deadline = t0 + timeout_s
        judge_fd = self.judge.sock.fileno()
        poller = select.poll()
        poller.register(judge_fd, select.POLLIN)
        poller.register(out_r, select.POLLIN)
        if control_fd is not None:
            poller.register(control_fd, 0)  # only hang-up: the host may queue the next job meanwhile
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                waited = min(waited_for_cpu_s(self.zygote.pid), MAX_GIVEN_BACK * timeout_s)
                if waited > given_back + 0.01:
                    given_back = waited
                    deadline = t0 + timeout_s + waited
                    continue
                timed_out = True
                break
            try:
                events = poller.poll(left * 1000)
            except InterruptedError:
                continue
            done = False
            for fd, ev in events:
                if fd == control_fd:
                    aborted = done = True
                    break
                if fd == judge_fd:
                    done = True
                    result = self.judge.reply(time.monotonic() + 5.0)
                    if result is None:
                        self.judge.stop()  # it died or broke the protocol
                    break
                try:
                    chunk = os.read(fd, 1 << 16)
                except OSError:
                    chunk = b""
                if chunk:
                    if len(output) < cap:
                        output += chunk[: cap - len(output)]
                else:
                    poller.unregister(fd)
            if done:
                break
        return result, bytes(output), timed_out, aborted, given_back


def _pin(cpu) -> tuple[int | None, str]:
    """Keep this worker (and so its judge, zygote and runs) on one CPU (why:
    sandbox/cpus.py): (the CPU or None, a note when pinning failed)."""
    if cpu is None:
        return None, ""
    try:
        os.sched_setaffinity(0, {int(cpu)})
        return int(cpu), ""
    except (OSError, ValueError) as exc:
        return None, f"not pinned to CPU {cpu} ({exc})"


def _describe_exit(status: int | None) -> str:
    if status is None:
        return ""
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"candidate killed by {name}"
    return f"candidate exit code {status}" if status else ""


def _drain(fd: int) -> bytes:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 1 << 16)
    except (BlockingIOError, OSError):
        return b""


def serve(in_fd: int, out_fd: int, config: dict) -> int:
    """The worker loop: one ready frame, then a verdict frame per job frame;
    after a verdict that asks for a fresh worker (``retire``), it exits."""
    worker = Worker(config)

    def on_term(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    try:
        write_frame(out_fd, json.dumps({"ready": True, **worker.describe()}).encode())
        while True:
            raw = read_frame(in_fd, MAX_CONTROL_FRAME)
            if raw is None:
                return 0
            verdict = worker.run_job(json.loads(raw), control_fd=in_fd)
            write_frame(out_fd, json.dumps(verdict).encode())
            if verdict.get("retire"):
                return 0
    except (BrokenPipeError, SystemExit, KeyboardInterrupt):
        return 0
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    """``python -I -S -c ... --config JSON``: the host starts the worker
    without site (no site-packages, no .pth hooks: fewer modules in the heap
    every run is forked from), so the builtins site would add come from here."""
    import site

    site.setquit()  # exit() and quit(), as a program run by `python` has them
    site.setcopyright()
    site.sethelper()
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["--help"] or (args and (len(args) != 2 or args[0] != "--config")):
        print("usage: worker --config JSON  (itercode's in-sandbox harness: a warm worker; see Worker)")
        return 0 if args[:1] == ["--help"] else 2
    config = json.loads(args[1]) if args else {}
    # Keep the protocol off fds 0/1 so that nothing a child inherits can touch it.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    return serve(in_fd, out_fd, config)
