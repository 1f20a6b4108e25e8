"""A synthetic task family: small programs composed from named primitives.

Each problem is a pipeline of steps over one value, in one of two domains:

- ``ints``: a list of integers ``xs`` (map, filter and reorder steps), ending
  in a reduction (sum, max, count, ...) or the list itself;
- ``text``: a string ``s`` (case, slicing, character filters, replacements),
  ending in ``return s`` or a measurement (length, count, words, ...).

The docstring names each step in words, one per line, in order, and shows an
example; the canonical solution is one line per step, so a model can learn the
phrase -> line mapping from the reference split and must *compose* it on
longer, unseen pipelines. Difficulty is the number of steps (1-4).

Splits (fixed for a given ``seed``; a problem's step sequence, ignoring
constants, is its *skeleton*):

- ``reference``: 1000 mostly short pipelines, with ``canonical_solution``;
- ``unlabeled``: 200 longer pipelines, tests only (no solution exposed), the
  raw material of self-training;
- ``heldout``: 100 longer pipelines whose skeletons never occur in
  ``reference``: a test split (kept for continuity with earlier figures);
- ``practice``: 2000 more unlabeled-style problems, made on demand, with new
  signatures and no held-out skeleton (training material: rerankers, more
  self-training);
- ``validation``: 200 longer pipelines (held-out's difficulty mix) whose
  skeletons occur in none of the splits above: the split every choice of
  settings is made on;
- ``test-fresh``: 300 longer pipelines made with three *other* seeds of the
  family (``seed + 1``, ``+ 2``, ``+ 3``, 100 each, interleaved so that the
  first N take from every seed), whose skeletons occur in none of ``seed``'s
  splits, validation included: a test split, only ever reported. Task ids
  name the seed that made them (``synthetic/test-fresh/s1-0``), so they cannot
  collide with any of ``seed``'s.

Validation and test-fresh are therefore disjoint from each other and from
every training split by task id, by signature and by skeleton, and neither
shares a skeleton with held-out. Their difficulty mix is held-out's (2-4
steps, 30/40/30 %): the family has 5,600 two-step skeletons (about 3,200 for
which tests that reject every mutant exist), and seed 0's splits use only
~930 of them, so fresh two-step problems are plentiful (one-step skeletons,
on the other hand, are nearly all in ``reference``: no evaluation split has
one-step problems). Each of these splits is drawn from its own random stream,
so adding them changed none of the others.

Building cost, cached per process (one core of the shared 2-core machine,
load average ~3): the three fixed splits 5 s, practice 9 s (validation needs
its skeletons), then validation 1 s and test-fresh 1.5 s: 16 s for all six.

Tests are HumanEval style (``def check(candidate): assert ...``) over plain
data only, and each problem's tests are checked to reject every one-step
mutant of the solution (a dropped step, a changed constant, a swapped
primitive), so passing means the whole pipeline is right. The primitives,
pipelines and test picking are in `codegen.synthetic_pipelines`; this module
draws the splits.

>>> problems = load_split("heldout")
>>> problems[0].entry_point in problems[0].prompt
True
"""
from __future__ import annotations

import copy
import functools
import random
from dataclasses import dataclass

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.synthetic_pipelines import Pipeline, pick_tests, random_pipeline, to_problem

SPLITS = ("reference", "unlabeled", "heldout")  # the fixed splits of one random stream
ALL_SPLITS = SPLITS + ("practice", "validation", "test-fresh")
TEST_SPLITS = ("heldout", "test-fresh")  # only ever reported: no setting is chosen on them
EVALUATION_SPLITS = ("validation",) + TEST_SPLITS  # never trained on

# Split sizes and the share of each difficulty (number of steps) per split.
# Tuned with a sweep of starter sizes (README/issue 4 report): with a few
# hundred references a tiny model memorises them (training loss near 0) and
# samples without diversity (pass@16 barely above pass@1); with ~1000 it learns
# the phrase -> line mapping well enough to compose, imperfectly. Reference is
# the short end (few 4-step pipelines); unlabeled and held-out lean long, so a
# starter trained on reference alone is clearly imperfect on them and solving
# some unlabeled problems teaches what held-out needs.
SPLIT_SIZES = {"reference": 1000, "unlabeled": 200, "heldout": 100}
DIFFICULTY_MIX = {
    "reference": {1: 0.30, 2: 0.35, 3: 0.25, 4: 0.10},
    "unlabeled": {2: 0.30, 3: 0.40, 4: 0.30},
    "heldout": {2: 0.30, 3: 0.40, 4: 0.30},
}
PRACTICE_SIZE = 2000  # the on-demand "practice" split (see load_split)
VALIDATION_SIZE = 200
VALIDATION_MIX = DIFFICULTY_MIX["heldout"]
TEST_FRESH_SEEDS = (1, 2, 3)  # offsets from the family seed: seed 0's fresh test comes from seeds 1, 2, 3
TEST_FRESH_PER_SEED = 100
TEST_FRESH_MIX = DIFFICULTY_MIX["heldout"]  # two-step skeletons are far from used up (module docstring)


