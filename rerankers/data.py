"""Verdicts -> preference pairs for a reward model.

A pair is one passing and one failing candidate of the same problem: the
reward model learns to score the passing one higher. Rules that keep the data
honest:

- ``infra_error`` verdicts are masked: a sandbox hiccup says nothing about the
  program, so such a candidate is neither a positive nor a negative (the
  reward layer, `codegen.rewards`, gives it no reward).
- Held-out problems are refused outright: a reranker evaluated on problems it
  trained on measures memory, not ranking. `build_pairs` raises
  `HeldOutLeakError` if any sample belongs to a held-out problem.
- Identical completions are counted once, so a candidate the sampler drew ten
  times does not fill a problem's quota on its own.

Light module (no torch): `build_pairs` runs anywhere.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.rewards import reward
from codegen.samples import Sample
from codegen.synthetic import EVALUATION_SPLITS

# Evaluation-only splits: the synthetic family's validation and test splits (settings
# are chosen on validation, so training on it would bias the choice), and other spellings.
HELDOUT_SPLITS = ("held-out", "held_out") + EVALUATION_SPLITS
HELDOUT_ID_PREFIXES = tuple(f"synthetic/{split}/" for split in EVALUATION_SPLITS)


class HeldOutLeakError(UserError):
    """Training data touched a held-out problem."""


@dataclass
class Pair:
    """One preference pair: ``chosen`` passed the tests, ``rejected`` did not."""

    task_id: str
    prompt: str
    chosen: str
    rejected: str
    chosen_id: str = ""
    rejected_id: str = ""
    source: str = "sampled"  # "sampled", "reference" or "hard_negative"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_heldout(problem: Problem) -> bool:
    """True when ``problem`` belongs to an evaluation-only split.

    The synthetic family records its split in ``meta["split"]`` (loaders of
    other datasets may do the same) and in its task ids
    (``synthetic/heldout/<i>``), so a problem that lost its meta on the way
    through a JSONL file is still caught.
    """
    split = str(problem.meta.get("split", "")).lower()
    return split in HELDOUT_SPLITS or is_heldout_id(problem.task_id)


def is_heldout_id(task_id: str) -> bool:
    """True for task ids of the synthetic evaluation splits (held-out, validation, test-fresh), whatever the seed."""
    return str(task_id).startswith(HELDOUT_ID_PREFIXES)


def refuse_heldout(problems: Iterable[Problem], task_ids: Iterable[str], forbidden: Iterable[str] = ()) -> None:
    """Raise `HeldOutLeakError` if any of ``task_ids`` names a held-out problem.

    Held-out means: in ``forbidden``, a held-out problem among ``problems``
    (`is_heldout`), or a synthetic held-out task id.
    """
    task_ids = set(task_ids)
    forbidden = set(forbidden) | {p.task_id for p in problems if is_heldout(p)}
    leaked = sorted((task_ids & forbidden) | {t for t in task_ids if is_heldout_id(t)})
    if leaked:
        shown = ", ".join(leaked[:5]) + (f" and {len(leaked) - 5} more" if len(leaked) > 5 else "")
        raise HeldOutLeakError(
            f"refusing to train a reranker on held-out problems ({shown}): they are for evaluation only. "
            "Sample training candidates from the reference or unlabeled splits "
            "(e.g. --problems synthetic:reference and synthetic:unlabeled)."
        )


def join_verdicts(samples: Sequence[Sample], results: Sequence[dict]) -> list[tuple[Sample, dict]]:
    """Pair each sample with its result row by ``sample_id``.

    Samples without a result are an error (the results file is stale or from
    another run); results without a sample are ignored.
    """
    by_id = {}
    for row in results:
        sid = row.get("sample_id")
        if not sid:
            raise UserError(
                f"a result row for {row.get('task_id', '?')} has no sample_id: "
                "produce results with `itercode eval`, which keeps the samples' ids"
            )
        by_id[sid] = row
    joined, missing = [], []
    for s in samples:
        if not s.sample_id:
            raise UserError(
                f"a sample of {s.task_id} has no sample_id: write samples with `itercode sample`, "
                "which gives each one an id '<task_id>#<i>'"
            )
        row = by_id.get(s.sample_id)
        if row is None:
            missing.append(s.sample_id)
        else:
            joined.append((s, row))
    if missing:
        raise UserError(
            f"{len(missing)} samples have no result (first: {missing[0]}): the results file does not "
            "match the samples file; run `itercode eval` on these samples again"
        )
    return joined


def split_by_verdict(
    samples: Sequence[Sample], results: Sequence[dict]
) -> dict[str, tuple[list[Sample], list[Sample]]]:
    """task_id -> (passing, failing) samples, infra errors masked, duplicates dropped."""
    groups: dict[str, tuple[list[Sample], list[Sample]]] = defaultdict(lambda: ([], []))
    seen: set[tuple[str, str]] = set()
    for sample, row in join_verdicts(samples, results):
        score = reward(row)
        if score is None:  # an infra error: no signal about the program
            continue
        key = (sample.task_id, sample.completion.rstrip())
        if key in seen:
            continue
        seen.add(key)
        groups[sample.task_id][0 if score == 1.0 else 1].append(sample)
    return dict(groups)


def _pairs_for_problem(
    passing: list[tuple[str, str]], failing: list[tuple[str, str]], cap: int, rng: random.Random
) -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Up to ``cap`` (passing, failing) combinations, each candidate used once before any twice."""
    if not passing or not failing:
        return []
    passing, failing = passing[:], failing[:]
    rng.shuffle(passing)
    rng.shuffle(failing)
    total = len(passing) * len(failing)
    cap = min(cap, total)
    chosen: list[tuple[int, int]] = []
    used: set[tuple[int, int]] = set()
    # Round-robin first: every candidate appears once before combinations repeat.
    for i in range(min(cap, max(len(passing), len(failing)))):
        ij = (i % len(passing), i % len(failing))
        used.add(ij)
        chosen.append(ij)
    if len(chosen) < cap:
        rest = [(i, j) for i in range(len(passing)) for j in range(len(failing)) if (i, j) not in used]
        chosen += rng.sample(rest, cap - len(chosen))
    return [(passing[i], failing[j]) for i, j in chosen]


