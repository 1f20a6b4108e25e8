"""Small hand-made Python repositories with real cross-file structure, for the RLCoder tests.

Each repository has a ``helpers.py`` of functions with names unique to it, a
``models.py`` whose class calls them, and an ``app.py`` that calls both: the
lines of ``app.py`` are hard to guess without the other files and easy with
them, which is what retrieval is for.
"""
from __future__ import annotations

import random
from pathlib import Path

VERBS = ["load", "parse", "merge", "scale", "clean", "render", "fetch", "store", "split", "count"]
NOUNS = ["record", "header", "token", "frame", "config", "item", "batch", "entry", "score", "path"]


def write_repo(root: Path, name: str, rng: random.Random, functions: int = 6) -> Path:
    """One repository under ``root/name``; returns its directory."""
    repo = root / name
    pkg = repo / name
    pkg.mkdir(parents=True)
    names = rng.sample([f"{v}_{n}" for v in VERBS for n in NOUNS], functions)
    consts = [rng.randint(2, 97) for _ in names]
    helpers = [f'"""Helpers of {name}."""\n']
    for fn, c in zip(names, consts):
        helpers.append(f"\ndef {fn}(value, factor={c}):\n    total = value * factor\n    return total + {c}\n")
    (pkg / "helpers.py").write_text("\n".join(helpers))
    cls = name.title().replace("_", "") + "Model"
    models = [f'"""Models of {name}."""\nfrom {name}.helpers import {", ".join(names)}\n\n',
              f"class {cls}:\n    def __init__(self, size):\n        self.size = size\n"]
    for fn in names:
        models.append(f"\n    def {fn}_all(self, values):\n        return [{fn}(v) for v in values]\n")
    (pkg / "models.py").write_text("\n".join(models))
    app = [f'"""The {name} app."""\nfrom {name} import helpers\nfrom {name}.models import {cls}\n\n',
           "def main(values):\n", f"    model = {cls}(len(values))\n"]
    for fn in names:
        app.append(f"    {fn}_out = helpers.{fn}(len(values))\n")
        app.append(f"    {fn}_list = model.{fn}_all(values)\n")
    app.append("    return model\n")
    (pkg / "app.py").write_text("".join(app))
    (pkg / "__init__.py").write_text("")
    return repo


def make_tiny_repos(root: str | Path, n: int = 6, seed: int = 0) -> list[Path]:
    """``n`` repositories under ``root`` (created), named repo0..repo{n-1}."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    return [write_repo(root, f"repo{i}", rng) for i in range(n)]
