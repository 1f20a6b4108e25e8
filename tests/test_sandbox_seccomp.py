"""The candidates' syscall filter (sandbox/syscall_filter.py), on every backend.

One attack per forbidden route (issue 11, class 6: unix sockets on the host,
user namespaces, and the other syscalls a program computing an answer never
needs). Each program reports what its call got (an errno name, or "allowed")
as its return value, and the tests, which the candidate never sees, assert
it was refused: an attack scores ``passed`` exactly when the filter held.
Where the kernel would refuse an unprivileged caller anyway, the call is
made so that it answers differently without the filter (a missing mount
target: ENOENT; a NULL attribute pointer: EFAULT), so each test fails
without the filter. Each attack runs beside a concurrent canary, and a
canonical solution must pass on the same executor afterwards.
"""
from __future__ import annotations

import os
import shutil
import socket
import tempfile
import textwrap

import pytest
from test_sandbox_attacks import LIMITS, attack

from sandbox import ERROR, PASSED, Job, make_executor
from sandbox.syscall_filter import candidate_filter

CANONICAL = Job(
    job_id="canonical",
    program="def add(a, b):\n    return a + b\n",
    tests="assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add('a', 'b') == 'ab'\n",
    entry_point="add",
)

# Shared by every attack program: raw syscalls through libc, numbers per architecture.
PRELUDE = '''
import ctypes, errno, os, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = {"x86_64": {"clone": 56, "clone3": 435, "bpf": 321, "perf_event_open": 298, "keyctl": 250, "add_key": 248,
                 "userfaultfd": 323, "io_uring_setup": 425},
      "aarch64": {"clone": 220, "clone3": 435, "bpf": 280, "perf_event_open": 241, "keyctl": 219, "add_key": 217,
                  "userfaultfd": 282, "io_uring_setup": 425}}[os.uname().machine]

def name(code):
    return errno.errorcode.get(code, str(code))

def raw(nr, *args):
    """(return value, errno name or "") of syscall ``nr``."""
    ctypes.set_errno(0)
    ret = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return ret, (name(ctypes.get_errno()) if ret == -1 else "")

def refused(nr, *args):
    ret, err = raw(nr, *args)
    return err or "allowed: returned %d" % ret
'''


@pytest.fixture(scope="module")
def backend(backend):
    """conftest's executor, whose candidates run under the filter (skips
    where this machine has none: the stated fallback)."""
    # The docker backend learns its isolation from the first container.
    assert backend.run([CANONICAL], LIMITS)[0].status == PASSED
    state = backend.isolation.get("seccomp", "")
    if not state.startswith("on:"):
        _skip_outside_ci(f"no syscall filter here: {state}")
    return backend


