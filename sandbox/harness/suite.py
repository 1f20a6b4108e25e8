"""The problem's side of a run, compiled once per problem: its trusted prefix
and its tests split into units (what counts as one test, and which failure
ends the run). The judge (judge.py) runs the units; `SuiteCache` keeps them
across the jobs of one problem.
"""
from __future__ import annotations

import ast


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
    """Split the tests into units: (is_a_test, stop_on_failure, code).

    Top-level statements: each ``assert`` is one test and a failed one does
    not stop the rest; any other statement is set-up, and its failure stops
    the tests. HumanEval style (a ``check(candidate)`` function): when its
    body is asserts alone, each assert is one test, run in order with
    ``candidate`` bound to the entry point, and the first failure ends the
    run as it ends ``check`` in process (so the verdict is the same; only
    ``tests_passed`` says how far it got: a fraction-of-tests reward has a
    spread). Any other ``check`` is one test.
    """
    tree = ast.parse(tests, "<tests>")
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return [(isinstance(node, ast.Assert), False, compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec"))
                for node in tree.body]
    setup = [(False, True, compile(tree, "<tests>", "exec"))]
    asserts = _check_asserts(check)
    if asserts is None:
        return setup + [(True, True, compile(f"check({entry_point})", "<tests>", "exec"))]
    bind = (False, True, compile(f"{check.args.args[0].arg} = {entry_point}", "<tests>", "exec"))
    return setup + [bind] + [(True, True, compile(ast.Module(body=[node], type_ignores=[]), "<tests>", "exec"))
                             for node in asserts]


def _check_asserts(check: ast.FunctionDef) -> list[ast.Assert] | None:
    """The asserts of a ``check(candidate)`` whose body (after a docstring) is
    nothing else and that takes exactly one plain argument; else None."""
    args = check.args
    if (len(args.args) != 1 or args.posonlyargs or args.kwonlyargs or args.vararg or args.kwarg or args.defaults
            or check.decorator_list):
        return None
    body = check.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body or not all(isinstance(node, ast.Assert) for node in body):
        return None
    return body


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