@dataclass(frozen=True)
class _Family:
    splits: dict  # split -> tuple of Problem dicts
    signatures: frozenset  # every problem's signature, for keeping practice problems new
    heldout_skeletons: frozenset
    skeletons: frozenset  # every fixed split's skeletons, for keeping evaluation problems new


@dataclass(frozen=True)
class _Drawn:
    """An on-demand split: its Problem dicts and what later splits must avoid."""

    problems: tuple
    signatures: frozenset
    skeletons: frozenset


def _draw(rng: random.Random, count: int, mix: dict, accept, keep) -> list[tuple[Pipeline, list]]:
    """``count`` (pipeline, tests) with the difficulty ``mix``.

    A pipeline is a candidate when ``accept(pipe)``; once its tests are found,
    ``keep(pipe)`` records it (a pipeline whose tests were not found may be
    drawn again: its next random inputs may do).
    """
    drawn: list[tuple[Pipeline, list]] = []
    for difficulty, quota in _quotas(count, mix):
        made = 0
        while made < quota:
            domain = "ints" if rng.random() < 0.6 else "text"
            pipe = random_pipeline(domain, difficulty, rng)
            if not accept(pipe):
                continue
            cases = pick_tests(pipe, rng)
            if cases is None:
                continue
            keep(pipe)
            drawn.append((pipe, cases))
            made += 1
    rng.shuffle(drawn)
    return drawn


@functools.lru_cache(maxsize=8)
def _generate(seed: int) -> _Family:
    """The three fixed splits for ``seed``, as Problem dicts (cached; callers copy)."""
    rng = random.Random(f"itercode-synthetic-{seed}")
    seen_signatures: set = set()
    reference_skeletons: set = set()
    heldout_skeletons: set = set()
    splits: dict[str, tuple[dict, ...]] = {}
    for split in SPLITS:  # reference first: held-out avoids its skeletons

        def accept(pipe: Pipeline, split=split) -> bool:
            return pipe.signature not in seen_signatures and not (
                split == "heldout" and pipe.skeleton in reference_skeletons
            )

        def keep(pipe: Pipeline, split=split) -> None:
            seen_signatures.add(pipe.signature)
            {"reference": reference_skeletons, "heldout": heldout_skeletons}.get(split, set()).add(pipe.skeleton)

        drawn = _draw(rng, SPLIT_SIZES[split], DIFFICULTY_MIX[split], accept, keep)
        splits[split] = tuple(
            to_problem(pipe, cases, split, i, with_solution=(split == "reference"))
            for i, (pipe, cases) in enumerate(drawn)
        )
    skeletons = {tuple(d["meta"]["skeleton"]) for dicts in splits.values() for d in dicts}
    return _Family(splits, frozenset(seen_signatures), frozenset(heldout_skeletons), frozenset(skeletons))


def _draw_new(stream: str, count: int, mix: dict, signatures: set, avoid_skeletons: frozenset):
    """``count`` (pipeline, tests) from the random stream ``stream``: signatures not in
    ``signatures`` (which grows with them) and skeletons not in ``avoid_skeletons``."""

    def accept(pipe: Pipeline) -> bool:
        return pipe.signature not in signatures and pipe.skeleton not in avoid_skeletons

    return _draw(random.Random(stream), count, mix, accept, lambda pipe: signatures.add(pipe.signature))


def _drawn(problems: list[dict], pipes: list[Pipeline]) -> _Drawn:
    return _Drawn(tuple(problems), frozenset(p.signature for p in pipes), frozenset(p.skeleton for p in pipes))


