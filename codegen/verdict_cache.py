"""The verdict cache: the same program, tests, limits and sandbox give the same
verdict, so evaluating the same samples twice runs nothing the second time.

The key is a SHA-256 of everything that can change a verdict: the candidate
program, the tests, the entry point, the trusted prefix, the limits, and the
backend's name and version (a new sandbox version invalidates old verdicts).
`infra_error` verdicts are never stored: they say nothing about the program.
Timeouts are stored (under their limits): the key holds the timeout, so a run
with a longer one re-runs them; `--no-cache` re-checks everything.

Storage is one SQLite file, ``verdicts.sqlite3``, under ``$ITERCODE_CACHE``, else
``$XDG_CACHE_HOME/itercode``, else ``~/.cache/itercode``. SQLite makes
concurrent runs and a run killed mid-write safe.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable

from sandbox.base import INFRA_ERROR, Job, Limits

SCHEMA_VERSION = 1


def cache_dir() -> Path:
    """Where the cache lives (see the module docstring)."""
    if os.environ.get("ITERCODE_CACHE"):
        return Path(os.environ["ITERCODE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "itercode"


def verdict_key(job: Job, limits: Limits, backend: str, backend_version: str) -> str:
    """Hash of everything that can change the verdict of ``job`` (not its id)."""
    payload = json.dumps(
        [SCHEMA_VERSION, job.program, job.tests, job.entry_point, job.trusted_prefix, limits.key(), backend, backend_version],
        ensure_ascii=True,
    )
    return hashlib.sha256(payload.encode("ascii")).hexdigest()


class VerdictCache:
    """``key -> verdict dict`` in SQLite; safe to share between threads and processes."""

    def __init__(self, directory: str | os.PathLike | None = None):
        self.directory = Path(directory) if directory is not None else cache_dir()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / "verdicts.sqlite3"
        self._lock = threading.Lock()
        # Callbacks may arrive on an executor's thread: one connection, one lock.
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            pass  # some filesystems refuse WAL; the default journal still works
        self._db.execute("CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, verdict TEXT NOT NULL)")

    def get_many(self, keys: Iterable[str]) -> dict[str, dict]:
        """The stored verdicts among ``keys``."""
        keys = list(dict.fromkeys(keys))
        found: dict[str, dict] = {}
        with self._lock:
            for i in range(0, len(keys), 500):  # SQLite caps bound parameters per statement
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                for key, verdict in self._db.execute(f"SELECT key, verdict FROM verdicts WHERE key IN ({marks})", chunk):
                    found[key] = json.loads(verdict)
        return found

    def put_many(self, items: Iterable[tuple[str, dict]]) -> None:
        """Store verdicts; infra errors are skipped (they are not the program's doing)."""
        rows = [(k, json.dumps(v, ensure_ascii=True)) for k, v in items if v.get("status") != INFRA_ERROR]
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO verdicts (key, verdict) VALUES (?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM verdicts").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
