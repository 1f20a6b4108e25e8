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

Splits (fixed for a given ``seed``):

- ``reference``: 1000 mostly short pipelines, with ``canonical_solution``;
- ``unlabeled``: 200 longer pipelines, tests only (no solution exposed), the
  raw material of self-training;
- ``heldout``: 100 longer pipelines whose step sequences (ignoring constants)
  never occur in ``reference``: evaluation only.

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

SPLITS = ("reference", "unlabeled", "heldout")

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


@dataclass(frozen=True)
class _Family:
    splits: dict  # split -> tuple of Problem dicts
    signatures: frozenset  # every problem's signature, for keeping practice problems new
    heldout_skeletons: frozenset


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
    return _Family(splits, frozenset(seen_signatures), frozenset(heldout_skeletons))


@functools.lru_cache(maxsize=4)
def _generate_practice(seed: int, count: int) -> tuple[dict, ...]:
    """Extra unlabeled-style problems: new signatures, and no held-out skeleton.

    A separate random stream, so the fixed splits never change and only the
    callers that want practice problems pay for making them.
    """
    family = _generate(seed)
    rng = random.Random(f"itercode-synthetic-practice-{seed}")
    seen = set(family.signatures)

    def accept(pipe: Pipeline) -> bool:
        return pipe.signature not in seen and pipe.skeleton not in family.heldout_skeletons

    drawn = _draw(rng, count, DIFFICULTY_MIX["unlabeled"], accept, lambda pipe: seen.add(pipe.signature))
    return tuple(to_problem(pipe, cases, "practice", i, with_solution=False) for i, (pipe, cases) in enumerate(drawn))


def _quotas(size: int, mix: dict[int, float]) -> list[tuple[int, int]]:
    levels = sorted(mix)
    counts = [int(round(size * mix[d])) for d in levels]
    counts[-1] += size - sum(counts)
    return list(zip(levels, counts))


def load_split(split: str, seed: int = 0) -> list[Problem]:
    """The problems of one split of the synthetic family for ``seed``.

    ``split`` is "reference" (with canonical solutions), "unlabeled" (tests
    only), "heldout" (evaluation only) or "practice": PRACTICE_SIZE more
    unlabeled-style problems, made on demand, whose signatures are new and
    whose step sequences never occur in held-out (training material for
    rerankers, which need many problems the model was not trained on). The
    same seed always gives the same problems, in the same order.

    >>> len(load_split("heldout")) == SPLIT_SIZES["heldout"]
    True
    """
    if split == "practice":
        dicts = _generate_practice(int(seed), PRACTICE_SIZE)
    elif split in SPLITS:
        dicts = _generate(int(seed)).splits[split]
    else:
        raise UserError(f"unknown synthetic split {split!r}: use one of {', '.join(SPLITS + ('practice',))}")
    return [Problem.from_dict(copy.deepcopy(d)) for d in dicts]
