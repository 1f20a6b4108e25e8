"""The building blocks of the synthetic task family (`codegen.synthetic`).

A `Pipeline` is a problem's structure: a domain (``ints``: a list ``xs``;
``text``: a string ``s``), a few steps drawn from the named primitives, and a
final line. From a pipeline come its prompt (one phrase per step, and an
example), its canonical solution (one line per step) and its tests:
`pick_tests` chooses inputs whose outputs reject every one-step mutant of the
solution (a dropped step, a changed constant, a swapped primitive), so passing
means the whole pipeline is right.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

from codegen.problems import Problem

NUM_TESTS = 8


@dataclass(frozen=True)
class Primitive:
    """One step: a phrase for the docstring and a line of code, both with {k}.

    ``kind`` is "step" for transformations and "final" for the return line.
    ``consts`` are the values {k} may take (empty: the primitive has none).
    """

    name: str
    domain: str
    kind: str
    phrase: str
    code: str
    consts: tuple = ()

    def render(self, k: Any) -> tuple[str, str]:
        return self.phrase.format(k=k), self.code.format(k=k)


def _p(name, domain, kind, phrase, code, consts=()):
    return Primitive(name, domain, kind, phrase, code, tuple(consts))


# fmt: off
INT_PRIMITIVES = [
    _p("add", "ints", "step", "add {k} to each number", "xs = [x + {k} for x in xs]", range(1, 10)),
    _p("sub", "ints", "step", "subtract {k} from each number", "xs = [x - {k} for x in xs]", range(1, 10)),
    _p("mul", "ints", "step", "multiply each number by {k}", "xs = [x * {k} for x in xs]", range(2, 10)),
    _p("square", "ints", "step", "square each number", "xs = [x * x for x in xs]"),
    _p("negate", "ints", "step", "negate each number", "xs = [-x for x in xs]"),
    _p("abs", "ints", "step", "take the absolute value of each number", "xs = [abs(x) for x in xs]"),
    _p("mod", "ints", "step", "replace each number by its remainder modulo {k}", "xs = [x % {k} for x in xs]", range(2, 10)),
    _p("div", "ints", "step", "integer-divide each number by {k}", "xs = [x // {k} for x in xs]", range(2, 10)),
    _p("even", "ints", "step", "keep only the even numbers", "xs = [x for x in xs if x % 2 == 0]"),
    _p("odd", "ints", "step", "keep only the odd numbers", "xs = [x for x in xs if x % 2 == 1]"),
    _p("gt", "ints", "step", "keep only the numbers greater than {k}", "xs = [x for x in xs if x > {k}]", range(0, 10)),
    _p("lt", "ints", "step", "keep only the numbers less than {k}", "xs = [x for x in xs if x < {k}]", range(0, 10)),
    _p("multiple", "ints", "step", "keep only the multiples of {k}", "xs = [x for x in xs if x % {k} == 0]", range(2, 6)),
    _p("nonmultiple", "ints", "step", "remove the multiples of {k}", "xs = [x for x in xs if x % {k} != 0]", range(2, 6)),
    _p("positive", "ints", "step", "keep only the positive numbers", "xs = [x for x in xs if x > 0]"),
    _p("reverse", "ints", "step", "reverse the list", "xs = xs[::-1]"),
    _p("sort", "ints", "step", "sort the numbers in ascending order", "xs = sorted(xs)"),
    _p("sortdesc", "ints", "step", "sort the numbers in descending order", "xs = sorted(xs, reverse=True)"),
    _p("take", "ints", "step", "keep only the first {k} numbers", "xs = xs[:{k}]", range(1, 6)),
    _p("drop", "ints", "step", "drop the first {k} numbers", "xs = xs[{k}:]", range(1, 4)),
    _p("unique", "ints", "step", "remove repeated numbers, keeping first occurrences", "xs = list(dict.fromkeys(xs))"),
    _p("running", "ints", "step", "replace each number by the running total up to it", "xs = [sum(xs[:i + 1]) for i in range(len(xs))]"),
    _p("ret_list", "ints", "final", "return the resulting list", "return xs"),
    _p("ret_sum", "ints", "final", "return their sum", "return sum(xs)"),
    _p("ret_max", "ints", "final", "return the largest number, or 0 if there is none", "return max(xs, default=0)"),
    _p("ret_min", "ints", "final", "return the smallest number, or 0 if there is none", "return min(xs, default=0)"),
    _p("ret_len", "ints", "final", "return how many numbers are left", "return len(xs)"),
    _p("ret_first", "ints", "final", "return the first number, or -1 if there is none", "return xs[0] if xs else -1"),
    _p("ret_last", "ints", "final", "return the last number, or -1 if there is none", "return xs[-1] if xs else -1"),
    _p("ret_join", "ints", "final", "return the numbers joined by commas as a string", "return \",\".join(str(x) for x in xs)"),
]

_CHARS = "aeiourstln"
TEXT_PRIMITIVES = [
    _p("upper", "text", "step", "convert the string to upper case", "s = s.upper()"),
    _p("lower", "text", "step", "convert the string to lower case", "s = s.lower()"),
    _p("swapcase", "text", "step", "swap the case of every letter", "s = s.swapcase()"),
    _p("title", "text", "step", "capitalize the first letter of every word", "s = s.title()"),
    _p("reverse", "text", "step", "reverse the string", "s = s[::-1]"),
    _p("strip", "text", "step", "remove leading and trailing spaces", "s = s.strip()"),
    _p("remove", "text", "step", "remove every '{k}'", "s = s.replace(\"{k}\", \"\")", _CHARS),
    _p("replace", "text", "step", "replace every '{k}' with '*'", "s = s.replace(\"{k}\", \"*\")", _CHARS),
    _p("novowels", "text", "step", "remove the vowels", "s = \"\".join(c for c in s if c not in \"aeiouAEIOU\")"),
    _p("letters", "text", "step", "keep only the letters", "s = \"\".join(c for c in s if c.isalpha())"),
    _p("nodigits", "text", "step", "remove the digits", "s = \"\".join(c for c in s if not c.isdigit())"),
    _p("nospaces", "text", "step", "remove the spaces", "s = s.replace(\" \", \"\")"),
    _p("double", "text", "step", "repeat every character twice", "s = \"\".join(c * 2 for c in s)"),
    _p("take", "text", "step", "keep only the first {k} characters", "s = s[:{k}]", range(2, 9)),
    _p("drop", "text", "step", "drop the first {k} characters", "s = s[{k}:]", range(1, 5)),
    _p("revwords", "text", "step", "reverse the order of the words", "s = \" \".join(s.split()[::-1])"),
    _p("sortwords", "text", "step", "sort the words alphabetically", "s = \" \".join(sorted(s.split()))"),
    _p("ret_str", "text", "final", "return the resulting string", "return s"),
    _p("ret_len", "text", "final", "return its length", "return len(s)"),
    _p("ret_count", "text", "final", "return how many times '{k}' occurs in it", "return s.count(\"{k}\")", _CHARS),
    _p("ret_words", "text", "final", "return the list of its words", "return s.split()"),
    _p("ret_nwords", "text", "final", "return the number of words", "return len(s.split())"),
    _p("ret_palin", "text", "final", "return whether it reads the same backwards", "return s == s[::-1]"),
    _p("ret_upper", "text", "final", "return how many upper case letters it has", "return sum(1 for c in s if c.isupper())"),
]
# fmt: on

DOMAINS = {
    "ints": {
        "arg": "xs",
        "intro": "Transform a list of integers xs, step by step:",
        "primitives": INT_PRIMITIVES,
    },
    "text": {
        "arg": "s",
        "intro": "Transform a string s, step by step:",
        "primitives": TEXT_PRIMITIVES,
    },
}

_WORDS = ["hello", "world", "tea", "Stone", "river", "apple", "Lion", "note", "sun", "Blue", "red",
          "train", "a1b2", "x9", "Oasis", "last", "tiny", "ROAR", "lute", "Eel"]


def _random_input(domain: str, rng: random.Random) -> Any:
    if domain == "ints":
        return [rng.randint(-9, 20) for _ in range(rng.randint(1, 8))]
    words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 4))]
    text = " ".join(words)
    if rng.random() < 0.3:
        text = " " * rng.randint(1, 2) + text + " " * rng.randint(0, 2)
    return text


def _edge_input(domain: str) -> Any:
    return [] if domain == "ints" else ""


@dataclass(frozen=True)
class Pipeline:
    """A problem's structure: the domain and (primitive, constant) per step."""

    domain: str
    steps: tuple  # ((Primitive, const|None), ...) transformations
    final: tuple  # (Primitive, const|None)

    @property
    def skeleton(self) -> tuple:
        """The step sequence without constants: held-out skeletons are new."""
        return (self.domain,) + tuple(p.name for p, _ in self.steps) + (self.final[0].name,)

    @property
    def signature(self) -> tuple:
        return (self.domain,) + tuple((p.name, k) for p, k in self.steps + (self.final,))

    def body(self) -> str:
        lines = [p.render(k)[1] for p, k in self.steps + (self.final,)]
        return "".join(f"    {line}\n" for line in lines)

    def phrases(self) -> list[str]:
        return [p.render(k)[0] for p, k in self.steps + (self.final,)]

    def function_name(self) -> str:
        return "_".join(p.name.removeprefix("ret_") for p, _ in self.steps + (self.final,))

    def compile(self, start: int = 0):
        """The solution as a Python callable (trusted: we wrote it).

        Built by chaining one compiled function per step, so the thousands of
        mutants checked during generation cost no compilation of their own.
        ``start`` skips the first steps: the callable then takes the value
        those steps made (a mutant reuses its parent's prefix that way).
        """
        steps = [self._compiled_step(p, k) for p, k in self.steps[start:]]
        final = _compile_line(DOMAINS[self.domain]["arg"], self.final[0].render(self.final[1])[1], "final")

        def run(value):
            for step in steps:
                value = step(value)
            return final(value)

        return run

    def prefix_values(self, value) -> list:
        """The value before each step and after the last one: ``len(steps) + 1`` values."""
        out = [value]
        for p, k in self.steps:
            value = self._compiled_step(p, k)(value)
            out.append(value)
        return out

    def _compiled_step(self, p: Primitive, k):
        return _compile_line(DOMAINS[self.domain]["arg"], p.render(k)[1], p.kind)


