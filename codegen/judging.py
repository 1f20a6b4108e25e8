"""Judging: candidate programs in, one verdict dict each out, through one sandbox.

`Judge` is the one path every part of itercode runs candidates through:
`evaluate_samples` (eval, the demo, the loops), the server's request tests
(`codegen.app.server.ranking.TestRunner`) and a reranker's docstring-example
feedback (`rerankers.feedback.ExampleRunner`). A judge holds, for its life:

- the sandbox: any backend of `sandbox.BACKENDS`, made by
  `sandbox.make_executor` on first use and kept warm until `close`;
- the verdict cache (`codegen.verdict_cache`): a program already judged under
  the same tests, limits and sandbox is not run again, and identical programs
  within a batch run once;
- the infra retry: an ``infra_error`` verdict (the host failed, not the
  program) runs once more; one that fails again comes back as ``infra_error``
  with ``attempts == 2``, for the caller to report on its own line.

Every verdict leaves as the dict `verdict_dict` makes (status, passed,
tests_passed, tests_total, duration_s, stderr, provoked), plus ``cached`` and
``attempts``.
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
from codegen.problems import Problem
from codegen.samples import Sample
from codegen.verdict_cache import VerdictCache, verdict_key
from sandbox import DEFAULT_BACKEND
from sandbox.base import INFRA_ERROR, Executor, Job, Limits, Verdict

ResultFn = Callable[[int, dict], None]  # (job index, result)
_VERDICT_FIELDS = tuple(f.name for f in dataclasses.fields(Verdict) if f.name != "job_id")


def verdict_dict(v: Verdict) -> dict:
    """The one way a sandbox verdict becomes plain data (results files, the verdict
    cache, the server's responses, feedback lines).

    ``provoked``: the sandbox broke during the run twice, on two fresh workers,
    so the error counts as the run's own (see `sandbox.base.confirmed_provoked`).
    """
    return {
        "status": v.status,
        "passed": v.passed,
        "tests_passed": v.tests_passed,
        "tests_total": v.tests_total,
        "duration_s": round(float(v.duration_s), 4),
        "stderr": v.stderr,
        "provoked": bool(v.provoked),
    }


def _from_stored(stored: dict) -> Verdict:
    # Entries written before a field existed take the field's default.
    return Verdict(job_id="", **{k: stored[k] for k in _VERDICT_FIELDS if k in stored})


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


class Judge:
    """A sandbox with the verdict cache and the infra retry; see the module docstring.

    ``executor``: a running sandbox to use (the caller closes it); otherwise
    ``sandbox.make_executor(backend, workers=workers, **options)`` makes one on
    first use (``options``: e.g. ``sandbox.backend_options("ray", "auto")``),
    and `close` stops it (a later call starts a fresh one). ``cache=False``
    neither reads nor writes the verdict cache; ``cache_dir`` overrides where
    it lives. Calls are serialised: the sandbox parallelises within a batch.
    """

    def __init__(self, backend: str = DEFAULT_BACKEND, workers: int | None = None, *,
                 executor: Executor | None = None, cache: bool = True, cache_dir: str | None = None,
                 options: dict | None = None):
        self.backend_name = getattr(executor, "name", backend) if executor is not None else backend
        self.workers = workers
        self.options = dict(options or {})
        self.use_cache, self.cache_dir = cache, cache_dir
        self._executor = executor
        self._own_executor = executor is None
        self._store = None
        self._store_opened = False
        self._lock = threading.RLock()

    # -- the sandbox

    def start(self) -> Executor:
        """The sandbox, started now if it is not running (a wrong backend fails here)."""
        with self._lock:
            if self._executor is None:
                self._executor = sandbox.make_executor(self.backend_name, workers=self.workers, **self.options)
            return self._executor

    @property
    def running(self) -> bool:
        return self._executor is not None

    def describe(self) -> dict:
        """The backend's name and version (the version once the sandbox has started)."""
        ex = self._executor
        return {"backend": getattr(ex, "name", self.backend_name) if ex is not None else self.backend_name,
                "version": str(getattr(ex, "version", "unknown")) if ex is not None else None}

    def close(self) -> None:
        """Stop the sandbox this judge started, and close the verdict cache."""
        with self._lock:
            try:
                if self._own_executor and self._executor is not None:
                    self._executor.close()
            finally:
                if self._own_executor:
                    self._executor = None
                if self._store is not None:
                    self._store.close()
                self._store, self._store_opened = None, False

    def __enter__(self) -> "Judge":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- judging

    def run_pairs(self, pairs: Sequence[tuple[Problem, str]], limits: Limits = Limits()) -> list[dict]:
        """One verdict dict per (problem, completion), in order."""
        jobs = [to_job(p, Sample(p.task_id, completion, f"{p.task_id}#{i}")) for i, (p, completion) in enumerate(pairs)]
        return self.run(jobs, limits)

    def run(self, jobs: Sequence[Job], limits: Limits = Limits(), *, on_result: ResultFn | None = None,
            progress: bool = False, desc: str = "judging") -> list[dict]:
        """One verdict dict per job, in job order.

        ``on_result(i, result)`` is called once per job (``i``: its position in
        ``jobs``) as its verdict becomes final, in completion order, e.g. to
        stream results to a file.
        """
        with self._lock:
            executor = self.start()
            bar = tqdm(total=len(jobs), disable=not progress, unit="sample", desc=desc, dynamic_ncols=True)
            try:
                return _Batch(jobs, limits, executor, self._cache(), on_result, bar).run()
            finally:
                bar.close()

    def _cache(self):
        """The verdict cache, or None (with a warning, once) where it cannot be opened."""
        if self.use_cache and not self._store_opened:
            self._store_opened = True
            try:
                self._store = VerdictCache(self.cache_dir)
            except (OSError, sqlite3.Error) as e:
                print(f"itercode: warning: verdict cache unavailable ({e}); running without it. "
                      "Set ITERCODE_CACHE to a writable folder to enable it.", file=sys.stderr)
        return self._store


class _Batch:
    """One `Judge.run` call: cache look-up, de-duplication, the run and its one retry."""

    def __init__(self, jobs, limits: Limits, executor: Executor, store, on_result: ResultFn | None, bar):
        self.jobs, self.limits, self.executor, self.store = list(jobs), limits, executor, store
        self.on_result, self.bar = on_result, bar
        self.backend = getattr(executor, "name", type(executor).__name__)
        version = str(getattr(executor, "version", "unknown"))
        # Jobs sharing a key (identical programs and tests) share one run.
        self.by_key: dict[str, list[int]] = defaultdict(list)
        for i, job in enumerate(self.jobs):
            self.by_key[verdict_key(job, limits, self.backend, version)].append(i)
        self.results: list[dict | None] = [None] * len(self.jobs)
        self.lock = threading.Lock()

    def run(self) -> list[dict]:
        pending = list(self.by_key)
        if self.store is not None:
            hits = self.store.get_many(pending)
            for key, stored in hits.items():
                self.settle(key, verdict_dict(_from_stored(stored)), cached=True, attempts=0)
            pending = [k for k in pending if k not in hits]
        for attempt in (1, 2):
            if not pending:
                break
            pending = self.run_once(pending, attempt, last=attempt == 2)
        missing = sum(r is None for r in self.results)
        if missing:
            raise RuntimeError(f"the {self.backend} sandbox returned no verdict for {missing} job(s)")
        return self.results  # type: ignore[return-value]

    def settle(self, key: str, verdict: dict, *, cached: bool, attempts: int) -> None:
        with self.lock:
            for i in self.by_key[key]:
                if self.results[i] is not None:
                    continue
                self.results[i] = {**verdict, "cached": cached, "attempts": attempts}
                if self.on_result is not None:
                    self.on_result(i, self.results[i])
                self.bar.update(1)

    def run_once(self, pending: list[str], attempt: int, last: bool) -> list[str]:
        """Run one job per pending key; return the keys that got ``infra_error`` (to retry)."""
        # Job ids are positions in this batch: callers' ids need not be unique or safe.
        batch = [dataclasses.replace(self.jobs[self.by_key[k][0]], job_id=str(n)) for n, k in enumerate(pending)]
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
            verdict = verdict_dict(v)
            self.settle(key, verdict, cached=False, attempts=attempt)
            if self.store is not None:
                with flush_lock:
                    to_store.append((key, verdict))
                    # Store as we go, so a run stopped half-way keeps what it learned.
                    if len(to_store) >= 64:
                        self.store.put_many(to_store)
                        to_store.clear()

        try:
            verdicts = self.executor.run(batch, self.limits, on_verdict=on_verdict)
            for v in verdicts:  # a backend that skipped a callback still counts
                on_verdict(v)
        finally:
            if self.store is not None:
                with flush_lock:
                    self.store.put_many(to_store)
                    to_store.clear()
        return retry
