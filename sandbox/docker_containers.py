"""The Docker sandbox's containers: reaching dockerd, the settings every
sandbox container gets, the channel to its server, owner labels and the
removal of orphans. The executor that runs jobs on them is
``sandbox/docker_backend.py``, whose docstring says what the backend covers.
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import struct
import time
from dataclasses import asdict

from sandbox.base import INFRA_ERROR, TIMEOUT, Job, Limits, Verdict
from sandbox.harness.runqueue import longest_wall_s
from sandbox.harness.wire import encode_frame, take_frame

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
    "set DOCKER_HOST if it listens elsewhere, or use the process backend (the default: `--backend process` for eval, `--sandbox process` for serve)"
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


def container_settings(image: str, command: list[str], limits: Limits, cpus: float,
                       cpu: int | None = None) -> tuple[dict, dict]:
    """(create_container kwargs, host_config kwargs) for one sandbox container
    (``cpu``: the one CPU it runs on, see sandbox/cpus.py; None: any)."""
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
        cpuset_cpus=None if cpu is None else str(cpu),
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
        environment={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
                     "LD_BIND_NOW": "1"},  # no lazy PLT fix-ups (copy-on-write faults) in each forked run
        labels=owner_labels(),
        stdin_open=True,
        detach=False,  # with stdin_open: StdinOnce, so our closing the stream stops the container
    )
    return create, host


class SandboxContainer:
    """One warm container and the channel to its fork server."""

    def __init__(self, client, image: str, command: list[str], limits: Limits, cpus: float, cpu: int | None = None):
        import docker.types

        create, host = container_settings(image, command, limits, cpus, cpu)
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

        Call it when the job before has answered: the job has its longest wall
        time from now (runqueue.longest_wall_s), plus a grace period, before the
        container counts as wedged.
        """
        self.judge_kept = None  # known only if this run answers
        try:
            resp = self.channel.recv(time.monotonic() + longest_wall_s(limits.timeout_s) + HOST_GRACE_S)
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