@functools.lru_cache(maxsize=4096)
def _compile_line(arg: str, line: str, kind: str):
    source = f"def _f({arg}):\n    {line}\n"
    if kind == "step":
        source += f"    return {arg}\n"
    namespace: dict[str, Any] = {}
    exec(source, namespace)  # noqa: S102 - our own generated code
    return namespace["_f"]


def _safe_call(fn, value):
    try:
        return ("ok", fn(value))  # no step mutates its input in place, so no copy
    except Exception as e:  # a mutant may crash (e.g. on an empty list): a distinct outcome
        return ("error", type(e).__name__)


def _mutants(pipe: Pipeline) -> list[Pipeline]:
    """One-step variants that a good test set must tell apart from ``pipe``."""
    prims = {p.name: p for p in DOMAINS[pipe.domain]["primitives"]}
    out = []
    for i, (p, k) in enumerate(pipe.steps):
        out.append(Pipeline(pipe.domain, pipe.steps[:i] + pipe.steps[i + 1:], pipe.final))
        for k2 in p.consts:
            if k2 != k:
                out.append(Pipeline(pipe.domain, pipe.steps[:i] + ((p, k2),) + pipe.steps[i + 1:], pipe.final))
        for q in prims.values():
            if q.kind == "step" and q.name != p.name and not q.consts:
                out.append(Pipeline(pipe.domain, pipe.steps[:i] + ((q, None),) + pipe.steps[i + 1:], pipe.final))
    fp, fk = pipe.final
    for k2 in fp.consts:
        if k2 != fk:
            out.append(Pipeline(pipe.domain, pipe.steps, (fp, k2)))
    for q in prims.values():
        if q.kind == "final" and q.name != fp.name and not q.consts:
            out.append(Pipeline(pipe.domain, pipe.steps, (q, None)))
    return out


