"""The Docker sandbox backend: the process backend's promise, inside containers.

    >>> from sandbox import make_executor, Job, Limits           # doctest: +SKIP
    >>> with make_executor("docker", workers=2) as ex:             # doctest: +SKIP
    ...     verdicts = ex.run(jobs, Limits(timeout_s=3))

What it covers
--------------
* Each job runs in a long-lived ("warm") container from a pool of one per
  worker. Every container: no network (``network_mode=none``), read-only root
  filesystem, all capabilities dropped, ``no-new-privileges``, an unprivileged
  user (65534), a pids limit, a memory limit with swap off (memswap == mem,
  sized for the candidate's limit, the tmpfs mounts and the test side),
  size-capped tmpfs mounts as the work directory, /tmp and /dev/shm, and a
  CPU quota (one CPU by default), and a CPU of its own (``cpuset``) when
  there is a free one for every container (sandbox/cpus.py). Docker's default
  seccomp profile stays on.
* On top of Docker's profile (filters stack; a syscall must pass both), each
  candidate installs itercode's own seccomp filter (sandbox/syscall_filter.py,
  built on the host with libseccomp and passed to the server as
  ``--seccomp``) as the last step of its setup. Refused with EPERM:
  ``socket`` of every family (Docker's profile allows most;
  ``network_mode=none`` leaves unix and netlink sockets; ``socketpair``
  stays, a connected pair inside the run), ``ptrace``,
  ``process_vm_readv``/``writev``, ``process_madvise``, ``pidfd_getfd``,
  ``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag, ``mount``,
  ``umount2``, ``pivot_root``, ``chroot`` and the new mount API, ``bpf``,
  ``perf_event_open``, ``keyctl``, ``add_key``, ``request_key``,
  ``userfaultfd``, ``io_uring_*``, module and kexec loading,
  ``open_by_handle_at``, ``name_to_handle_at``, ``syslog``, ``acct``, swap,
  ``reboot``, ``quotactl``, ``lookup_dcookie``; ``clone3`` gets ENOSYS (libc
  falls back to ``clone``); a syscall of another ABI kills the process.
  ``DockerExecutor.isolation["seccomp"]`` (the harness's report, known once
  a container started) says "on: ..." or "off: why".
* The image holds only a Python interpreter and its standard library, built
  offline from the host's own Python (``sandbox/image.py``): no shells, no
  site-packages, no /etc/shadow, nothing of the host's files. ``image=`` (or
  ``ITERCODE_SANDBOX_IMAGE``) names any other image with python3 instead.
* Inside, a trusted server runs as PID 1 (``container_server.py``) and hosts
  the shared harness package (``harness/``, unchanged; the same code as the
  process backend): per job its zygote forks a fresh candidate process in an
  empty work directory, and the tests run in a separate judge process, never
  in the candidate's. The zygote was forked before the server read any
  request and is never sent one, so no candidate holds any test, trusted code
  or queued request (those stay in PID 1, which no run can read). After each
  run the server SIGKILLs every other process in the container but the judge
  and the zygote (PID 1 is immune to the candidate's signals, so
  ``kill(-1, 9)`` and daemons cannot take it down), empties /work, /tmp and
  /dev/shm without recursion, and takes the next job only when they are empty.
* Candidate, judge and zygote share a uid here (no capability to switch), so
  a candidate can signal, stop, renice or prlimit the other two. That can
  only spoil its own run: the judge is kept for the next run only if, with no
  candidate left alive, it is asleep waiting for work with no signal pending,
  untraced, and with exactly the rlimits, nice value, scheduling policy and
  CPU set it had when it started (otherwise a fresh judge is started); a
  zygote that does not pass the same check retires the container (a new one
  cannot be forked from a server that has held jobs).
* A container that timed out, ran out of memory, had its judge or zygote
  touched, left processes or IPC objects behind, or could not be wiped is
  replaced, never reused: its server stops after answering, and requests
  already queued to it (two are kept in flight per container, so it never
  waits for the host) go to another container, as they never started.
* Blame: a run that broke its sandbox (killed its judge, crashed the server,
  left what cannot be wiped) runs once more on another container; a second
  break is its own ``error`` (``provoked``), never an ``infra_error``, which
  is kept for the host's faults (no daemon, no image, a container that will
  not start or was not clean before the run).
* The verdict travels over the container's attached stdin/stdout, which no
  process of the run can reach (their stdio is /dev/null or a capped pipe,
  and the server is not dumpable, so /proc/1/fd is closed to them); each
  response must echo a random per-request nonce.
* Every container carries labels (``itercode.sandbox=1`` and its owner's
  host, pid and process start time). Containers die with their owner: the
  server exits, even mid-run, as soon as its stdin closes (SIGIO on end of
  file), which happens when the owning process exits for any reason, SIGKILL
  included; ``auto_remove`` then deletes the container. As a second line,
  every new executor removes containers whose owner process is gone
  (``remove_orphans``; ``itercode sandbox clean`` does it by hand).

What it does not cover
----------------------
* Both seccomp filters are deny lists; programs that need a listening
  socket fail (``multiprocessing`` managers: PermissionError).
* It shares the host kernel: a kernel exploit escapes any container. Use a
  VM-backed runtime (gVisor, Kata) through dockerd's configuration for that;
  nothing here depends on runc.
* Disk I/O bandwidth is not limited; disk *space* is (tmpfs sizes; the root
  is read-only).
* Processes of the sandbox show on the host as uid 65534 ("nobody"): no user
  namespace remapping is configured here (dockerd's ``userns-remap`` would add
  one).
* Anyone who can reach the docker socket is root on the host: this backend
  protects the host from the candidate, not from the user of itercode.
"""
from __future__ import annotations

