"""Reading a run directory from a test while its loop runs, or after it was killed."""
from __future__ import annotations

import json
from pathlib import Path


def read_state(root: Path) -> dict:
    """The run's state.json; a run not started yet (or a file being replaced) reads as empty."""
    try:
        return json.loads((root / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}, "running": None}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def assert_every_json_file_is_whole(root: Path) -> None:
    """Every JSON and JSONL file under ``root`` parses: none was left half-written."""
    for path in root.rglob("*"):
        if path.suffix == ".json" and path.is_file():
            json.loads(path.read_text())
        elif path.suffix == ".jsonl" and path.is_file():
            read_jsonl(path)
