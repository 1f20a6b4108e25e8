"""The trusted in-sandbox harness: judges one candidate program per job.

Standard library only and self-contained, so any backend can run it unchanged
(the process backend starts it as a warm worker on the host; the docker
backend runs the same file inside a container). It speaks length-prefixed
JSON frames over two file descriptors: jobs in, verdicts out.

    python harness.py --config '{"slot": 0, ...}'     # serve on stdin/stdout

How one job runs (the tests never run in the candidate's process):

- The *candidate* process executes the program (its top-level code runs), looks
  up the entry point and then serves calls: it reads ``call`` frames from one
  pipe and answers on another. Its stdout/stderr go to a pipe the worker
  drains and caps. It cannot see the tests' text.
- The *judge* process (one per worker, long-lived, another uid, not
  dumpable) receives the two call pipes over a unix socket (SCM_RIGHTS) and
  executes the problem's trusted prefix (e.g. HumanEval's prompt and its
  helper functions) and the tests in a fresh namespace, with the entry point
  bound to a stub that calls the candidate. Arguments and results cross as plain data
  (a tagged JSON encoding, decoded defensively with size caps), so no object of
  the candidate's (an always-equal ``__eq__``, a patched builtin) ever reaches
  the tests. HumanEval-style tests define ``check(candidate)`` and are called
  with the stub; MBPP-style tests are bare statements that call the entry point
  by name: each top-level ``assert`` is one test.
- The verdict travels from the judge to the worker on a pipe the candidate
  never holds; what the candidate prints means nothing.

Isolation the worker adds when it can (see ``Worker`` and the process
backend's module docstring for the exact coverage): per worker a network
namespace, a read-only view of the host's mounts, size-capped private tmpfs
on /tmp (the work dir) and /dev/shm wiped after every run, /proc with
hidepid=2, and a cgroup (memory, pids); per run a PID and an IPC namespace
(killing the run's init kills every process it made, daemons included),
rlimits, and separate unprivileged uids for the candidate and the judge.
"""
from __future__ import annotations

import ast
import builtins
import ctypes
import errno
import fcntl
import gc
import json
import math
import os
import resource
import select
import signal
import socket
import struct
import sys
import time
import traceback

HARNESS_VERSION = "1"

# Verdict statuses (the same strings as sandbox/base.py; repeated here so the
# harness stays self-contained inside a container).
PASSED, FAILED, ERROR, TIMEOUT, OOM, INFRA_ERROR = "passed", "failed", "error", "timeout", "oom", "infra_error"

MAX_CONTROL_FRAME = 256 << 20  # jobs from the host (trusted)
MAX_DATA_FRAME = 32 << 20  # one call or one result crossing between judge and candidate
MAX_DEPTH = 200  # nesting depth of plain data

# --------------------------------------------------------------------------- framing