def _skip_outside_ci(why: str) -> None:
    """Skip on a machine without the filter (the backend's stated fallback); in CI, whose machines
    have it, fail instead: a skipped filter test there would prove nothing."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {why}: CI machines must run the syscall filter's tests")
    pytest.skip(why)


def _seccomp_in_kernel() -> bool:
    try:
        with open("/proc/self/status") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def refuses(executor, body: str, expected: str = "EPERM", job_id: str = "attack") -> None:
    """Run ``body`` (which defines f) beside the canary and assert f() == expected;
    then a canonical solution must still pass on the same executor."""
    program = PRELUDE + textwrap.dedent(body)
    job = Job(job_id=job_id, program=program, tests=f"r = f()\nassert r == {expected!r}, r\n", entry_point="f")
    attack(executor, job, {PASSED})
    assert executor.run([CANONICAL], LIMITS)[0].status == PASSED, "a canonical solution failed after the attack"


# --------------------------------------------------------------------------- the filter is on


def test_the_host_builds_the_filter_and_the_report_says_on():
    bpf, about = candidate_filter()
    if bpf is None:
        _skip_outside_ci(about)
    assert len(bpf) % 8 == 0 and "socket" in about
    if not _seccomp_in_kernel():
        _skip_outside_ci("this kernel has no seccomp")
    with make_executor("process", workers=1) as ex:
        assert ex.isolation["seccomp"] == "on: " + about
        assert ex.version.endswith("/seccomp-" + __import__("hashlib").sha256(bpf).hexdigest()[:12])


def test_a_filter_the_kernel_refuses_is_reported_and_runs_go_on(monkeypatch):
    import sandbox.process
    from sandbox.harness.kernel import seccomp_from_config

    bad = bytes.fromhex("ffff000000000000")  # one instruction with an opcode no kernel knows
    assert seccomp_from_config({"bpf": bad.hex(), "about": "x"}) == (
        b"", "off: the kernel refused the filter in a test process (Invalid argument); runs go on without one")
    monkeypatch.setattr(sandbox.process, "candidate_filter", lambda: (bad, "a broken filter"))
    with make_executor("process", workers=1) as ex:
        assert ex.isolation["seccomp"].startswith("off: the kernel refused the filter")
        prog = "import socket\ndef f():\n    socket.socket().close()\n    return 'made'\n"
        assert ex.run([Job("a", prog, "assert f() == 'made'\n", "f")], LIMITS)[0].status == PASSED


def test_a_host_without_libseccomp_is_reported(monkeypatch):
    import sandbox.process

    monkeypatch.setattr(sandbox.process, "candidate_filter", lambda: (None, "libseccomp is missing (test)"))
    with make_executor("process", workers=1) as ex:
        assert ex.isolation["seccomp"] == "off: libseccomp is missing (test)"
        assert ex.run([CANONICAL], LIMITS)[0].status == PASSED


def test_ordinary_programs_still_work(backend):
    prog = """
    import math, os, random, socket, threading, time
    from concurrent.futures import ThreadPoolExecutor

    def f():
        out = {}
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        out["fork"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        box = []
        t = threading.Thread(target=lambda: box.append(sum(range(1000))))
        t.start()
        t.join()
        out["thread"] = box[0]
        with ThreadPoolExecutor(4) as pool:
            out["pool"] = sum(pool.map(math.factorial, range(10)))
        out["socket_module"] = socket.AF_INET == 2
        t0 = time.monotonic()
        time.sleep(0.01)
        out["time"] = time.monotonic() - t0 >= 0.009 and time.time() > 1e9
        out["random"] = 0 <= random.random() < 1 and len(os.urandom(8)) == 8
        with open("/proc/self/status") as fh:
            out["seccomp"] = [line.split(":")[1].strip() for line in fh if line.startswith("Seccomp:")]
        return out
    """
    expected = {"fork": 7, "thread": 499500, "pool": sum(__import__("math").factorial(i) for i in range(10)),
                "socket_module": True, "time": True, "random": True, "seccomp": ["2"]}
    job = Job("ordinary", textwrap.dedent(prog), f"r = f()\nassert r == {expected!r}, r\n", "f")
    attack(backend, job, {PASSED})


# --------------------------------------------------------------------------- sockets


@pytest.fixture
def host_unix_socket():
    """A listening unix socket, mode 0777, in a host directory every uid can
    enter (/var/tmp: the process backend hides only /tmp and /dev/shm)."""
    base = "/var/tmp" if os.access("/var/tmp", os.W_OK) else None
    where = tempfile.mkdtemp(prefix="itercode-seccomp-", dir=base)
    os.chmod(where, 0o755)
    path = os.path.join(where, "s")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(4)
    srv.setblocking(False)
    yield path, srv
    srv.close()
    shutil.rmtree(where, ignore_errors=True)


def test_unix_socket_connect_to_a_host_socket(backend, host_unix_socket):
    path, srv = host_unix_socket
    # Where the host's socket is not visible (docker), the run tries one of its own.
    refuses(backend, f"""
    def f():
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        except OSError as exc:
            return name(exc.errno)
        try:
            if os.path.exists({path!r}):
                s.connect({path!r})
                return "allowed: connected to the host's socket"
            own = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            own.bind("own.sock")
            own.listen(1)
            s.connect("own.sock")
            return "allowed: connected to its own socket"
        except OSError as exc:
            return "socket made, then " + name(exc.errno)
    """)
    with pytest.raises(BlockingIOError):
        srv.accept()  # nothing ever reached the host's socket


@pytest.mark.parametrize("family", ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_VSOCK"])
def test_socket_families(backend, family):
    # Families an unprivileged process may open (AF_PACKET would be refused
    # without the filter too, for want of CAP_NET_RAW).
    kind = "SOCK_RAW" if family == "AF_NETLINK" else "SOCK_STREAM"
    refuses(backend, f"""
    def f():
        try:
            socket.socket(socket.{family}, socket.{kind}, 0).close()
            return "allowed"
        except OSError as exc:
            return name(exc.errno)
    """, job_id=family)


def test_socketpair_and_asyncio_work(backend):
    """A connected pair inside the run reaches nothing outside it: asyncio's loop needs one."""
    refuses(backend, """
    import asyncio
    async def twice(x):
        await asyncio.sleep(0)
        return 2 * x
    def f():
        a, b = socket.socketpair()
        a.sendall(b"x")
        return "ok" if b.recv(1) == b"x" and asyncio.run(twice(21)) == 42 else "broken"
    """, expected="ok")


# --------------------------------------------------------------------------- other processes


def test_ptrace_traceme(backend):
    refuses(backend, """
    def f():
        ctypes.set_errno(0)
        ret = libc.ptrace(ctypes.c_long(0), 0, None, None)  # PTRACE_TRACEME
        return name(ctypes.get_errno()) if ret == -1 else "allowed"
    """)


def test_ptrace_attach_to_another_pid(backend):
    # Dumpable again (setuid cleared it), so without the filter the attach to
    # its own child would succeed.
    refuses(backend, """
    import signal, time

    def f():
        libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE
        child = os.fork()
        if child == 0:
            time.sleep(30)
            os._exit(0)
        try:
            ctypes.set_errno(0)
            ret = libc.ptrace(ctypes.c_long(16), ctypes.c_long(child), None, None)  # PTRACE_ATTACH
            return name(ctypes.get_errno()) if ret == -1 else "allowed"
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
    """)


def test_process_vm_readv(backend):
    refuses(backend, """
    class iovec(ctypes.Structure):
        _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

    def f():
        src, dst = ctypes.create_string_buffer(b"itercode", 8), ctypes.create_string_buffer(8)
        local, remote = iovec(ctypes.addressof(dst), 8), iovec(ctypes.addressof(src), 8)
        ctypes.set_errno(0)
        ret = libc.process_vm_readv(os.getpid(), ctypes.byref(local), ctypes.c_ulong(1), ctypes.byref(remote),
                                    ctypes.c_ulong(1), ctypes.c_ulong(0))
        return name(ctypes.get_errno()) if ret == -1 else "allowed: read %r" % dst.raw
    """)


# --------------------------------------------------------------------------- namespaces


def test_unshare_user_namespace(backend):
    refuses(backend, """
    def f():
        ctypes.set_errno(0)
        ret = libc.unshare(0x10000000)  # CLONE_NEWUSER
        return name(ctypes.get_errno()) if ret == -1 else "allowed"
    """)


def test_clone_with_a_new_user_namespace(backend):
    refuses(backend, """
    import signal

    def f():
        ret, err = raw(NR["clone"], 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)  # CLONE_NEWUSER
        if ret == 0:
            os._exit(0)  # the child of a clone that went through
        if ret > 0:
            os.waitpid(ret, 0)
            return "allowed"
        return err
    """)


def test_clone3_answers_enosys(backend):
    # Its flags sit behind a pointer the filter cannot read: every clone3 gets
    # ENOSYS, on which libc falls back to clone (see the ordinary-programs test).
    refuses(backend, """
    import signal

    def f():
        args = ctypes.create_string_buffer(88)  # struct clone_args (v2)
        struct.pack_into("Q", args, 0, 0x10000000)  # flags: CLONE_NEWUSER
        struct.pack_into("Q", args, 32, signal.SIGCHLD)  # exit_signal
        ret, err = raw(NR["clone3"], args, 88)
        if ret == 0:
            os._exit(0)
        if ret > 0:
            os.waitpid(ret, 0)
            return "allowed"
        return err
    """, expected="ENOSYS")


def test_mount(backend):
    # A missing target: past the filter the kernel looks it up first (ENOENT).
    refuses(backend, """
    def f():
        ctypes.set_errno(0)
        ret = libc.mount(b"none", b"/no-such-dir-itercode", b"tmpfs", ctypes.c_ulong(0), None)
        return name(ctypes.get_errno()) if ret == -1 else "allowed"
    """)


# --------------------------------------------------------------------------- kernel surfaces


def test_bpf(backend):
    refuses(backend, """
    def f():
        return refused(NR["bpf"], 0, 0, 0)  # BPF_MAP_CREATE, no attributes: EINVAL past the filter
    """)


def test_perf_event_open(backend):
    refuses(backend, """
    def f():
        return refused(NR["perf_event_open"], 0, 0, -1, -1, 0)  # NULL attr: EFAULT past the filter
    """)


def test_keyctl(backend):
    refuses(backend, """
    def f():
        return refused(NR["keyctl"], 0, -3, 0)  # KEYCTL_GET_KEYRING_ID of the session keyring
    """)


def test_add_key(backend):
    refuses(backend, """
    def f():
        return refused(NR["add_key"], ctypes.c_char_p(b"user"), ctypes.c_char_p(b"itercode"),
                       ctypes.c_char_p(b"x"), 1, -2)  # into the process keyring
    """)


def test_userfaultfd(backend):
    refuses(backend, """
    def f():
        return refused(NR["userfaultfd"], 1 | os.O_CLOEXEC)  # UFFD_USER_MODE_ONLY: allowed unprivileged
    """)


def test_io_uring_setup(backend):
    refuses(backend, """
    def f():
        return refused(NR["io_uring_setup"], 1, ctypes.create_string_buffer(120))
    """)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the x32 ABI exists on x86_64 only")
def test_a_foreign_abi_kills_the_process(backend):
    # getpid through the x32 ABI (syscall number | 0x40000000): the filter
    # matches the native ABI only and kills the process for any other.
    job = Job("x32", PRELUDE + "def f():\n    return refused(0x40000000 | 39)\n", "assert f() == 'killed'\n", "f")
    v = attack(backend, job, {ERROR})
    assert "SIGSYS" in v.stderr, v.stderr[:500]
    assert backend.run([CANONICAL], LIMITS)[0].status == PASSED