def build_pairs(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    results: Sequence[dict],
    *,
    max_pairs_per_problem: int = 16,
    use_references: bool = True,
    seed: int = 0,
    forbidden_task_ids: Iterable[str] = (),
) -> list[Pair]:
    """Preference pairs from sampled candidates and their verdicts.

    ``problems`` must cover every sample's task. ``use_references`` adds a
    problem's ``canonical_solution`` (reference split) as one more passing
    candidate, which lets problems the model never solved still yield pairs.
    ``forbidden_task_ids`` adds task ids to refuse beyond the held-out ones
    that `is_heldout` recognises.

    >>> # pairs = build_pairs(problems, samples, results, max_pairs_per_problem=8)
    """
    if max_pairs_per_problem < 1:
        raise UserError(f"max_pairs_per_problem must be at least 1, got {max_pairs_per_problem}")
    by_task = {p.task_id: p for p in problems}
    unknown = sorted({s.task_id for s in samples} - by_task.keys())
    if unknown:
        raise UserError(
            f"{len(unknown)} sampled tasks are not among the given problems (first: {unknown[0]}): "
            "pass the problems the samples were drawn from"
        )
    refuse_heldout(by_task.values(), {s.task_id for s in samples}, forbidden_task_ids)

    groups = split_by_verdict(samples, results)
    rng = random.Random(seed)
    pairs: list[Pair] = []
    for task_id in sorted(groups):
        problem = by_task[task_id]
        passing = [(s.sample_id, s.completion) for s in groups[task_id][0]]
        failing = [(s.sample_id, s.completion) for s in groups[task_id][1]]
        if use_references and problem.canonical_solution:
            texts = {c.rstrip() for _, c in passing}
            if problem.canonical_solution.rstrip() not in texts:
                passing.append((f"{task_id}#reference", problem.canonical_solution))
        for (pid, ptext), (fid, ftext) in _pairs_for_problem(passing, failing, max_pairs_per_problem, rng):
            source = "reference" if pid.endswith("#reference") else "sampled"
            pairs.append(Pair(task_id, problem.prompt, ptext, ftext, pid, fid, source))
    return pairs


def pair_stats(pairs: Sequence[Pair]) -> dict[str, int]:
    """Counts for logs and reports: pairs, problems, and pairs by source."""
    stats = {"pairs": len(pairs), "problems": len({p.task_id for p in pairs})}
    for p in pairs:
        stats[f"source_{p.source}"] = stats.get(f"source_{p.source}", 0) + 1
    return stats
