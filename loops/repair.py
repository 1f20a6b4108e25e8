"""Repair examples: teach a model to read iterative decoding's feedback.

A model trained on prompt -> solution alone ignores feedback it has never
seen. ITERTL's ``repair_share`` mixes into each round's SFT data examples
built from the round's own samples: the prompt with feedback on failing
attempts, in exactly the format iterative decoding shows
(`codegen.decoding.refine_prompt`: best and worst so far, verdict lines, the
failing docstring example's call, expected value and what came back), and
as completion a passing sample of the same problem. With ``repair_reference``
the round also samples that many reference problems, whose failing attempts
are repaired to their reference solution when no sample passed: the skill is
then also taught on problems the model cannot solve on its own, which are the
ones iterative decoding must win on.

The feedback comes from the public docstring examples (the verifier IAD
uses at inference); the passing completion was judged on the problem's
tests like every kept sample. Only the round's training problems are used:
`repair_rows` refuses a problem of an evaluation split (validation or a
test split), so repair data can never leak held-out problems into training.
"""
from __future__ import annotations

import random
from typing import Callable, Mapping, Sequence

from codegen.decoding import IADState, make_verifier, refine_prompt
from codegen.errors import UserError
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.rewards import is_infra_error, passed
from codegen.samplers import Completion
from codegen.samples import Sample
from codegen.synthetic import EVALUATION_SPLITS
from loops.splits import synthetic_split_of


def repair_count(n_other: int, share: float) -> int:
    """Repair rows that make ``share`` of a training set with ``n_other`` other rows.

    >>> repair_count(60, 0.25), repair_count(0, 0.5), repair_count(10, 0.0)
    (20, 0, 0)
    """
    if share <= 0 or n_other == 0:
        return 0
    return max(1, round(n_other * share / (1 - share)))


def repair_rows(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict], n: int, seed: int,
                judge: Judge, fits: Callable[[str], bool] | None = None,
                solutions: Mapping[str, str] | None = None) -> list[dict]:
    """Up to ``n`` repair rows (``prompt``, ``completion``, ``task_id``, ``source: "repair"``).

    A problem qualifies when this round has a failing sample of it and a
    target: a passing sample or, failing that, its entry in ``solutions``
    (reference solutions of labelled training problems: repair taught where
    the model cannot solve the problem yet). It gives one row: up to two
    failing attempts shown (the best and worst so far), the target (a seeded
    choice among passing samples), at most ``n`` rows in all. ``fits(prompt +
    completion)`` (e.g. within the trainer's max_length) shrinks the feedback
    as iterative decoding would; a row whose plain prompt does not fit is skipped.
    """
    refused = [p.task_id for p in problems if synthetic_split_of(p) in EVALUATION_SPLITS]
    if refused:
        raise UserError(f"repair data is built from training problems only; {refused[0]} is an evaluation "
                        "problem (validation or test): train on synthetic:unlabeled or practice")
    verdicts = {r["sample_id"]: r for r in results}
    by_task: dict[str, tuple[list[Sample], list[Sample]]] = {}
    for s in samples:
        v = verdicts.get(s.sample_id)
        if v is None or is_infra_error(v):
            continue
        good, bad = by_task.setdefault(s.task_id, ([], []))
        (good if passed(v) else bad).append(s)
    rng = random.Random(seed)
    solutions = solutions or {}
    plans = []  # (problem, failing attempts shown, target completion, its sample id), one per qualifying problem
    for p in problems:
        good, bad = by_task.get(p.task_id, ([], []))
        if not bad or not (good or p.task_id in solutions):
            continue
        shown = rng.sample(bad, min(2, len(bad)))
        if good:
            target = rng.choice(good)
            plans.append((p, shown, target.completion, target.sample_id))
        else:
            plans.append((p, shown, solutions[p.task_id], None))
    if not plans or n <= 0:
        return []
    verifier = make_verifier("examples", judge=judge)
    attempts = [(p, s.completion) for p, shown, *_ in plans for s in shown]
    checks = iter(verifier.check(attempts))
    rows = []
    for p, shown, completion, sample_id in plans:
        state = IADState(p)
        state.add_round([Completion(s.completion) for s in shown], [next(checks) for _ in shown], prompt=p.prompt)
        fit = None if fits is None else (lambda text, c=completion: fits(text + c))
        prompt = refine_prompt(p, state, fits=fit)
        if prompt == p.prompt:
            continue  # no feedback fits: a plain row would be ordinary self-training, not repair
        rows.append({"prompt": prompt, "completion": completion, "task_id": p.task_id, "source": "repair",
                     "sample_id": sample_id, "repairs": [s.sample_id for s in shown]})
    rng.shuffle(rows)
    return rows[:n]


def token_fits(model: str, max_length: int) -> Callable[[str], bool]:
    """``fits(text)``: ``text`` is at most ``max_length`` tokens of ``model``'s tokenizer (the trainer's cut)."""
    from transformers import AutoTokenizer  # heavy: only when repair rows are built

    tokenizer = AutoTokenizer.from_pretrained(model)
    return lambda text: len(tokenizer(text)["input_ids"]) + 1 <= max_length  # + EOS


def round_repair_rows(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[dict], n: int,
                      seed: int, *, executor: str, workers: int | None, model: str | None,
                      max_length: int, executor_options: dict | None = None,
                      solutions: Mapping[str, str] | None = None) -> list[dict]:
    """`repair_rows` with a sandbox of its own and, given the round's ``model``, its tokenizer's length check."""
    fits = token_fits(model, max_length) if model else None
    with Judge(executor, workers, options=executor_options) as judge:
        return repair_rows(problems, samples, results, n, seed, judge, fits, solutions)
