"""The judge side: runs the problem's trusted prefix and tests, with the
entry point bound to a stub that calls the candidate in another process.

HumanEval-style tests define ``check(candidate)`` and are called with the
stub; MBPP-style tests are bare statements that call the entry point by
name: each top-level ``assert`` is one test. The judge is long-lived (one per
worker, another uid, not dumpable) and caches compiled suites per problem.
"""
from __future__ import annotations

import ast
import builtins
import json
import os
import socket
import traceback

from .plaindata import NotPlainData, dumps, loads
from .wire import MAX_CONTROL_FRAME, MAX_DATA_FRAME, FrameTooLarge, read_frame, write_frame

_HARNESS_DIR = os.path.dirname(os.path.abspath(__file__))
PASSED, FAILED, ERROR, TIMEOUT, OOM, INFRA_ERROR = "passed", "failed", "error", "timeout", "oom", "infra_error"

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
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_HARNESS_DIR):
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
        # The problem's own fault, the same for every candidate: an error, not the host's.
        return {"status": ERROR, "tests_passed": 0, "tests_total": 0, "message": error}
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
            # A limit of the judge/candidate split, the same for every candidate of this problem.
            return {"status": ERROR, "tests_passed": passed, "tests_total": total, "message": note + str(exc)}
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
