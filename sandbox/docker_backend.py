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
  CPU quota (one CPU by default). Docker's default seccomp profile stays on.
* On top of Docker's profile (filters stack; a syscall must pass both), each
  candidate installs itercode's own seccomp filter (sandbox/syscall_filter.py,
  built on the host with libseccomp and passed to the server as
  ``--seccomp``) as the last step of its setup. Refused with EPERM:
  ``socket`` and ``socketpair`` of every family (Docker's profile allows
  most; ``network_mode=none`` leaves unix and netlink sockets), ``ptrace``,
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
  the shared harness (``harness.py``, unchanged; the same code as the process
  backend): per job it forks a fresh candidate process in an empty work
  directory, and the tests run in a separate judge process, never in the
  candidate's. After each run the server SIGKILLs every other process in the
  container (PID 1 is immune to the candidate's signals, so ``kill(-1, 9)``
  and daemons cannot take it down) and wipes /work, /tmp and /dev/shm.
* Candidate and judge share a uid here (no capability to switch), so a
  candidate can signal, stop, renice or prlimit the judge. That can only
  spoil its own run: the judge is kept for the next run only if, with no
  candidate left alive, it is asleep waiting for work with no signal pending,
  untraced, and with exactly the rlimits, nice value, scheduling policy and
  CPU set it had when it started; otherwise a fresh judge is started.
* A container that timed out, ran out of memory, had its judge killed, left
  processes or IPC objects behind, or could not be wiped is replaced, never
  reused: its server stops after answering, and requests already queued to it
  (two are kept in flight per container, so it never waits for the host) go
  to another container, as they never started.
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
* Both seccomp filters are deny lists; programs that need a socket fail
  (``asyncio`` event loops, ``multiprocessing.Pipe()``: PermissionError).
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
import secrets
import socket
import struct
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict
from typing import Sequence

from sandbox.harness.wire import encode_frame, take_frame
from sandbox.base import INFRA_ERROR, TIMEOUT, Job, Limits, ProgressFn, Verdict, confirmed_provoked
from sandbox.syscall_filter import candidate_filter, filter_tag

BACKEND_VERSION = "docker-1"
LABEL = "itercode.sandbox"
OWNER_HOST = "itercode.owner.host"
OWNER_PID = "itercode.owner.pid"
OWNER_START = "itercode.owner.start"
SANDBOX_USER = "65534:65534"
# Memory for the server and the test side, on top of the candidate's own
# limit (which the harness enforces per process as RLIMIT_AS) and of the
# tmpfs mounts, whose pages count against the container's memory too.
MEMORY_OVERHEAD_MB = 192
TMP_MB = SHM_MB = 64
PIDS_OVERHEAD = 32  # server, runner, test process, pipes' helpers
STARTUP_TIMEOUT_S = 60.0
PIPELINE = 2  # jobs queued per container: the next one starts without a round trip
HOST_GRACE_S = 10.0  # the harness answers at its timeout; this backstop covers a wedged server

HOW_TO_START = (
    "start one with `sudo dockerd --bridge=none --iptables=false &` "
    "(or `bash scripts/ensure-dockerd.sh`, which installs docker.io if needed), "
    "set DOCKER_HOST if it listens elsewhere, or use the default backend (--backend process)"
)


class DockerUnavailable(ValueError):
    """No Docker daemon answers, or the docker SDK is missing; the message says how to fix it.

    A ValueError, like an unknown backend name, so that callers that turn bad
    options into one-line user errors (``itercode eval --backend docker``) do.
    """


def connect(timeout: float = 30.0, pool_size: int = 10):
    """A docker client that has answered a ping, or :class:`DockerUnavailable`."""
    try:
        import docker
    except ImportError as e:
        raise DockerUnavailable(
            "the Docker backend needs the docker SDK: pip install 'itercode[docker]'"
        ) from e
    try:
        client = docker.from_env(timeout=int(timeout), max_pool_size=pool_size)
        client.ping()
    except Exception as e:  # DockerException, requests' ConnectionError, FileNotFoundError...
        where = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        raise DockerUnavailable(f"no Docker daemon answers at {where} ({type(e).__name__}); {HOW_TO_START}") from e
    return client


# ---------------------------------------------------------------- ownership


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot: with the pid, a unique id."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def owner_labels() -> dict[str, str]:
    """The labels that tie a container to this process."""
    pid = os.getpid()
    return {LABEL: "1", OWNER_HOST: socket.gethostname(), OWNER_PID: str(pid), OWNER_START: _start_time(pid) or ""}


