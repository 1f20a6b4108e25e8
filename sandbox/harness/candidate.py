"""The candidate side: the process that runs the model's program.

It loads the program (its top-level code runs), looks up the entry point and
then serves calls: ``call`` frames in on one pipe, answers out on another,
as plain data. It never holds the tests: it is forked from the zygote, which
never received any job (see zygote.py).
"""
from __future__ import annotations

import builtins
import os
import traceback

from .plaindata import NotPlainData, dumps, loads
from .wire import MAX_DATA_FRAME, read_frame, write_frame

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
