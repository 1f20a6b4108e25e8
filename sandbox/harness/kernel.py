"""Thin wrappers over the kernel interfaces the sandbox uses (namespaces,
mounts, prctl, seccomp, rlimits, fd juggling), through libc via ctypes: the standard
library has no binding for most of them.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import resource
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 0x1000, 0x4000, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (a new syscall)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2

_libc = None


def libc():
    global _libc
    if _libc is None:
        # dlopen(NULL): the interpreter's own symbols, libc's included. Not
        # ctypes.util.find_library, which imports subprocess, threading,
        # tempfile and random, whose at-fork hooks would then run in every run.
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
            _libc.unshare  # noqa: B018 - probe
        except (OSError, AttributeError):
            _libc = ctypes.CDLL("libc.so.6", use_errno=True)
    return _libc


def _check(ret: int, what: str) -> int:
    if ret == -1:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def unshare(flags: int) -> None:
    _check(libc().unshare(flags), "unshare")


def setns(fd: int, nstype: int) -> None:
    _check(libc().setns(fd, nstype), "setns")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = lambda s: None if s is None else s.encode()  # noqa: E731
    _check(libc().mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)), f"mount {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr_recursive(path: str, attr_set: int = 0, attr_clr: int = 0) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    ret = libc().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), path.encode(),
                         ctypes.c_uint(AT_RECURSIVE), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(ret, f"mount_setattr {path}")


def prctl(option: int, arg: int) -> None:
    _check(libc().prctl(option, ctypes.c_ulong(arg), 0, 0, 0), "prctl")


class _SockFprog(ctypes.Structure):
    # struct sock_fprog: the instruction count, then a pointer to the 8-byte
    # instructions (struct sock_filter {u16 code; u8 jt, jf; u32 k}).
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_seccomp_prepared: tuple = (None, None, None)  # (bpf, its buffer, the sock_fprog pointing at it)


def _prepare_seccomp(bpf: bytes):
    """The sock_fprog for ``bpf``, made once (in the worker, before any
    fork), so that each candidate only makes two prctl calls."""
    global _seccomp_prepared
    if _seccomp_prepared[0] is not bpf:
        if not bpf or len(bpf) % 8 or len(bpf) // 8 > 4096:
            raise ValueError(f"a seccomp program is 1 to 4096 8-byte instructions, got {len(bpf)} bytes")
        buf = ctypes.create_string_buffer(bpf, len(bpf))
        _seccomp_prepared = (bpf, buf, _SockFprog(len(bpf) // 8, ctypes.addressof(buf)))
    return _seccomp_prepared[2]


def install_seccomp(bpf: bytes) -> None:
    """Confine this process (and all it forks) to the seccomp filter ``bpf``
    (as built by sandbox/syscall_filter.py); OSError if the kernel refuses.
    no_new_privs first: the kernel accepts a filter from an unprivileged
    process only under it."""
    prog = _prepare_seccomp(bpf)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    _check(libc().prctl(PR_SET_SECCOMP, ctypes.c_ulong(SECCOMP_MODE_FILTER), ctypes.byref(prog), 0, 0),
           "prctl(PR_SET_SECCOMP)")


def seccomp_from_config(spec: dict | None) -> tuple[bytes, str]:
    """(the filter every candidate must install, b"" for none; the isolation
    report's line). ``spec`` is the worker config's "seccomp" entry:
    {"bpf": hex, "about": what it refuses, or why the host has none}.

    A filter this kernel refuses (no CONFIG_SECCOMP_FILTER, a foreign
    architecture) is found here, once, by a throwaway child that installs
    it: then runs go on without one and the report says so. A filter that
    passed that check and fails in a run fails that run's setup instead."""
    spec = spec or {}
    if not spec.get("bpf"):
        return b"", "off: " + (spec.get("about") or "the host sent no filter")
    bpf = bytes.fromhex(spec["bpf"])
    try:
        _prepare_seccomp(bpf)
    except ValueError as exc:
        return b"", f"off: {exc}"
    flush_stdio()
    pid = os.fork()
    if pid == 0:
        code = 255
        try:
            install_seccomp(bpf)
            code = 0
        except OSError as exc:
            code = exc.errno or 255
        finally:
            os._exit(code)  # the errno, through the exit code
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        why = os.strerror(code) if 0 < code < 255 else f"exit status {code}"
        return b"", f"off: the kernel refused the filter in a test process ({why}); runs go on without one"
    return bpf, "on: " + spec.get("about", "")


def set_rlimit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def close_fds_except(keep: set[int]) -> None:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = range(3, 1024)
    for fd in fds:
        if fd not in keep and fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass


def move_fds(mapping: dict[int, int]) -> None:
    """dup2 each source fd onto its target without clobbering later sources."""
    # Park the sources above every target first, so no dup2 clobbers a source.
    tmp = {src: fcntl.fcntl(src, fcntl.F_DUPFD, 64) for src in mapping}
    for src, dst in mapping.items():
        os.dup2(tmp[src], dst, inheritable=True)
    for fd in tmp.values():
        os.close(fd)


def flush_stdio() -> None:
    """Flush our stdout/stderr before a fork, so the child does not write our buffered text again."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
