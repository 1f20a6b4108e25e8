"""Reranked pass@1 next to the numbers it must beat.

For n candidates per problem and their verdicts:

- ``pass@1``: the unbiased estimate (share of passing candidates, averaged
  over problems) = what one random sample scores on average;
- ``reranked_pass@1``: the share of problems whose top-scored candidate passes
  (best-of-n as `codegen.decoding` chooses: the first of a tie);
- ``reranked_logprob_pass@1`` (with a ``logprob_weight``): the same pick by
  the reranker's score plus the weight times the policy's mean log-prob
  (LEVER: `rerankers.combined`; the weight is chosen on validation and kept
  in the reranker's ``reranker.json``);
- ``oracle_pass@n``: the share of problems with any passing candidate, the
  ceiling of every picker;
- ``random_pick``: one seeded random pick per problem (its expectation is
  pass@1; the gap shows the noise of one draw);
- ``mean_logprob_pick``: the candidate the sampler was most confident in;
- ``examples_logprob_pick`` (with ``examples=True``): no learning, just the
  docstring's own examples: the candidate that passes the largest share of
  them, the most confident one among equals. A reranker with example
  feedback (`rerankers.feedback`) has to beat this to have learned anything.

An ``infra_error`` verdict counts as not passed, as in `itercode eval`; the
report says how many there were.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Callable, Mapping, Sequence

from codegen.decoding import best_index
from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from rerankers.baselines import mean_logprob_scores, random_scores
from rerankers.combined import combined_scores
from rerankers.feedback import ExampleRunner, example_share
from rerankers.model import Reranker

METRICS = ("pass@1", "reranked_pass@1", "reranked_logprob_pass@1", "oracle_pass@n", "random_pick", "mean_logprob_pick", "examples_logprob_pick")


def group_candidates(
    problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[Mapping]
) -> list[tuple[Problem, list[Sample], list[bool]]]:
    """Per problem (in problem order): its samples and whether each passed.

    Results are matched to samples by ``sample_id`` when both have one, else by
    position (the order `evaluate_samples` returns).
    """
    if len(results) != len(samples):
        raise UserError(
            f"{len(samples)} samples but {len(results)} results: the results file does not belong to these "
            "samples; run `itercode eval` on them again"
        )
    by_id = {r.get("sample_id"): r for r in results if r.get("sample_id")}
    by_task: dict[str, tuple[list[Sample], list[bool]]] = defaultdict(lambda: ([], []))
    for i, s in enumerate(samples):
        row = by_id.get(s.sample_id) if s.sample_id else None
        if row is None:
            row = results[i]
        if row.get("task_id") != s.task_id:
            raise UserError(
                f"sample {s.sample_id or i} of {s.task_id} has no matching result (found {row.get('task_id')}); "
                "run `itercode eval` on these samples again"
            )
        by_task[s.task_id][0].append(s)
        by_task[s.task_id][1].append(bool(row.get("passed")))
    known = {p.task_id for p in problems}
    unknown = sorted(set(by_task) - known)
    if unknown:
        raise UserError(f"samples of {unknown[0]} (and {len(unknown) - 1} more) match no given problem")
    return [(p, *by_task[p.task_id]) for p in problems if p.task_id in by_task]


def pick_rate(groups, scorer: Callable[[Problem, list[Sample]], Sequence[float]]) -> float:
    """Share of problems whose top-scored candidate passes."""
    if not groups:
        return 0.0
    hits = 0
    for problem, samples, passed in groups:
        scores = scorer(problem, samples)
        hits += passed[best_index(scores)]
    return hits / len(groups)


def rerank_report(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    results: Sequence[Mapping],
    reranker=None,
    *,
    seed: int = 0,
    scores: Mapping[str, Sequence[float]] | None = None,
    examples: bool = False,
    progress: bool = False,
    logprob_weight: float | None = None,
    example_runner: ExampleRunner | None = None,
) -> dict:
    """The pickers' numbers for one set of candidates.

    ``reranker`` is anything with ``score_problems([(problem, [completion, ...])])``
    or ``score(problem, completions)`` (a `rerankers.model.Reranker`);
    ``scores`` instead gives precomputed scores per task id in sample order.
    Without either, ``reranked_pass@1`` is left out. ``logprob_weight`` adds
    ``reranked_logprob_pass@1`` (`rerankers.combined.combined_scores`).
    ``example_runner``: a running `ExampleRunner` for the examples pick (else
    the reranker's own, else one made for the call).
    """
    groups = group_candidates(problems, samples, results)
    if not groups:
        raise UserError("no samples to report on: the samples file matches none of the problems")
    sizes = [len(g[1]) for g in groups]
    report: dict = {
        "problems": len(groups),
        "n_min": min(sizes),
        "n_max": max(sizes),
        "samples": sum(sizes),
        "infra_errors": sum(1 for r in results if r.get("status") == "infra_error"),
        # Unbiased pass@1 with k=1 is c/n per problem.
        "pass@1": sum(sum(p) / len(p) for _, _, p in groups) / len(groups),
    }
    if reranker is not None and scores is None:
        if hasattr(reranker, "score_problems"):
            flat = reranker.score_problems([(p, [s.completion for s in ss]) for p, ss, _ in groups], progress=progress)
        else:
            flat = [reranker.score(p, [s.completion for s in ss]) for p, ss, _ in groups]
        scores = {p.task_id: sc for (p, _, _), sc in zip(groups, flat)}
    if scores is not None:
        missing = [p.task_id for p, _, _ in groups if p.task_id not in scores]
        if missing:
            raise UserError(f"no reranker scores for {missing[0]}")
        report["reranked_pass@1"] = pick_rate(groups, lambda p, ss: scores[p.task_id])
        if logprob_weight is not None:
            report["logprob_weight"] = float(logprob_weight)
            report["reranked_logprob_pass@1"] = pick_rate(
                groups, lambda p, ss: combined_scores(scores[p.task_id], ss, logprob_weight))
    report["oracle_pass@n"] = sum(any(p) for _, _, p in groups) / len(groups)
    report["random_pick"] = pick_rate(groups, lambda p, ss: random_scores(p, [s.completion for s in ss], seed))
    has_logprobs = any(s.mean_logprob is not None for _, ss, _ in groups for s in ss)
    report["mean_logprob_pick"] = pick_rate(groups, lambda p, ss: mean_logprob_scores(ss)) if has_logprobs else None
    if examples:
        report["examples_logprob_pick"] = _examples_logprob_pick(
            groups, example_runner or getattr(reranker, "examples", None))
    return report


def _examples_logprob_pick(groups, runner=None) -> float:
    """Pick rate of (share of docstring examples passed, mean log-prob), compared in that order.

    ``runner``: a running `ExampleRunner` to reuse (a feedback reranker's own), else one is made here.
    """
    with contextlib.nullcontext(runner) if runner is not None else ExampleRunner() as runner:
        lines = runner.lines([p.prompt for p, ss, _ in groups for _ in ss],
                             [s.completion for _, ss, _ in groups for s in ss])
    shares = iter(example_share(line) for line in lines)
    keyed = {p.task_id: list(zip([next(shares) for _ in ss], mean_logprob_scores(ss))) for p, ss, _ in groups}
    return pick_rate(groups, lambda p, ss: keyed[p.task_id])


def format_report(columns: Mapping[str, Mapping], *, title: str = "") -> str:
    """A plain-text table: one row per metric, one column per report.

    >>> print(format_report({"round 1": {"pass@1": 0.25, "reranked_pass@1": 0.5}}))
    metric                round 1
    pass@1                  25.0%
    reranked_pass@1         50.0%
    """
    names = list(columns)
    width = max([10] + [len(n) for n in names])
    shown = [m for m in METRICS if any(m in columns[n] for n in names)]
    label = max([18] + [len(m) + 2 for m in shown])
    lines = [title] if title else []
    lines.append("metric".ljust(label) + "".join(n.rjust(width + 1) for n in names))
    for metric in shown:
        cells = []
        for n in names:
            v = columns[n].get(metric)
            cells.append(("-" if v is None else f"{100 * v:.1f}%").rjust(width + 1))
        lines.append(metric.ljust(label) + "".join(cells))
    return "\n".join(lines)


def eval_rerank_report(problems: Sequence[Problem], samples: Sequence[Sample], results: Sequence[Mapping],
                       reranker_dir, *, seed: int = 0, progress: bool = False,
                       logprob_weight: float | None = None) -> dict:
    """What `itercode eval --rerank DIR` adds: every picker on the evaluated samples.

    ``results`` are `evaluate_samples`' results in the order of ``samples``
    (whose ``mean_logprob``, when the file had it, feeds the log-prob pick).
    A reranker whose ``reranker.json`` holds a ``logprob_weight`` (chosen on
    validation, `rerankers.combined`) also ranks by its score combined with
    the log-prob; ``logprob_weight`` given here wins over the stored one.
    """
    reranker = Reranker.load(reranker_dir)
    if logprob_weight is None:
        logprob_weight = reranker.meta.get("logprob_weight")
    try:
        report = rerank_report(problems, samples, results, reranker, seed=seed, examples=True,
                               progress=progress, logprob_weight=logprob_weight)
    finally:
        reranker.close()
    report["reranker"] = str(reranker_dir)
    return report


def n_label(report: Mapping) -> str:
    """``n=16``, or ``n=8..16`` when problems have different numbers of candidates."""
    return f"n={report['n_min']}" + (f"..{report['n_max']}" if report["n_max"] != report["n_min"] else "")


def format_eval_rerank(report: Mapping) -> str:
    """The block `itercode eval --rerank` prints under the pass@k table."""
    lines = ["", f"reranking {report['problems']} problems ({n_label(report)} candidates each) with {report['reranker']}"]
    lines.append(format_report({"share": report}))
    if report.get("logprob_weight") is not None:
        lines.append(f"(reranked_logprob_pass@1: reranker score + {report['logprob_weight']:g} x mean log-prob)")
    if report.get("mean_logprob_pick") is None:
        lines.append("(mean_logprob_pick: the samples carry no mean_logprob; draw them with `itercode sample`)")
    return "\n".join(lines)
