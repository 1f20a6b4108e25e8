"""Every file itercode writes or reads as an artifact goes through here.

Writing: one atomic writer. `atomic_path` yields a temporary file beside the
target; when the block succeeds the file is fsynced and renamed over the
target (os.replace is atomic on POSIX), so a reader sees the old file or the
new one, never half of one, even after a crash or SIGKILL.

- `write_bytes_atomic`, `write_text_atomic`, `write_json_atomic`,
  `write_jsonl_atomic` (``.gz`` too): whole files, built on `atomic_path`.
- `atomic_path(path)`: for writers that open the file themselves
  (matplotlib's ``savefig``).
- `atomic_dir(path)`: the same for directories (model checkpoints), and
  `replace_dir` / `publish_dir` for a directory that is already built.
- `append_jsonl`, `JsonlAppender`: one row, one ``write`` of one whole line,
  so a run stopped at any moment leaves a file of whole lines.

Every temporary name starts with `TMP_PREFIX`, so a directory's owner (a run
directory) can sweep what a killed writer left behind.

Reading: `iter_jsonl` / `read_jsonl`: the rows of a JSONL file (``.gz`` too),
as dicts. A bad line raises `UserError` naming the file and the line.
"""
from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from codegen.errors import UserError

TMP_PREFIX = ".tmp-"  # every temporary file or directory made here starts with this


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, row)`` for each non-blank line of a JSONL file.

    Line numbers count from 1, as editors show them, so errors can name them.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        with _open_text(path) as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{path}, line {lineno}: not valid JSON ({e.msg}); each line must be one JSON object") from None
                if not isinstance(row, dict):
                    raise UserError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}")
                yield lineno, row
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason}); JSONL files must be UTF-8") from None
    except (OSError, EOFError) as e:
        if isinstance(e, FileNotFoundError):
            raise UserError(f"{path}: no such file") from None
        raise UserError(f"{path}: cannot read ({e})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All rows of a JSONL file (plain or ``.gz``).

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "x.jsonl")
    >>> _ = write_jsonl_atomic(p, [{"a": 1}]); read_jsonl(p)
    [{'a': 1}]
    """
    return [row for _, row in iter_jsonl(path)]


def _dumps(row: Any) -> str:
    # ensure_ascii keeps each line pure ASCII, so odd Unicode in model output
    # (lone surrogates included) can never make a line unreadable.
    return json.dumps(row, ensure_ascii=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block succeeds, fsync it and rename it over ``path``.

    On an error the temporary file is removed and ``path`` is left as it was.

    >>> import tempfile, os; p = os.path.join(tempfile.mkdtemp(), "plot.png")
    >>> with atomic_path(p) as tmp:
    ...     _ = tmp.write_bytes(b"png")
    >>> open(p, "rb").read()
    b'png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide artifacts from other users
        finally:
            os.close(fd)
        yield tmp
        _fsync(tmp)  # the data is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj: Any) -> Path:
    """``obj`` as indented JSON (one trailing newline), written atomically."""
    return write_text_atomic(path, json.dumps(obj, indent=2) + "\n")


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """``rows`` as JSONL (gzip-compressed when ``path`` ends in ``.gz``), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw:
        f = gzip.GzipFile(fileobj=raw, mode="wb") if Path(path).suffix == ".gz" else raw
        for row in rows:
            f.write((_dumps(row) + "\n").encode("ascii"))
        if f is not raw:
            f.close()
    return Path(path)


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; it replaces ``final`` when the block succeeds.

    >>> with atomic_dir(run / "model") as tmp:   # doctest: +SKIP
    ...     trainer.save_model(tmp)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.", dir=final.parent))
    try:
        yield tmp
        replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_dir(built: str | os.PathLike, final: str | os.PathLike) -> Path:
    """Move the finished directory ``built`` to ``final`` (same file system).

    An older ``final`` is moved aside first and removed only once the new one
    is in place; if the move fails, the old one is put back.
    """
    built, final = Path(built), Path(final)
    aside = None
    if final.exists():
        aside = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}.old.", dir=final.parent))
        os.replace(final, aside / "old")
    try:
        os.replace(built, final)
    except BaseException:
        if aside is not None:
            os.replace(aside / "old", final)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return final


def publish_dir(built: str | os.PathLike, final: str | os.PathLike) -> bool:
    """Move ``built`` to ``final`` unless ``final`` already exists (the first writer wins).

    For content-addressed caches, where two builders make the same thing and a
    reader of the published copy must never see it swapped. Returns False when
    another writer was first (``built`` is then left for the caller to remove).
    """
    try:
        os.rename(built, final)  # fails on a non-empty final: never replaces
    except OSError:
        if not Path(final).exists():
            raise
        return False
    return True


def append_jsonl(path: str | os.PathLike, row: Any) -> None:
    """Append one row as one whole line.

    The line goes out in a single ``write`` on an ``O_APPEND`` descriptor, so a
    process killed mid-run leaves only whole lines behind.
    """
    data = (_dumps(row) + "\n").encode("ascii")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


class JsonlAppender:
    """Keeps one ``O_APPEND`` descriptor open for many `append_jsonl`-style writes.

    Each row is still a single ``write`` of a whole line. Use as a context
    manager; ``truncate=True`` starts the file empty.
    """

    def __init__(self, path: str | os.PathLike, truncate: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (os.O_TRUNC if truncate else 0)
        self._fd = os.open(self.path, flags, 0o644)

    def write(self, row: Any) -> None:
        if self._fd < 0:
            return  # closed: a late callback after an interrupt writes nothing
        os.write(self._fd, (_dumps(row) + "\n").encode("ascii"))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
