"""JSONL helpers every part of itercode uses for its artifacts.

- `read_jsonl(path)`: all rows of a JSONL file (``.gz`` too), as dicts. A bad
  line raises `UserError` naming the file and the line.
- `write_jsonl_atomic(path, rows)`: writes to a temp file in the same folder,
  then renames it over ``path``, so a reader never sees half a file.
- `append_jsonl(path, row)`: one row, one ``write`` of one whole line, flushed,
  so a run stopped at any moment leaves a file of whole lines.
"""
from __future__ import annotations

import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator

from codegen.errors import UserError


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
    >>> write_jsonl_atomic(p, [{"a": 1}]); read_jsonl(p)
    [{'a': 1}]
    """
    return [row for _, row in iter_jsonl(path)]


def _dumps(row: Any) -> str:
    # ensure_ascii keeps each line pure ASCII, so odd Unicode in model output
    # (lone surrogates included) can never make a line unreadable.
    return json.dumps(row, ensure_ascii=True)


def write_jsonl_atomic(path: str | os.PathLike, rows: Iterable[Any]) -> Path:
    """Write ``rows`` to ``path`` atomically (temp file in the same folder + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide artifacts from other users
        with os.fdopen(fd, "wb") as raw:
            f = gzip.GzipFile(fileobj=raw, mode="wb") if path.suffix == ".gz" else raw
            for row in rows:
                f.write((_dumps(row) + "\n").encode("ascii"))
            if f is not raw:
                f.close()
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