@functools.lru_cache(maxsize=4)
def _generate_practice(seed: int, count: int) -> _Drawn:
    """Extra unlabeled-style problems: new signatures, and no held-out skeleton.

    A separate random stream, so the fixed splits never change and only the
    callers that want practice problems pay for making them.
    """
    family = _generate(seed)
    drawn = _draw_new(f"itercode-synthetic-practice-{seed}", count, DIFFICULTY_MIX["unlabeled"],
                      set(family.signatures), family.heldout_skeletons)
    problems = [to_problem(pipe, cases, "practice", i, with_solution=False) for i, (pipe, cases) in enumerate(drawn)]
    return _drawn(problems, [pipe for pipe, _ in drawn])


@functools.lru_cache(maxsize=4)
def _generate_validation(seed: int) -> _Drawn:
    """The validation split: skeletons in none of the fixed splits nor practice.

    Practice is avoided too, so that a loop may train on practice problems and
    still be judged on validation problems it has never seen the shape of.
    """
    family = _generate(seed)
    practice = _generate_practice(seed, PRACTICE_SIZE)
    drawn = _draw_new(f"itercode-synthetic-validation-{seed}", VALIDATION_SIZE, VALIDATION_MIX,
                      set(family.signatures | practice.signatures), family.skeletons | practice.skeletons)
    problems = [to_problem(pipe, cases, "validation", i, with_solution=False) for i, (pipe, cases) in enumerate(drawn)]
    return _drawn(problems, [pipe for pipe, _ in drawn])


@functools.lru_cache(maxsize=4)
def _generate_test_fresh(seed: int) -> _Drawn:
    """The fresh test split: other seeds' problems with skeletons none of ``seed``'s splits has.

    Each other seed draws from its own stream (``itercode-synthetic-test-fresh-<seed>``);
    signatures are unique across all of them. The problems are interleaved
    (seed 1's first, seed 2's first, ...) so a capped run sees every seed.
    """
    family = _generate(seed)
    practice = _generate_practice(seed, PRACTICE_SIZE)
    validation = _generate_validation(seed)
    avoid = family.skeletons | practice.skeletons | validation.skeletons
    signatures: set = set()
    per_seed, pipes = [], []
    for offset in TEST_FRESH_SEEDS:
        other = seed + offset
        drawn = _draw_new(f"itercode-synthetic-test-fresh-{other}", TEST_FRESH_PER_SEED, TEST_FRESH_MIX,
                          signatures, avoid)
        problems = []
        for i, (pipe, cases) in enumerate(drawn):
            problem = to_problem(pipe, cases, "test-fresh", f"s{other}-{i}", with_solution=False)
            problem["meta"]["family_seed"] = other
            problems.append(problem)
        per_seed.append(problems)
        pipes += [pipe for pipe, _ in drawn]
    interleaved = [problem for row in zip(*per_seed) for problem in row]
    return _drawn(interleaved, pipes)


def _quotas(size: int, mix: dict[int, float]) -> list[tuple[int, int]]:
    levels = sorted(mix)
    counts = [int(round(size * mix[d])) for d in levels]
    counts[-1] += size - sum(counts)
    return list(zip(levels, counts))


def load_split(split: str, seed: int = 0) -> list[Problem]:
    """The problems of one split of the synthetic family for ``seed``.

    ``split`` is "reference" (with canonical solutions), "unlabeled" (tests
    only), "heldout" (a test split), "practice": PRACTICE_SIZE more
    unlabeled-style problems, made on demand, whose signatures are new and
    whose step sequences never occur in held-out (training material for
    rerankers, which need many problems the model was not trained on),
    "validation" (where settings are chosen) or "test-fresh" (other seeds'
    problems of new step sequences: the test split that counts); see the
    module docstring. The same seed always gives the same problems, in the
    same order.

    >>> len(load_split("heldout")) == SPLIT_SIZES["heldout"]
    True
    """
    seed = int(seed)
    if split == "practice":
        dicts = _generate_practice(seed, PRACTICE_SIZE).problems
    elif split == "validation":
        dicts = _generate_validation(seed).problems
    elif split == "test-fresh":
        dicts = _generate_test_fresh(seed).problems
    elif split in SPLITS:
        dicts = _generate(seed).splits[split]
    else:
        raise UserError(f"unknown synthetic split {split!r}: use one of {', '.join(ALL_SPLITS)}")
    return [Problem.from_dict(copy.deepcopy(d)) for d in dicts]
