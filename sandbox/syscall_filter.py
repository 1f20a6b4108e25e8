"""The seccomp filter every candidate process runs under (both backends).

Built on the host with libseccomp (through the ``pyseccomp`` bindings), which
generates the BPF program for this machine's architecture; the harness only
installs the bytes (``harness.kernel.install_seccomp``), so the harness
stays standard-library only and nothing here is hand-assembled.

The policy allows by default and refuses a fixed list with ``EPERM``, so a
program that tries gets an ``OSError`` it can report or ignore, not a kill:

- sockets of every family (``socket``): a program that computes an answer
  needs none; the candidate's own channel is inherited pipes. This closes
  unix sockets on the host's file system, netlink and every other family the
  network namespace does not cover. ``socketpair`` stays: it only makes a
  connected pair inside the run (``asyncio``'s event loop needs one), with
  no name anyone else can reach.
- other processes: ``ptrace``, ``process_vm_readv``/``process_vm_writev``,
  ``process_madvise``, ``pidfd_getfd``.
- namespaces: ``unshare``, ``setns``, and ``clone`` with any ``CLONE_NEW*``
  flag (so no user namespace, the usual door to kernel attack surface);
  ``clone3`` answers ``ENOSYS`` instead, because its flags sit behind a
  pointer a filter cannot read, and libc then falls back to ``clone``, so
  ``fork`` and threads keep working.
- mounts: ``mount``, ``umount2``, ``pivot_root``, ``chroot`` and the new
  mount API (``fsopen``, ``fsmount``, ``fsconfig``, ``fspick``,
  ``move_mount``, ``open_tree``, ``mount_setattr``).
- kernel surfaces an answer never needs: ``bpf``, ``perf_event_open``,
  keyrings (``keyctl``, ``add_key``, ``request_key``), ``userfaultfd``,
  ``io_uring_*``, modules and kexec, ``open_by_handle_at`` /
  ``name_to_handle_at``, ``syslog``, ``acct``, swap, ``reboot``,
  ``quotactl``, ``lookup_dcookie``.

Syscalls of any other ABI than the native one (i386 or x32 on x86_64, arm32
on aarch64) kill the process: libseccomp's filter checks the architecture
first, and a program switching ABIs to dodge the list has no other reason to.

Consequences for ordinary programs: ``multiprocessing`` managers (a
listening socket) fail with ``PermissionError``; ``fork``, threads,
``asyncio``, ``multiprocessing.Pool`` and ``Pipe``, ``import socket``, files,
time and randomness work.
"""
from __future__ import annotations

import errno
import functools
import hashlib
import sys
import tempfile

# Refused with EPERM whatever their arguments.
DENIED = (
    "socket",
    "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "pidfd_getfd",
    "unshare", "setns",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsmount", "fsconfig",
    "fspick", "mount_setattr",
    "bpf", "perf_event_open", "keyctl", "add_key", "request_key", "userfaultfd",
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "open_by_handle_at", "name_to_handle_at", "syslog", "acct", "swapon", "swapoff", "reboot", "quotactl",
    "lookup_dcookie",
)
# clone() flags that make a new namespace (not CLONE_NEWTIME, 0x80: in clone()
# the low byte is the exit signal; only clone3 takes that flag).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000, "CLONE_NEWCGROUP": 0x02000000, "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000, "CLONE_NEWUSER": 0x10000000, "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}


@functools.lru_cache(maxsize=1)
def candidate_filter() -> tuple[bytes | None, str]:
    """(the BPF program for candidates, a one-line description), built once
    per process; (None, why not) where it cannot be built here."""
    if not sys.platform.startswith("linux"):
        return None, f"no seccomp on {sys.platform} (Linux only)"
    try:
        import pyseccomp
    except ImportError:
        return None, "the pyseccomp package is missing: pip install pyseccomp"
    except (RuntimeError, OSError) as exc:  # it loads libseccomp.so.2 at import
        return None, f"libseccomp is missing ({exc}): install libseccomp2 (apt-get install libseccomp2)"
    try:
        bpf, unknown = _build(pyseccomp)
    except (OSError, ValueError) as exc:
        return None, f"libseccomp could not build the filter ({exc})"
    about = (f"{len(bpf) // 8} BPF instructions: EPERM for {len(DENIED) - len(unknown)} syscalls (every socket "
             f"family, ptrace, namespaces, mounts, bpf, perf_event_open, keyrings, userfaultfd, io_uring, modules) "
             f"and clone with CLONE_NEW* flags; clone3 ENOSYS; other ABIs killed")
    if unknown:
        about += f"; unknown to this libseccomp, so not filtered: {', '.join(unknown)}"
    return bpf, about


def filter_tag() -> str:
    """A short name of the filter candidates get here, for executor versions:
    verdicts cached under one policy are not reused under another."""
    bpf, _ = candidate_filter()
    return "seccomp-" + hashlib.sha256(bpf).hexdigest()[:12] if bpf else "no-seccomp"


def _policy(seccomp):
    """(the libseccomp filter context, the listed syscalls this libseccomp does not know)."""
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    # A syscall from another ABI than the filter's (i386/x32 on x86_64) kills the process.
    f.set_attr(seccomp.Attr.ACT_BADARCH, seccomp.KILL_PROCESS)
    try:
        # A binary search over syscall numbers instead of a linear list: the
        # kernel then takes ~55 us instead of ~90 us to install it per run
        # (it evaluates the filter for every syscall number to build its cache).
        f.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
    except OSError:
        pass  # libseccomp < 2.5: the linear form, same policy
    unknown = []
    for name in DENIED:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name)
        if number == -1:  # __NR_SCMP_ERROR: a libseccomp older than the syscall
            unknown.append(name)
            continue
        f.add_rule(seccomp.ERRNO(errno.EPERM), number)
    # s390 passes clone's stack first and its flags second; every other
    # architecture (x86_64, aarch64, ...) passes the flags first.
    flags_arg = 1 if seccomp.system_arch() in (seccomp.Arch.S390, seccomp.Arch.S390X) else 0
    for bit in CLONE_NAMESPACE_FLAGS.values():
        f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(flags_arg, seccomp.MASKED_EQ, bit, bit))
    if seccomp.resolve_syscall(seccomp.Arch.NATIVE, "clone3") != -1:
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    return f, unknown


def _build(seccomp) -> tuple[bytes, list[str]]:
    f, unknown = _policy(seccomp)
    data = _export(f.export_bpf)
    if not data or len(data) % 8:
        raise ValueError(f"libseccomp exported {len(data)} bytes, not whole BPF instructions")
    return data, unknown


def _export(export) -> bytes:
    with tempfile.TemporaryFile() as out:
        export(out)
        out.seek(0)
        return out.read()


def filter_text() -> str:
    """The policy in libseccomp's readable pseudo filter code (for reviews and debugging)."""
    import pyseccomp

    f, _ = _policy(pyseccomp)
    return _export(f.export_pfc).decode()