def _shared_steps(pipe: Pipeline, mutant: Pipeline) -> int:
    """How many leading steps ``mutant`` has exactly as ``pipe`` has them."""
    shared = 0
    for (p, k), (q, j) in zip(pipe.steps, mutant.steps):
        if p.name != q.name or k != j:
            break
        shared += 1
    return shared


def pick_tests(pipe: Pipeline, rng: random.Random) -> list[tuple[Any, Any]] | None:
    """Inputs and expected outputs that reject every mutant, or None if none found."""
    fn = pipe.compile()
    inputs = [_edge_input(pipe.domain)] + [_random_input(pipe.domain, rng) for _ in range(NUM_TESTS * 3)]
    outcomes = [_safe_call(fn, x) for x in inputs]
    if any(status != "ok" for status, _ in outcomes):
        return None
    if len({repr(r) for _, r in outcomes}) < 3:  # the chosen tests would be nearly constant too (see below)
        return None
    # One row per mutant: does its outcome differ from the solution's on input i?
    # A mutant shares its first steps with the solution, whose values after
    # them are computed once here (the solution ran on every input without an
    # error, and no step mutates its input, so the shared values are exactly
    # what the mutant would compute): the same rows at a fraction of the calls.
    prefixes = [pipe.prefix_values(x) for x in inputs]
    differs = []
    for mutant in _mutants(pipe):
        start = _shared_steps(pipe, mutant)
        m = mutant.compile(start)
        row = [_safe_call(m, prefix[start]) != outcomes[i] for i, prefix in enumerate(prefixes)]
        if not any(row):  # no input tells this mutant apart: no choice of tests would (and it is common)
            return None
        differs.append(row)
    # Greedy: the edge case first, then inputs that reject the most surviving mutants.
    chosen = [0]
    alive = [row for row in differs if not row[0]]
    candidates = list(range(1, len(inputs)))
    while len(chosen) < NUM_TESTS and candidates:
        best = max(candidates, key=lambda i: (sum(row[i] for row in alive), -i))
        candidates.remove(best)
        chosen.append(best)
        alive = [row for row in alive if not row[best]]
    if alive:
        return None
    results = [outcomes[i][1] for i in chosen]
    if len({repr(r) for r in results}) < 3:  # nearly constant output: too easy to guess
        return None
    return [(inputs[i], outcomes[i][1]) for i in chosen]


