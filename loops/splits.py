"""The problem sets a loop runs on, and the subsets it draws from them.

`load_splits` reads the config's unlabeled, reference, validation and test
sets and refuses what would break the evaluation protocol (DESIGN.md,
"Learning claims"): a reference set without solutions, shared task ids, and
training or validation sets that hold test problems. Every loop driver
(ITERTL, DPO, GRPO, RewardRanker, the baseline) loads its problems here.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

from codegen.datasets import load_problems
from codegen.errors import UserError
from codegen.problems import Problem
from codegen.synthetic import EVALUATION_SPLITS, TEST_SPLITS
from loops.config import ITERTLConfig, LoopConfig

TRAINING_KEYS = ("unlabeled", "reference")


def _load(spec: str, key: str, cap: int | None) -> list[Problem]:
    problems = load_problems(spec)
    if cap is not None:
        problems = problems[:cap]
    if not problems:
        raise UserError(f"{key} set {spec!r} has no problems; point {key}= at a non-empty set")
    return problems


def synthetic_split_of(problem: Problem) -> str | None:
    """The synthetic split a problem came from (its meta, else its task id), or None."""
    split = problem.meta.get("split")
    if isinstance(split, str) and split:
        return split
    parts = problem.task_id.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == "synthetic" else None


def _refuse_evaluation_problems(key: str, spec: str, problems: Sequence[Problem], forbidden: Sequence[str],
                                fix: str) -> None:
    """The file-level twin of the config's protocol rules: a problems file cut from a test
    (or validation) split is caught by what its problems say they are."""
    bad = [(p.task_id, synthetic_split_of(p)) for p in problems if synthetic_split_of(p) in forbidden]
    if bad:
        task_id, split = bad[0]
        raise UserError(f"{key} set {spec!r} holds problems of the synthetic {split} split (e.g. {task_id}): {fix}")


def load_splits(cfg: ITERTLConfig) -> dict[str, Any]:
    """The problem sets, each capped at ``max_problems`` (the first ones, a fixed choice).

    Keys ``unlabeled``, ``reference``, ``validation`` (lists of problems) and
    ``test`` (``{metric name: problems}``). Refuses a reference set without
    solutions, shared task ids, and training or validation sets that hold
    test problems (or training sets that hold validation problems).
    """
    splits: dict[str, Any] = {key: _load(getattr(cfg, key), key, cfg.max_problems)
                              for key in (*TRAINING_KEYS, "validation")}
    splits["test"] = {name: _load(spec, f"test split {name}", cfg.max_problems)
                      for name, spec in cfg.test_names.items()}
    missing = [p.task_id for p in splits["reference"] if not p.canonical_solution]
    if missing:
        raise UserError(f"reference set {cfg.reference!r} has problems without canonical_solution "
                        f"(e.g. {missing[0]}); replay needs solutions: use a labelled set such as synthetic:reference")
    for key in TRAINING_KEYS:
        _refuse_evaluation_problems(key, getattr(cfg, key), splits[key], EVALUATION_SPLITS,
                                    f"the loop trains on {key}, never on evaluation problems; use {key}=synthetic:{key}")
    _refuse_evaluation_problems("validation", cfg.validation, splits["validation"], TEST_SPLITS,
                                "test problems are only reported, never used to choose settings; "
                                "use validation=synthetic:validation")
    sets = [splits[key] for key in (*TRAINING_KEYS, "validation")] + list(splits["test"].values())
    ids = [p.task_id for ps in sets for p in ps]
    if len(ids) != len(set(ids)):
        shared = next(t for t in ids if ids.count(t) > 1)
        raise UserError(f"task {shared!r} occurs in two of unlabeled/reference/validation/test; "
                        "the splits must be disjoint")
    return splits


def evaluation_task_ids(splits: dict[str, Any]) -> dict[str, str]:
    """``{task id: split}`` of every evaluation problem (validation and each test split)."""
    where = {p.task_id: "validation" for p in splits["validation"]}
    for name, problems in splits["test"].items():
        where.update({p.task_id: f"test split {name}" for p in problems})
    return where


def tests_summary(splits: dict[str, Any]) -> str:
    """``"50 test_fresh, 50 heldout"``: the test splits' sizes for a run's opening line (``none`` without)."""
    return ", ".join(f"{len(ps)} {name}" for name, ps in splits["test"].items()) or "none"


def round_problems(pool: Sequence[Problem], per_round: int | None, round_: int) -> list[Problem]:
    """The unlabeled problems round ``round_`` (1, 2, ...) samples: all of ``pool``, or
    the next ``per_round`` of them, wrapping around. A large pool in fresh slices
    gives every round new problems to solve for the same sampling cost, instead
    of the same few problems again (which the model then memorises).

    >>> [p for p in round_problems(list("abcde"), 2, 3)]
    ['e', 'a']
    """
    pool = list(pool)
    if per_round is None or per_round >= len(pool):
        return pool
    start = (round_ - 1) * per_round
    return [pool[(start + i) % len(pool)] for i in range(per_round)]


def probe_subset(problems: Sequence[Problem], cap: int, seed: int) -> list[Problem]:
    """At most ``cap`` of ``problems``, a seeded sample kept in their order (the same subset every time)."""
    problems = list(problems)
    if len(problems) <= cap:
        return problems
    return sorted(random.Random(seed).sample(problems, cap), key=problems.index)


def reference_probe_of(cfg: LoopConfig, splits: dict[str, Any]) -> list[Problem]:
    """The forgetting probe: the same reference subset in every loop (same seed), so their rows compare."""
    return probe_subset(splits["reference"], cfg.probe_problems, cfg.seed + 7) if cfg.eval_reference else []