def write_frame(fd: int, payload: bytes) -> None:
    """Write one length-prefixed frame, retrying short writes."""
    data = struct.pack(">I", len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


class FrameTooLarge(Exception):
    pass


def read_frame(fd: int, max_len: int) -> bytes | None:
    """Read one frame; None on a clean end of file. Refuses frames over ``max_len``."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    (n,) = struct.unpack(">I", head)
    if n > max_len:
        raise FrameTooLarge(f"frame of {n} bytes exceeds the cap of {max_len}")
    body = _read_exact(fd, n)
    if body is None:
        return None
    return body


# --------------------------------------------------------------------------- plain-data codec


class NotPlainData(TypeError):
    """A value that cannot cross between the judge and the candidate."""


_TAGS = ("t", "d", "s", "f", "b", "c", "r", "i")
MAX_ITER_ITEMS = 1_000_000  # an iterator crosses as the items it yields, up to this many


def _enc(x, depth):
    t = type(x)  # exact types only: a subclass could override __eq__
    if t is str or t is int or t is bool or t is float or x is None:
        return x
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested too deeply")
    depth += 1
    if t is list:
        return [_enc(v, depth) for v in x]
    if t is tuple:
        return {"t": [_enc(v, depth) for v in x]}
    if t is dict:
        return {"d": [[_enc(k, depth), _enc(v, depth)] for k, v in x.items()]}
    if t is set:
        return {"s": [_enc(v, depth) for v in x]}
    if t is frozenset:
        return {"f": [_enc(v, depth) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if hasattr(t, "__next__") and hasattr(t, "__iter__"):
        # A generator, map, zip... crosses as its items and arrives as an
        # iterator over them, so `tuple(candidate(x))` works as in-process
        # and `candidate(x) == [..]` stays False, as for a real generator.
        items = []
        for item in x:
            if len(items) >= MAX_ITER_ITEMS:
                raise NotPlainData(f"an iterator yielded more than {MAX_ITER_ITEMS} items")
            items.append(_enc(item, depth))
        return {"i": items}
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def _dec(x, depth):
    t = type(x)
    if t is str or t is int or t is bool or t is float or x is None:
        return x
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    depth += 1
    if t is list:
        return [_dec(v, depth) for v in x]
    if t is dict and len(x) == 1:
        (tag, body), = x.items()
        if tag == "t" and type(body) is list:
            return tuple(_dec(v, depth) for v in body)
        if tag == "d" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("malformed dict entry")
                out[_dec(pair[0], depth)] = _dec(pair[1], depth)
            return out
        if tag == "s" and type(body) is list:
            return {_dec(v, depth) for v in body}
        if tag == "f" and type(body) is list:
            return frozenset(_dec(v, depth) for v in body)
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "r" and type(body) is list and len(body) == 3 and all(type(v) is int for v in body) and body[2]:
            return range(*body)
        if tag == "i" and type(body) is list:
            return iter([_dec(v, depth) for v in body])
        if tag == "c" and type(body) is list and len(body) == 2:
            re_, im = body
            if type(re_) in (int, float) and type(im) in (int, float):
                return complex(re_, im)
    raise ValueError(f"malformed plain-data value of type {t.__name__}")


def dumps(obj) -> bytes:
    """Encode plain data (numbers incl. nan/inf, str, bytes, bool, None, list,
    tuple, dict, set, frozenset, complex, range; an iterator as its items) as
    tagged JSON bytes."""
    return json.dumps(_enc(obj, 0), separators=(",", ":")).encode()


def loads(data: bytes):
    """Decode what ``dumps`` made; any malformed input raises ValueError."""
    try:
        return _dec(json.loads(data), 0)
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"undecodable plain data: {type(exc).__name__}: {exc}"[:500]) from None


# --------------------------------------------------------------------------- kernel interfaces

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 0x1000, 0x4000, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID = 0x1, 0x2
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (a new syscall)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
SETUP_FAILED = 121  # exit code of a candidate process whose isolation setup failed

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


def _set_rlimit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


# --------------------------------------------------------------------------- the candidate side


class _CappedStream:
    """sys.stdout/sys.stderr of the candidate: forwards to a fd until ``cap``
    characters, then discards, so a chatty but correct program is not slowed
    down by the pipe (fd-level writes are capped by the worker as well)."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, fd: int, budget: list):
        self._fd, self._budget = fd, budget

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        left = self._budget[0]
        if left > 0:
            part = s[:left]
            self._budget[0] = left - len(part)
            try:
                os.write(self._fd, part.encode("utf-8", "replace"))
            except OSError:
                self._budget[0] = 0
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def fileno(self):
        return self._fd

    def writable(self):
        return True


def _send(fd: int, obj) -> None:
    write_frame(fd, dumps(obj))


def candidate_main(job: dict, req_fd: int, resp_fd: int) -> None:
    """Run inside the candidate process (already isolated): load the program,
    then answer calls until the judge closes the pipe. Never returns."""
    try:
        program, entry_point = job["program"], job["entry_point"]
        namespace = {"__name__": "__candidate__", "__builtins__": builtins}
        try:
            code = compile(program, "<candidate>", "exec")
            exec(code, namespace)
        except MemoryError:
            _send(resp_fd, ("load_oom", "MemoryError while loading the program"))
            os._exit(0)
        except BaseException as exc:  # noqa: BLE001 - SystemExit too: a hack is a load error
            tb = "".join(traceback.format_exception_only(type(exc), exc))[-4000:]
            _send(resp_fd, ("load_error", tb))
            os._exit(0)
        fn = namespace.get(entry_point)
        if not callable(fn):
            _send(resp_fd, ("load_error", f"the program does not define a function named {entry_point!r}"))
            os._exit(0)
        _send(resp_fd, ("ready",))
        while True:
            raw = read_frame(req_fd, MAX_DATA_FRAME)
            if raw is None:
                os._exit(0)
            args, kwargs = loads(raw)
            try:
                value = fn(*args, **kwargs)
                try:
                    payload = dumps(("ok", value))
                except NotPlainData as exc:
                    payload = dumps(("bad_return", str(exc)))
                except (ValueError, RecursionError) as exc:
                    payload = dumps(("bad_return", f"{type(exc).__name__}: {exc}"[:500]))
            except MemoryError:
                payload = dumps(("exc", "MemoryError", ""))
            except BaseException as exc:  # noqa: BLE001 - report every failure as data
                try:
                    name, msg = type(exc).__name__, str(exc)[:1000]
                except BaseException:  # noqa: BLE001 - a hostile __str__
                    name, msg = "Exception", "<unprintable>"
                payload = dumps(("exc", str(name)[:100], str(msg)))
            if len(payload) > MAX_DATA_FRAME:
                payload = dumps(("bad_return", f"result of {len(payload)} bytes exceeds the cap"))
            write_frame(resp_fd, payload)
    except BaseException:  # noqa: BLE001
        os._exit(3)
    os._exit(0)


# --------------------------------------------------------------------------- the judge side


class CandidateGone(BaseException):
    """The candidate process ended or broke the protocol. A BaseException so
    that a test's own ``except Exception`` cannot swallow it."""


class CandidateOOM(BaseException):
    """The candidate ran out of memory during a call."""


class UnsupportedArgument(BaseException):
    """The tests passed something that is not plain data to the candidate."""


class CandidateLoadFailed(BaseException):
    """The program did not load (its load report says why)."""

    def __init__(self, result: dict):
        super().__init__(result.get("message", ""))
        self.result = result


def _read_load_report(resp_fd: int, state: dict) -> None:
    """Consume the candidate's load report; raise unless it says ready.

    The judge does not wait for it before the first call: the call is queued
    in the pipe while the program loads, which saves one round trip per run."""
    if state["ready"]:
        return
    try:
        raw = read_frame(resp_fd, MAX_DATA_FRAME)
    except (OSError, FrameTooLarge):
        raw = b""
    if raw is None:
        raise CandidateLoadFailed({"status": ERROR, "died": True,
                                   "message": "the candidate process ended before it was ready (exit during load)"})
    try:
        report = loads(raw)
    except ValueError:
        report = ("bad",)
    if type(report) is not tuple or not report:
        report = ("bad",)
    if report[0] == "ready":
        state["ready"] = True
        return
    if report[0] == "load_oom":
        raise CandidateLoadFailed({"status": OOM, "message": "MemoryError while loading the program"})
    if report[0] == "load_error" and len(report) == 2:
        raise CandidateLoadFailed({"status": ERROR, "message": str(report[1])[:4000]})
    raise CandidateLoadFailed({"status": ERROR, "message": "malformed load report"})


class CandidateError(Exception):
    """An exception raised inside the candidate whose type is not a builtin."""


def _rebuild_exception(name: str, msg: str) -> BaseException:
    cls = getattr(builtins, name, None)
    if isinstance(cls, type) and issubclass(cls, Exception):
        try:
            return cls(msg)
        except Exception:  # noqa: BLE001 - e.g. UnicodeDecodeError needs 5 args
            pass
    return CandidateError(f"{name}: {msg}")


def make_stub(entry_point: str, req_fd: int, resp_fd: int, state: dict):
    """The function the tests see under the entry point's name."""

    def stub(*args, **kwargs):
        try:
            payload = dumps((list(args), kwargs))
        except NotPlainData as exc:
            raise UnsupportedArgument(f"the tests passed a non-plain argument to {entry_point}: {exc}") from None
        state["calls"] += 1
        try:
            write_frame(req_fd, payload)
        except OSError as exc:
            _read_load_report(resp_fd, state)  # a program that never loaded says so here
            raise CandidateGone(f"candidate channel failed: {exc}") from None
        _read_load_report(resp_fd, state)
        try:
            raw = read_frame(resp_fd, MAX_DATA_FRAME)
        except (OSError, FrameTooLarge) as exc:
            raise CandidateGone(f"candidate channel failed: {exc}") from None
        if raw is None:
            raise CandidateGone("the candidate process ended during a call")
        try:
            reply = loads(raw)
            kind = reply[0]
        except (ValueError, TypeError, IndexError):
            raise CandidateGone("the candidate sent a malformed reply") from None
        if kind == "ok" and len(reply) == 2:
            return reply[1]
        if kind == "exc" and len(reply) == 3 and type(reply[1]) is str and type(reply[2]) is str:
            if reply[1] == "MemoryError":
                state["oom"] = True
                raise CandidateOOM("MemoryError in the candidate")
            raise _rebuild_exception(reply[1], reply[2])
        if kind == "bad_return" and len(reply) == 2:
            raise TypeError(f"{entry_point} returned a value that is not plain data ({str(reply[1])[:300]})")
        raise CandidateGone("the candidate sent an unknown reply")

    stub.__name__ = stub.__qualname__ = entry_point
    return stub


def _compile_prefix(prefix: str):
    """Compile the trusted prefix; a prompt that ends mid-function gets a body."""
    if not prefix.strip():
        return None, ""
    for text in (prefix, prefix.rstrip() + "\n    pass\n"):
        try:
            return compile(text, "<prefix>", "exec"), ""
        except SyntaxError:
            continue
    return None, "note: the problem's prefix does not compile; the tests run without it\n"


def _compile_tests(tests: str, entry_point: str):
    """Split the tests into units: (is_a_test, code). HumanEval style (a
    ``check`` function) is one test; otherwise each top-level assert is one."""
    tree = ast.parse(tests, "<tests>")
    has_check = any(isinstance(n, ast.FunctionDef) and n.name == "check" for n in tree.body)
    if has_check:
        units = [(False, compile(tree, "<tests>", "exec")), (True, compile(f"check({entry_point})", "<tests>", "exec"))]
    else:
        units = [(isinstance(node, ast.Assert), compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec"))
                 for node in tree.body]
    return units


class SuiteCache:
    """Compiled prefixes and tests, reused across jobs of the same problem
    (the judge is long-lived; n samples per problem share one compile)."""

    def __init__(self, size: int = 512):
        self.size, self.items = size, {}

    def get(self, prefix: str, tests: str, entry_point: str):
        key = (prefix, tests, entry_point)
        hit = self.items.get(key)
        if hit is None:
            prefix_code, note = _compile_prefix(prefix)
            try:
                units, error = _compile_tests(tests, entry_point), ""
            except SyntaxError as exc:
                units, error = None, f"the tests do not parse: {exc}"
            hit = (prefix_code, note, units, error)
            if len(self.items) >= self.size:
                self.items.pop(next(iter(self.items)))
            self.items[key] = hit
        return hit


def _format_failure(exc: BaseException) -> str:
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next  # the harness's own frames say nothing about the test
    return "".join(traceback.format_exception(type(exc), exc, tb, limit=-4))[-3000:]


def judge(job: dict, req_fd: int, resp_fd: int, cache: SuiteCache) -> dict:
    """Run the tests against the candidate behind the stub; return the result."""
    state = {"calls": 0, "oom": False, "ready": False}
    try:
        result = _judge_tests(job, req_fd, resp_fd, cache, state)
        _read_load_report(resp_fd, state)  # tests that never called still need a loaded program
    except CandidateLoadFailed as exc:
        return {"tests_passed": 0, "tests_total": 0, **exc.result}
    return result


def _judge_tests(job: dict, req_fd: int, resp_fd: int, cache: SuiteCache, state: dict) -> dict:
    entry_point = job["entry_point"]
    prefix_code, note, units, error = cache.get(job.get("trusted_prefix", ""), job["tests"], entry_point)
    if units is None:
        return {"status": INFRA_ERROR, "tests_passed": 0, "tests_total": 0, "message": error}
    ns: dict = {"__name__": "__judge__", "__builtins__": builtins}
    if prefix_code is not None:
        try:
            exec(prefix_code, ns)
        except BaseException as exc:  # noqa: BLE001
            note = f"note: the problem's prefix raised {type(exc).__name__}: {exc}\n"
    ns[entry_point] = make_stub(entry_point, req_fd, resp_fd, state)
    total = sum(1 for is_test, _ in units if is_test) or 1
    passed, first_failure = 0, ""
    for is_test, code in units:
        try:
            exec(code, ns)
            if is_test:
                passed += 1
        except CandidateLoadFailed:
            raise
        except CandidateGone as exc:
            return {"status": ERROR, "tests_passed": passed, "tests_total": total, "died": True, "loaded": True,
                    "message": note + str(exc)}
        except CandidateOOM:
            return {"status": OOM, "tests_passed": passed, "tests_total": total,
                    "message": note + "MemoryError in the candidate"}
        except UnsupportedArgument as exc:
            return {"status": INFRA_ERROR, "tests_passed": passed, "tests_total": total, "message": note + str(exc)}
        except BaseException as exc:  # noqa: BLE001 - any failure of the tests' code
            if not first_failure:
                first_failure = _format_failure(exc)
            if not is_test:
                break  # setup failed: later tests cannot run meaningfully
    if not any(is_test for is_test, _ in units) and not first_failure:
        passed = 1  # no top-level assert: the tests as a whole are the one test
    if state["oom"] and passed < total:
        return {"status": OOM, "tests_passed": passed, "tests_total": total, "message": note + first_failure}
    status = PASSED if passed == total and not first_failure else FAILED
    return {"status": status, "tests_passed": passed, "tests_total": total, "message": note + first_failure}


def _flush_stdio() -> None:
    """Flush our stdout/stderr before a fork, so the child does not write our buffered text again."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass


def judge_serve(sock) -> None:
    """The long-lived judge: per job, receive the two call pipes (SCM_RIGHTS)
    and the job, judge it, answer. Runs until the socket closes."""
    cache = SuiteCache()
    fd = sock.fileno()
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1, 2)
        if not msg:
            return
        raw = read_frame(fd, MAX_CONTROL_FRAME)
        if raw is None or len(fds) != 2:
            return
        req_fd, resp_fd = fds
        try:
            job = json.loads(raw)
            try:
                result = judge(job, req_fd, resp_fd, cache)
            except MemoryError:
                result = {"status": INFRA_ERROR, "message": "the judge ran out of memory"}
            result["job_id"] = job.get("job_id", "")
        finally:
            os.close(req_fd)
            os.close(resp_fd)
        write_frame(fd, json.dumps(result).encode())


# --------------------------------------------------------------------------- the worker


def _close_fds_except(keep: set[int]) -> None:
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


def _move_fds(mapping: dict[int, int]) -> None:
    """dup2 each source fd onto its target without clobbering later sources."""
    # Park the sources above every target first, so no dup2 clobbers a source.
    tmp = {src: fcntl.fcntl(src, fcntl.F_DUPFD, 64) for src in mapping}
    for src, dst in mapping.items():
        os.dup2(tmp[src], dst, inheritable=True)
    for fd in tmp.values():
        os.close(fd)


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


class Worker:
    """One warm worker slot: isolates itself once, keeps a long-lived judge
    process, and forks a fresh, isolated candidate per job. ``config`` keys
    (all optional):

    slot (int), candidate_uid / judge_uid (int, used when running as root),
    namespaces ("auto" | "on" | "off"), cgroup_name (str: cgroup v1 group
    under memory/ and pids/ to create for this slot, "" for none),
    tmpfs_mb (size of the private /tmp and /dev/shm each).
    """

    def __init__(self, config: dict):
        self.config = config
        self.slot = int(config.get("slot", 0))
        self.is_root = os.geteuid() == 0
        self.candidate_uid = int(config.get("candidate_uid", 65534)) if self.is_root else None
        self.judge_uid = int(config.get("judge_uid", 65533)) if self.is_root else None
        self.tmpfs_mb = int(config.get("tmpfs_mb", 64))
        self.notes: list[str] = []
        self.netns = self.mountns = self.pidns = self.readonly = False
        self.cgroups: dict[str, str] = {}
        self._pidns_fd = -1
        self._limits_key = None
        self.scratch: list[str] = []  # dirs wiped after every run
        self.judge_pid, self.judge_sock = -1, None
        mode = config.get("namespaces", "auto")
        if mode != "off":
            self._isolate_once(required=(mode == "on"))
        if config.get("cgroup_name"):
            self._make_cgroups(config["cgroup_name"])
        for name in PRELOAD:
            try:
                __import__(name)
            except ImportError:
                pass
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        # Work done once here rather than in every run: the environment is
        # scrubbed, the worker leads its own session (no controlling
        # terminal for any run), the libc entry points are resolved.
        os.environ.clear()
        os.environ.update(SAFE_ENV)
        if os.getsid(0) != os.getpid():
            try:
                os.setsid()
            except OSError:
                pass
        for name in ("unshare", "setns", "mount", "prctl", "syscall"):
            getattr(libc(), name)
        self._devnull = os.open("/dev/null", os.O_RDWR)
        # The run's stdout/stderr objects, made once: a fork gets its own copy.
        self._budget = [0]
        self._streams = (_CappedStream(1, self._budget), _CappedStream(2, self._budget))
        gc.collect()
        gc.freeze()  # keep the warm heap shared with forked children

    # -- one-time isolation ------------------------------------------------
    def _isolate_once(self, required: bool) -> None:
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
            self._fail(required, f"no mount namespace ({exc}); /tmp and /dev/shm are shared with the host")
        if self.mountns:
            try:
                self._expose_interpreter()
            except OSError as exc:
                self.notes.append(f"could not expose the interpreter to the run's uid ({exc})")
            try:
                mount_setattr_recursive("/", attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID)
                self.readonly = True
            except OSError as exc:
                self._fail(False, f"could not make the host's mounts read-only ({exc})")
            if self.readonly and os.path.isdir("/sys/fs/cgroup"):
                try:  # the worker still attaches runs to its cgroups
                    mount_setattr_recursive("/sys/fs/cgroup", attr_clr=MOUNT_ATTR_RDONLY)
                except OSError:
                    pass
            # The candidates' /tmp (their work dir) and /dev/shm: private to this
            # worker, size- and inode-capped, wiped after every run. A proc
            # instance with hidepid=2 shows each uid only its own processes.
            owner = "mode=1777" if self.candidate_uid is None else f"mode=0700,uid={self.candidate_uid},gid={self.candidate_uid}"
            opts = f"size={self.tmpfs_mb}m,nr_inodes=8192,{owner}"
            try:
                mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, opts)
                self.scratch = ["/tmp"]
                if os.path.isdir("/dev/shm"):
                    mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, opts)
                    self.scratch.append("/dev/shm")
            except OSError as exc:
                self._fail(required, f"no private /tmp ({exc})")
            try:
                mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
            except OSError as exc:
                self.notes.append(f"no private /proc ({exc}): runs can list the host's processes")
        try:
            self._pidns_fd = os.open("/proc/self/ns/pid", os.O_RDONLY)
            unshare(CLONE_NEWPID)
            setns(self._pidns_fd, CLONE_NEWPID)  # only probing; each run gets a fresh one
            self.pidns = self.mountns
        except OSError as exc:
            self._fail(required, f"no PID namespace ({exc}); a run's tree is killed by process group and cgroup only")

    def _expose_interpreter(self) -> None:
        """Let the unprivileged uids reach the interpreter's files.

        An interpreter under a directory others cannot enter (here
        /root/.pyenv under /root, mode 0700) would leave runs unable to import
        any module not preloaded. In this worker's mount namespace such a
        directory is replaced by an empty tmpfs (mode 0711) into which only
        the needed children are bind-mounted back, so the runs see the
        interpreter and nothing else of it (not root's other files)."""
        needed = {os.path.realpath(p) for p in [sys.base_prefix, sys.prefix, os.path.dirname(sys.executable), *sys.path]
                  if p and os.path.exists(p)}
        blocked: dict[str, set[str]] = {}
        for path in sorted(needed):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                ancestor = "/" + "/".join(parts[:i])
                if not os.stat(ancestor).st_mode & 0o001:
                    blocked.setdefault(ancestor, set()).add(parts[i])
                    break
        for ancestor, children in blocked.items():
            handles = {c: os.open(os.path.join(ancestor, c), os.O_PATH) for c in children}
            mount("tmpfs", ancestor, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0711,size=1m")
            for child, fd in handles.items():
                os.mkdir(os.path.join(ancestor, child))
                mount(f"/proc/self/fd/{fd}", os.path.join(ancestor, child), None, MS_BIND | MS_REC)
                os.close(fd)
            self.notes.append(f"{ancestor} is hidden from runs except {sorted(children)}")

    def _fail(self, required: bool, note: str) -> None:
        if required:
            raise RuntimeError(note)
        self.notes.append(note)

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
            try:  # the memory limit's OOM killer must pick the run, never the worker or the judge
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write("-1000")
            except OSError:
                pass

    def close(self) -> None:
        """Stop the judge and remove this slot's cgroups (moving out first)."""
        self._stop_judge()
        for controller, path in self.cgroups.items():
            self._kill_cgroup(path)
            try:
                with open(f"/sys/fs/cgroup/{controller}/cgroup.procs", "w") as f:
                    f.write(str(os.getpid()))
                os.rmdir(path)
            except OSError:
                pass

    def _kill_cgroup(self, path: str) -> int:
        """SIGKILL whatever of a run is left in the slot's cgroup (not the worker or judge)."""
        killed = 0
        spare = {os.getpid(), self.judge_pid}
        for _ in range(50):
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    pids = [int(p) for p in f.read().split() if int(p) not in spare]
            except OSError:
                return killed
            if not pids:
                return killed
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
            time.sleep(0.01)
        return killed

    def _apply_cgroup_limits(self, limits: dict) -> None:
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
                try:
                    with open(os.path.join(mem, fname), "w") as f:
                        f.write(str(total))
                except OSError:
                    pass
        pids = self.cgroups.get("pids")
        if pids:
            try:
                with open(os.path.join(pids, "pids.max"), "w") as f:
                    f.write(str(limits["max_processes"] + 2))
            except OSError:
                pass

    def _oom_kills(self) -> int:
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
        return {"slot": self.slot, "pid": os.getpid(), "root": self.is_root, "netns": self.netns,
                "mountns": self.mountns, "pidns": self.pidns, "readonly_host": self.readonly,
                "cgroups": sorted(self.cgroups), "candidate_uid": self.candidate_uid,
                "judge_uid": self.judge_uid, "notes": self.notes, "version": HARNESS_VERSION}

    # -- the judge -----------------------------------------------------------
    def _start_judge(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        _flush_stdio()
        pid = os.fork()
        if pid == 0:
            try:
                parent.close()
                os.chdir("/")
                if self.judge_uid is not None:
                    os.setgroups([])
                    os.setresgid(self.judge_uid, self.judge_uid, self.judge_uid)
                    os.setresuid(self.judge_uid, self.judge_uid, self.judge_uid)
                prctl(PR_SET_DUMPABLE, 0)  # nobody attaches to, or reads the memory of, the judge
                prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
                _set_rlimit(resource.RLIMIT_CORE, 0)
                _set_rlimit(resource.RLIMIT_FSIZE, 1 << 20)
                _set_rlimit(resource.RLIMIT_AS, 4 << 30)
                devnull = os.open("/dev/null", os.O_RDWR)
                _move_fds({devnull: 0, child.fileno(): 3})
                os.dup2(0, 1)
                os.dup2(0, 2)
                _close_fds_except({0, 1, 2, 3})
                judge_serve(socket.socket(fileno=3))
            finally:
                os._exit(0)
        child.close()
        self.judge_pid, self.judge_sock = pid, parent

    def _judge_gone(self) -> bool:
        try:
            pid, _ = os.waitpid(self.judge_pid, os.WNOHANG)
        except ChildProcessError:
            return True
        return pid != 0

    def _stop_judge(self) -> None:
        if self.judge_sock is not None:
            self.judge_sock.close()
            self.judge_sock = None
        if self.judge_pid > 0:
            try:
                os.kill(self.judge_pid, signal.SIGKILL)
            except OSError:
                pass
            self._reap(self.judge_pid)
            self.judge_pid = -1

    # -- per-run process setup ----------------------------------------------
    def _enter_candidate(self, limits: dict, out_w: int, req_r: int, resp_w: int) -> tuple[int, int]:
        """In the forked candidate (still root): finish isolation, drop to
        the slot's uid, arrange fds. Returns the call fds.

        Every line here runs once per run, in a fresh fork: it avoids
        `import` statements and new objects, since each page it touches
        is a copy-on-write fault (measured as the bulk of a run's cost)."""
        if self.pidns:
            unshare(CLONE_NEWIPC)  # SysV IPC objects die with the run
        else:
            os.setpgid(0, 0)  # without a PID namespace the run is killed by process group
        os.chdir(self._workdir)
        # fds first: F_DUPFD above 64 must happen before RLIMIT_NOFILE may drop below it.
        _move_fds({self._devnull: 0, out_w: 1, req_r: 3, resp_w: 4})
        os.dup2(1, 2)
        os.closerange(5, 1 << 20)  # one close_range(2) call
        cpu = int(math.ceil(limits["timeout_s"])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        _set_rlimit(resource.RLIMIT_AS, limits["memory_mb"] << 20)
        _set_rlimit(resource.RLIMIT_FSIZE, limits["max_file_mb"] << 20)
        _set_rlimit(resource.RLIMIT_NOFILE, limits["max_open_files"])
        _set_rlimit(resource.RLIMIT_CORE, 0)
        if self.cgroups:
            fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY)
            os.write(fd, b"1000")  # the run is what the memory limit's OOM killer takes
            os.close(fd)
        if self.candidate_uid is not None:
            os.setgroups([])
            os.setresgid(self.candidate_uid, self.candidate_uid, self.candidate_uid)
            _set_rlimit(resource.RLIMIT_NPROC, limits["max_processes"])
            os.setresuid(self.candidate_uid, self.candidate_uid, self.candidate_uid)
        if not (self.readonly and self.cgroups):
            # Every mount is nosuid and the host sweeps the slot's cgroup when
            # a worker dies; without those, the process has to guard itself.
            prctl(PR_SET_NO_NEW_PRIVS, 1)
            prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # after setuid, which clears it
        self._budget[0] = limits["max_output_kb"] << 10
        sys.stdout = sys.__stdout__ = self._streams[0]
        sys.stderr = sys.__stderr__ = self._streams[1]
        return 3, 4

    def run_job(self, job: dict, control_fd: int | None = None) -> dict:
        """Judge one job; return the verdict dict. Never raises for a bad program."""
        t0 = time.monotonic()
        limits = job["limits"]
        try:
            verdict = self._run(job, limits, t0, control_fd)
        except Exception as exc:  # noqa: BLE001 - a sandbox failure, not the program's
            self._stop_judge()
            verdict = {"status": INFRA_ERROR, "tests_passed": 0, "tests_total": 0,
                       "stderr": f"sandbox failure: {type(exc).__name__}: {exc}"}
        verdict["job_id"] = job.get("job_id", "")
        verdict["duration_s"] = round(time.monotonic() - t0, 6)
        return verdict

    def _run(self, job: dict, limits: dict, t0: float, control_fd: int | None) -> dict:
        if self.judge_sock is not None and self._judge_gone():
            self._stop_judge()  # killed from outside (e.g. a container server's kill(-1) sweep)
        if self.judge_sock is None:
            self._start_judge()
        self._apply_cgroup_limits(limits)
        oom_before = self._oom_kills() if self.cgroups else 0
        self._own_workdir = False
        if limits.get("_workdir"):  # the caller made (and cleans) the run's directory
            self._workdir = limits["_workdir"]
        elif self.scratch:
            self._workdir = self.scratch[0]
        else:  # no private /tmp: a fresh directory per run, removed afterwards
            self._own_workdir = True
            import tempfile

            self._workdir = tempfile.mkdtemp(prefix="itercode-run-")
            if self.candidate_uid is not None:
                os.chown(self._workdir, self.candidate_uid, self.candidate_uid)
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        out_r, out_w = os.pipe()
        cand_pid = -1
        _flush_stdio()  # nothing buffered here may leak into the run's output
        try:
            if self.pidns:
                unshare(CLONE_NEWPID)  # the next child is the init of a fresh PID namespace
            try:
                cand_pid = os.fork()
            finally:
                if self.pidns and cand_pid != 0:
                    setns(self._pidns_fd, CLONE_NEWPID)
            if cand_pid == 0:
                try:
                    fds = self._enter_candidate(limits, out_w, req_r, resp_w)
                except BaseException as exc:  # noqa: BLE001
                    for fd in (1, out_w):
                        try:
                            os.write(fd, f"sandbox setup failed: {exc!r}\n".encode())
                            break
                        except OSError:
                            pass
                    os._exit(SETUP_FAILED)
                candidate_main(job, *fds)
            os.close(req_r)
            os.close(resp_w)
            os.close(out_w)
            req_r = resp_w = out_w = -1
            judge_job = json.dumps({k: job[k] for k in ("job_id", "tests", "entry_point", "trusted_prefix") if k in job}).encode()
            for attempt in range(2):
                try:
                    socket.send_fds(self.judge_sock, [b"J"], [req_w, resp_r])
                    write_frame(self.judge_sock.fileno(), judge_job)
                    break
                except OSError:
                    if attempt:
                        raise
                    self._stop_judge()  # it died since the last job: start another
                    self._start_judge()
            os.close(req_w)
            os.close(resp_r)
            req_w = resp_r = -1
            result, output, timed_out, aborted = self._wait(out_r, t0 + limits["timeout_s"],
                                                            limits["max_output_kb"] << 10, control_fd)
        finally:
            if cand_pid > 0:
                try:
                    os.kill(cand_pid, signal.SIGKILL)  # the PID namespace's init: every process of the run dies
                except OSError:
                    pass
            for fd in (req_r, req_w, resp_r, resp_w, out_w):
                if fd >= 0:
                    os.close(fd)
        cand_status = self._reap(cand_pid)
        if not self.pidns:
            # No PID namespace: kill the run's process group, then whatever left it
            # (setsid) through the slot's cgroup. With one, reaping the namespace's
            # init above already guaranteed that every process of the run is gone.
            if cand_pid > 0:
                try:
                    os.killpg(cand_pid, signal.SIGKILL)
                except OSError:
                    pass
            for path in self.cgroups.values():
                self._kill_cgroup(path)
        self._wipe()
        output += self._drain(out_r)
        os.close(out_r)
        if result is None and self.judge_sock is not None:
            # The candidate is gone, so a healthy judge answers at once; one that
            # does not (stuck in the tests' own code) is replaced.
            result = self._judge_reply(time.monotonic() + 1.0)
            if result is None:
                self._stop_judge()
            elif timed_out:
                result = None
        if result is not None and result.get("job_id") != job.get("job_id", ""):
            self._stop_judge()  # an answer to some other job: the judge is out of step
            result = None
        if aborted:
            raise RuntimeError("the worker was told to stop")
        oomed = self.cgroups and self._oom_kills() > oom_before
        cand_note = self._describe_exit(cand_status)
        if timed_out:
            status, passed, total, message = TIMEOUT, 0, 0, f"wall-clock timeout of {limits['timeout_s']} s"
        elif result is None:
            status, passed, total, message = INFRA_ERROR, 0, 0, "the test process died without a verdict"
        else:
            status = result.get("status", INFRA_ERROR)
            passed, total = int(result.get("tests_passed", 0)), int(result.get("tests_total", 0))
            message = str(result.get("message", ""))
            if result.get("died"):
                sig = -cand_status if cand_status is not None and cand_status < 0 else None
                if cand_status == SETUP_FAILED and not result.get("loaded"):
                    # A run that never got going is the sandbox's failure (retried
                    # once by the caller); a program faking it cannot pass either.
                    status = INFRA_ERROR
                elif oomed:
                    status, message = OOM, message + " (killed by the memory limit)"
                elif sig == signal.SIGXCPU:
                    status, message = TIMEOUT, message + " (CPU time limit)"
                elif cand_note:
                    message += f" ({cand_note})"
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

    def _wipe(self) -> None:
        """Remove everything the run left in its work dir and /dev/shm (all
        its processes are dead by now, so nothing races the removal)."""
        import shutil

        if not self.scratch or self._workdir not in self.scratch:
            if self._own_workdir:
                shutil.rmtree(self._workdir, ignore_errors=True)
            return
        for top in self.scratch:
            with os.scandir(top) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(entry.path, ignore_errors=True)
                    else:
                        try:
                            os.unlink(entry.path)
                        except FileNotFoundError:
                            pass
            os.chmod(top, 0o700 if self.candidate_uid is not None else 0o1777)

    def _judge_reply(self, deadline: float) -> dict | None:
        """Read the judge's answer for the current job (None: no answer by the deadline)."""
        fd = self.judge_sock.fileno()
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        try:
            raw = read_frame(fd, MAX_CONTROL_FRAME)
            return None if raw is None else json.loads(raw)
        except (OSError, ValueError, FrameTooLarge):
            return None

    @staticmethod
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

    @staticmethod
    def _reap(pid: int) -> int | None:
        if pid <= 0:
            return None
        while True:
            try:
                _, status = os.waitpid(pid, 0)
            except ChildProcessError:
                return None
            except InterruptedError:
                continue
            return os.waitstatus_to_exitcode(status)

    @staticmethod
    def _drain(fd: int) -> bytes:
        os.set_blocking(fd, False)
        try:
            return os.read(fd, 1 << 16)
        except (BlockingIOError, OSError):
            return b""

    def _wait(self, out_r: int, deadline: float, cap: int, control_fd: int | None):
        """Wait for the judge's verdict, draining candidate output, until the deadline."""
        result, output, timed_out, aborted = None, bytearray(), False, False
        judge_fd = self.judge_sock.fileno()
        poller = select.poll()
        poller.register(judge_fd, select.POLLIN)
        poller.register(out_r, select.POLLIN)
        if control_fd is not None:
            poller.register(control_fd, 0)  # only hang-up: the host may queue the next job meanwhile
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
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
                    result = self._judge_reply(time.monotonic() + 5.0)
                    if result is None:
                        self._stop_judge()  # it died or broke the protocol
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
        return result, bytes(output), timed_out, aborted


def serve(in_fd: int, out_fd: int, config: dict) -> int:
    """The worker loop: one ready frame, then a verdict frame per job frame."""
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
            job = json.loads(raw)
            verdict = worker.run_job(job, control_fd=in_fd)
            write_frame(out_fd, json.dumps(verdict).encode())
    except (BrokenPipeError, SystemExit, KeyboardInterrupt):
        return 0
    finally:
        worker.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="itercode's in-sandbox harness (a warm worker).")
    parser.add_argument("--config", default="{}", help="JSON worker config (see Worker)")
    args = parser.parse_args(argv)
    # Keep the protocol off fds 0/1 so that nothing a child inherits can touch it.
    in_fd, out_fd = os.dup(0), os.dup(1)
    devnull = os.open("/dev/null", os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    return serve(in_fd, out_fd, json.loads(args.config))


if __name__ == "__main__":
    sys.exit(main())