def random_pipeline(domain: str, difficulty: int, rng: random.Random) -> Pipeline:
    prims = DOMAINS[domain]["primitives"]
    steps_pool = [p for p in prims if p.kind == "step"]
    finals = [p for p in prims if p.kind == "final"]
    steps = []
    for _ in range(difficulty):
        p = rng.choice(steps_pool)
        while steps and p.name == steps[-1][0].name:  # no immediate repeats
            p = rng.choice(steps_pool)
        steps.append((p, rng.choice(p.consts) if p.consts else None))
    f = rng.choice(finals)
    return Pipeline(domain, tuple(steps), (f, rng.choice(f.consts) if f.consts else None))


def _prompt(pipe: Pipeline, example: tuple[Any, Any]) -> str:
    name = pipe.function_name()
    spec = DOMAINS[pipe.domain]
    lines = [spec["intro"]] + [f"{phrase};" for phrase in pipe.phrases()[:-1]] + [f"{pipe.phrases()[-1]}."]
    doc = "\n    ".join(lines)
    arg, out = example
    return (
        f"def {name}({spec['arg']}):\n"
        f'    """{doc}\n\n'
        f"    >>> {name}({arg!r})\n"
        f"    {out!r}\n"
        f'    """\n'
    )


def _tests(pipe: Pipeline, cases: list[tuple[Any, Any]]) -> str:
    lines = ["def check(candidate):"]
    lines += [f"    assert candidate({x!r}) == {y!r}" for x, y in cases]
    return "\n".join(lines) + "\n"


def _example(cases: list[tuple[Any, Any]]) -> tuple[Any, Any]:
    """The docstring example: a non-trivial case (not the empty input)."""
    for x, y in cases[1:]:
        if y not in ([], "", 0, -1, False):
            return x, y
    return cases[1]


def to_problem(pipe: Pipeline, cases, split: str, index: int | str, with_solution: bool) -> dict:
    return Problem(
        task_id=f"synthetic/{split}/{index}",
        prompt=_prompt(pipe, _example(cases)),
        tests=_tests(pipe, cases),
        entry_point=pipe.function_name(),
        code_prefix=_prompt(pipe, _example(cases)),
        canonical_solution=pipe.body() if with_solution else None,
        meta={
            "split": split,
            "domain": pipe.domain,
            "difficulty": len(pipe.steps),
            "skeleton": list(pipe.skeleton),
        },
    ).to_dict()