def is_orphan(labels: dict[str, str]) -> bool:
    """True when the container's owner (on this host) no longer runs.

    Containers owned by processes on other hosts sharing the daemon are left
    alone: we cannot see whether their owners live.
    """
    if labels.get(OWNER_HOST) != socket.gethostname():
        return False
    try:
        pid = int(labels.get(OWNER_PID, ""))
    except ValueError:
        return True
    return _start_time(pid) is None or _start_time(pid) != labels.get(OWNER_START)


def sandbox_containers(client) -> list[dict]:
    """Every container (running or not) that carries itercode's label."""
    return client.api.containers(all=True, filters={"label": f"{LABEL}=1"})


def remove_orphans(client, everything: bool = False) -> int:
    """Remove itercode containers whose owner process is gone (all of them if ``everything``).

    Returns how many were removed. Safe to call while other itercode
    processes run: their containers are kept.
    """
    import docker.errors

    removed = 0
    for c in sandbox_containers(client):
        if everything or is_orphan(c.get("Labels") or {}):
            try:
                client.api.remove_container(c["Id"], force=True)
                removed += 1
            except docker.errors.NotFound:
                pass  # auto_remove got there first
            except docker.errors.APIError as e:
                if "already in progress" not in str(e):
                    raise
    return removed


# ---------------------------------------------------------------- one container


class _Channel:
    """Length-prefixed JSON over a container's attached stdin and stdout.

    Docker multiplexes stdout and stderr on the attach stream in frames of an
    8-byte header (stream id, size) and a payload; stdout payloads carry our
    messages, stderr payloads (the server's own tracebacks) are kept for
    error messages.
    """

    def __init__(self, sock):
        self.wrapper = sock  # the SDK's SocketIO: it holds a reference that defers a close
        self.sock = getattr(sock, "_sock", sock)
        self.frames = bytearray()
        self.stdout = bytearray()
        self.stderr = bytearray()

    def send(self, obj) -> None:
        self.sock.settimeout(30)
        self.sock.sendall(encode_frame(json.dumps(obj).encode()))

    def recv(self, deadline: float):
        """The next message, or None if the container closed the stream; socket.timeout at ``deadline``."""
        while True:
            body = take_frame(self.stdout)
            if body is not None:
                return json.loads(body)
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no answer from the sandbox container")
            self.sock.settimeout(left)
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return None
            self.frames += chunk
            self._demux()

    def _demux(self) -> None:
        while len(self.frames) >= 8:
            stream, size = self.frames[0], struct.unpack(">I", self.frames[4:8])[0]
            if len(self.frames) < 8 + size:
                return
            payload = self.frames[8:8 + size]
            del self.frames[:8 + size]
            if stream == 1:
                self.stdout += payload
            else:
                self.stderr = (self.stderr + payload)[-4000:]

    def close(self) -> None:
        # shutdown() ends the connection now, whoever else holds the socket;
        # dockerd then closes the container's stdin and the server exits.
        for step in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close, self.wrapper.close):
            try:
                step()
            except OSError:
                pass


def container_settings(image: str, command: list[str], limits: Limits, cpus: float) -> tuple[dict, dict]:
    """(create_container kwargs, host_config kwargs) for one sandbox container."""
    work_mb = max(64, 2 * limits.max_file_mb)
    mem = f"{limits.memory_mb + work_mb + TMP_MB + SHM_MB + MEMORY_OVERHEAD_MB}m"
    tmpfs_opts = "rw,nosuid,nodev,mode=1777"
    host = dict(
        network_mode="none",
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        pids_limit=limits.max_processes + PIDS_OVERHEAD,
        mem_limit=mem,
        memswap_limit=mem,  # equal to the memory limit: no swap
        nano_cpus=int(cpus * 1e9),
        tmpfs={"/work": f"{tmpfs_opts},size={work_mb}m", "/tmp": f"{tmpfs_opts},size={TMP_MB}m"},
        shm_size=SHM_MB << 20,
        ulimits=[],
        auto_remove=True,
        init=False,  # our server is PID 1 on purpose (see container_server.py)
    )
    create = dict(
        image=image,
        command=command,
        user=SANDBOX_USER,
        working_dir="/work",
        hostname="sandbox",
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"},
        labels=owner_labels(),
        stdin_open=True,
        detach=False,  # with stdin_open: StdinOnce, so our closing the stream stops the container
    )
    return create, host


