"""How a benchmark hands over its result: the ``--json FILE`` copy and the closing JSON line.

The last line a benchmark prints is its whole result as one line of JSON, so
a script can read it from the output without knowing where a file went;
``--json FILE`` also writes it (atomically) to FILE.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from codegen.io import write_json_atomic


def emit_result(result: dict[str, Any], json_path: str | None, label: str) -> None:
    """Write ``result`` to ``json_path`` when given (saying ``<label> JSON: <path>``), then print it as one line."""
    if json_path:
        write_json_atomic(Path(json_path), result)
        print(f"{label} JSON: {json_path}")
    print(json.dumps(result))