import json
import os
import queue
import threading
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Sequence

from sandbox.base import INFRA_ERROR, Job, Limits, ProgressFn, Verdict, confirmed_provoked
from sandbox.cpus import CpuClaim
from sandbox.docker_containers import (BACKEND_VERSION, PIPELINE, DockerUnavailable, SandboxContainer, _remove_quietly,
                                       connect, remove_orphans)
from sandbox.syscall_filter import candidate_filter, filter_tag

class DockerExecutor:
    """Run jobs in a pool of warm, locked-down containers. See the module docstring.

    >>> ex = DockerExecutor(workers=2)           # doctest: +SKIP
    >>> ex.run([Job("t#0", "def f(): return 1", "assert f() == 1", "f")], Limits())  # doctest: +SKIP
    """

    name = "docker"

    def __init__(self, workers: int | None = None, image: str | None = None, cpus: float = 1.0,
                 build_image: bool = True, progress=None, pin_cpus: bool | None = None, **_ignored):
        from sandbox import image as image_mod

        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.cpus = cpus
        # This machine's CPUs mean nothing to a daemon elsewhere (DOCKER_HOST=tcp://, ssh://).
        remote = os.environ.get("DOCKER_HOST", "").startswith(("tcp://", "ssh://"))
        self._cpu_claim = CpuClaim(self.workers, False if remote else pin_cpus)
        self.slot_cpus = self._cpu_claim.cpus  # see sandbox/cpus.py
        self.client = connect(pool_size=self.workers + 4)
        remove_orphans(self.client)
        image = image or os.environ.get("ITERCODE_SANDBOX_IMAGE") or None
        if image:
            self.image = image_mod.derive_image(self.client, image, progress=progress)
        elif build_image:
            self.image = image_mod.ensure_image(self.client, progress=progress)
        else:
            raise DockerUnavailable("no sandbox image: run `itercode sandbox build-image` first")
        bpf, about = candidate_filter()
        seccomp = json.dumps({"bpf": bpf.hex() if bpf else "", "about": about})
        self.command = [image_mod.python_in(self.image), "-I", "-S", f"{image_mod.APP_DIR}/container_server.py",
                        "--seccomp", seccomp]
        self.version = f"{BACKEND_VERSION}/{self.image}/{filter_tag()}"
        self._limits: Limits | None = None
        self._slots: list[Future | None] = [None] * self.workers
        self._live: set[str] = set()
        self._lock = threading.Lock()
        self._spawner = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="itercode-docker")
        self.replaced = 0  # containers retired as dirty (for tests and reports)
        self.reasons: list[str] = []
        self.judge_kept: list[bool] = []  # per answered run, in answer order (for tests and reports)
        self.isolation: dict = {}  # the latest container's harness report (seccomp included), once one started
        self._closed = False
        # Runs at close(), at garbage collection or at interpreter exit,
        # whichever comes first (SIGKILL: see the module docstring).
        self._finalizer = weakref.finalize(self, _close_all, self.client, self._live)

    # -- pool

    def _spawn(self, limits: Limits, slot: int) -> Future:
        def make() -> SandboxContainer:
            c = SandboxContainer(self.client, self.image, self.command, limits, self.cpus, self.slot_cpus[slot])
            with self._lock:
                self._live.add(c.id)
                self.isolation = c.isolation
            return c

        return self._spawner.submit(make)

    def _retire(self, fut: Future | None) -> None:
        if fut is None:
            return

        def done(f: Future) -> None:
            if f.exception() is None:
                c = f.result()
                with self._lock:
                    self._live.discard(c.id)
                threading.Thread(target=c.destroy, daemon=True).start()

        fut.add_done_callback(done)

    def _ensure_pool(self, limits: Limits, size: int) -> None:
        if limits != self._limits:  # container limits depend on the job limits
            for i, fut in enumerate(self._slots):
                self._retire(fut)
                self._slots[i] = None
            self._limits = limits
        for i in range(size):
            if self._slots[i] is None:
                self._slots[i] = self._spawn(limits, i)

    def _drive(self, slot: int, jobs: list[Job], limits: Limits, todo: queue.SimpleQueue, deliver, stop,
               attempts: list[int]) -> None:
        """Feed one container: keep up to PIPELINE jobs queued in it, so it never
        waits for the host between runs. When a run leaves the container dirty,
        the container is replaced and the jobs queued behind it (which never
        started: the server stops after a dirty run) go back to ``todo``."""
        inflight: deque[tuple[int, str]] = deque()  # (job index, nonce), oldest first
        try:
            self._feed(slot, jobs, limits, todo, deliver, stop, inflight, attempts)
        finally:
            if inflight:  # stopped early: requests queued in the container must never answer a later run
                self._replace(slot, ["abandoned"], limits)

    def _feed(self, slot, jobs, limits, todo, deliver, stop, inflight, attempts) -> None:
        container: SandboxContainer | None = None
        while not stop.is_set():
            if container is None:
                fut = self._slots[slot]
                if fut is None:
                    return  # closed
                try:
                    container = fut.result()
                except Exception as e:
                    self._slots[slot] = None if self._closed else self._spawn(limits, slot)
                    try:
                        i = todo.get_nowait()
                    except queue.Empty:
                        return
                    deliver(i, Verdict(jobs[i].job_id, INFRA_ERROR, stderr=f"could not start a sandbox container: {e}"[:2000]))
                    continue
            broken: list[str] = []
            while len(inflight) < PIPELINE and not broken:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    break
                try:
                    inflight.append((i, container.submit(jobs[i], limits)))
                except OSError as e:  # the channel broke before the job was sent
                    todo.put(i)
                    broken = [f"send failed: {e!r}"]
            if not inflight:
                if broken:
                    self._replace(slot, broken, limits)
                    container = None
                    continue
                return
            i, nonce = inflight.popleft()
            try:
                verdict, dirty, provoked = container.receive(jobs[i], limits, nonce)
            except Exception as e:  # the socket broke, dockerd went away...
                verdict, dirty, provoked = Verdict(jobs[i].job_id, INFRA_ERROR,
                                                   stderr=f"sandbox channel failed: {e!r}"[:2000]), ["channel"], ""
            if container.judge_kept is not None:
                self.judge_kept.append(container.judge_kept)
            if provoked and not attempts[i]:
                attempts[i] = 1
                todo.put(i)  # once more, on another (clean) container, to confirm
            else:
                deliver(i, confirmed_provoked(jobs[i].job_id, provoked, verdict.duration_s) if provoked else verdict)
            if dirty or broken:
                # Replace, never reuse: the new one starts while this verdict is reported.
                self._replace(slot, dirty + broken, limits)
                container = None
                while inflight:
                    todo.put(inflight.popleft()[0])

    def _replace(self, slot: int, reasons: list[str], limits: Limits) -> None:
        self.replaced += 1
        self.reasons.extend(reasons)
        self._retire(self._slots[slot])
        self._slots[slot] = None if self._closed else self._spawn(limits, slot)

    def container_ids(self) -> list[str]:
        """The pool's containers, one per slot, after any pending start has finished."""
        ids = []
        for fut in self._slots:
            if fut is not None and fut.exception() is None:
                ids.append(fut.result().id)
        return ids

    # -- Executor protocol

    def run(self, jobs: Sequence[Job], limits: Limits, on_verdict: ProgressFn | None = None) -> list[Verdict]:
        """Run every job on the warm pool; verdicts come back in job order."""
        jobs = list(jobs)
        if not jobs:
            return []
        width = min(self.workers, len(jobs))
        self._ensure_pool(limits, width)
        todo: queue.SimpleQueue = queue.SimpleQueue()
        for i, job in enumerate(jobs):
            todo.put(i)
        results: list[Verdict | None] = [None] * len(jobs)
        attempts = [0] * len(jobs)  # a run that broke its sandbox runs once more to confirm
        report = threading.Lock()
        failure: list[BaseException] = []
        stop = threading.Event()

        def deliver(i: int, v: Verdict) -> None:
            results[i] = v
            if on_verdict:
                with report:
                    on_verdict(v)

        def worker(slot: int) -> None:
            try:
                self._drive(slot, jobs, limits, todo, deliver, stop, attempts)
            except BaseException as e:  # e.g. an on_verdict that raised
                failure.append(e)
                stop.set()

        threads = [threading.Thread(target=worker, args=(s,), daemon=True) for s in range(width)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.2)  # short joins keep Ctrl-C responsive
        except BaseException:
            stop.set()  # Ctrl-C / SIGTERM: no new job starts; close() ends the running ones
            raise
        if failure:
            raise failure[0]
        return results  # type: ignore[return-value]

    def close(self) -> None:
        """Remove every container of this executor; wait until they are gone."""
        self._closed = True
        for i, fut in enumerate(self._slots):
            if fut is not None:
                fut.cancel()
            self._slots[i] = None
        self._spawner.shutdown(wait=True, cancel_futures=True)
        self._finalizer()
        self._cpu_claim.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close_all(client, live: set[str]) -> None:
    """Remove the given containers (also run at interpreter exit)."""
    for cid in list(live):
        _remove_quietly(client, cid)
    live.clear()