class SandboxContainer:
    """One warm container and the channel to its fork server."""

    def __init__(self, client, image: str, command: list[str], limits: Limits, cpus: float):
        import docker.types

        create, host = container_settings(image, command, limits, cpus)
        host["ulimits"] = [docker.types.Ulimit(name="nofile", soft=4096, hard=4096)]
        self.client = client
        self.id = client.api.create_container(host_config=client.api.create_host_config(**host), **create)["Id"]
        self.channel: _Channel | None = None
        try:
            sock = client.api.attach_socket(self.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
            self.channel = _Channel(sock)
            client.api.start(self.id)
            hello = self.channel.recv(time.monotonic() + STARTUP_TIMEOUT_S)
        except BaseException:
            self.destroy()
            raise
        if not hello or not hello.get("ready"):
            err = bytes(self.channel.stderr).decode(errors="replace")
            self.destroy()
            raise RuntimeError(f"sandbox server in {image} did not start: {err.strip() or 'no output'}")
        self.isolation = hello.get("isolation") or {}  # the harness worker's report (describe())
        self.judge_kept: bool | None = None  # the last answered run: was the warm judge found intact and kept

    def submit(self, job: Job, limits: Limits) -> str:
        """Queue one job in the container (it runs after those queued before); return its nonce."""
        nonce = secrets.token_hex(16)
        self.channel.send({"job": asdict(job), "limits": asdict(limits), "nonce": nonce})
        return nonce

    def receive(self, job: Job, limits: Limits, nonce: str) -> tuple[Verdict, list[str], str]:
        """The verdict of the oldest queued job, why the container is dirty
        (empty: reusable), and, when the run may have broken its sandbox,
        why (the caller confirms that on a fresh container).

        Call it when the job before has answered: the job has ``timeout_s``
        from now, plus a grace period, before the container counts as wedged.
        """
        self.judge_kept = None  # known only if this run answers
        try:
            resp = self.channel.recv(time.monotonic() + limits.timeout_s + HOST_GRACE_S)
        except socket.timeout:
            return Verdict(job.job_id, TIMEOUT, duration_s=limits.timeout_s,
                           stderr="the sandbox container did not answer in time; it was replaced"), ["no answer"], ""
        if resp is None:
            err = bytes(self.channel.stderr).decode(errors="replace")[-1000:]
            reason = f"the sandbox container exited during the run {err}".strip()
            return Verdict(job.job_id, INFRA_ERROR, stderr=reason), ["exited"], reason
        if resp.get("nonce") != nonce:
            return Verdict(job.job_id, INFRA_ERROR, stderr="sandbox answer without the request's nonce"), ["bad nonce"], ""
        v = resp["verdict"]
        verdict = Verdict(
            job_id=job.job_id,
            status=str(v.get("status", INFRA_ERROR)),
            tests_passed=int(v.get("tests_passed", 0) or 0),
            tests_total=int(v.get("tests_total", 0) or 0),
            duration_s=float(v.get("duration_s", 0.0) or 0.0),
            stderr=str(v.get("stderr", "") or ""),
        )
        self.judge_kept = bool(resp.get("judge_kept"))
        return verdict, list(resp.get("dirty") or []), str(v.get("provoked") or "")

    def destroy(self) -> None:
        """Close the channel (the server exits on EOF) and force-remove the container."""
        if self.channel:
            self.channel.close()
        _remove_quietly(self.client, self.id)


def _remove_quietly(client, container_id: str) -> None:
    try:
        client.api.remove_container(container_id, force=True)
    except Exception:
        pass  # already gone (auto_remove) or being removed


# ---------------------------------------------------------------- the executor


class DockerExecutor:
    """Run jobs in a pool of warm, locked-down containers. See the module docstring.

    >>> ex = DockerExecutor(workers=2)           # doctest: +SKIP
    >>> ex.run([Job("t#0", "def f(): return 1", "assert f() == 1", "f")], Limits())  # doctest: +SKIP
    """

    name = "docker"

    def __init__(self, workers: int | None = None, image: str | None = None, cpus: float = 1.0,
                 build_image: bool = True, progress=None, **_ignored):
        from sandbox import image as image_mod

        self.workers = max(1, int(workers or os.cpu_count() or 1))
        self.cpus = cpus
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

    def _spawn(self, limits: Limits) -> Future:
        def make() -> SandboxContainer:
            c = SandboxContainer(self.client, self.image, self.command, limits, self.cpus)
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
                self._slots[i] = self._spawn(limits)

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
                    self._slots[slot] = None if self._closed else self._spawn(limits)
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
        self._slots[slot] = None if self._closed else self._spawn(limits)

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

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _close_all(client, live: set[str]) -> None:
    """Remove the given containers (also run at interpreter exit)."""
    for cid in list(live):
        _remove_quietly(client, cid)
    live.clear()
