"""The layout holds: imports flow one way, and importing stays cheap.

codegen.app > loops > rerankers > core codegen > sandbox (the contracts are in
pyproject.toml, checked by import-linter); project modules import each other at
module level, and an import inside a function says on the line above (or its
own line) why it waits: ``# heavy: ...`` (torch, vLLM, TRL ...) or
``# optional: ...`` (an extra that `itercode eval` must run without).
"""
from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("codegen", "sandbox", "rerankers", "loops")
CHECKED = ("codegen", "rerankers", "loops")  # sandbox keeps its own rules (stdlib harness, docker on demand)
REASON = re.compile(r"#.*\b(heavy|optional):")
# Libraries of the optional extras (pyproject.toml): `itercode eval` must start without any of them.
OPTIONAL = ("torch", "vllm", "transformers", "tokenizers", "trl", "datasets", "peft", "accelerate", "matplotlib",
            "pydantic", "docker", "fastapi", "starlette", "uvicorn", "openai", "prometheus_client", "ray", "bm25s")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on the packages under ``root``, with the contracts of its pyproject.toml."""
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


def test_import_contracts_hold():
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_contracts_catch_an_upward_import(tmp_path):
    """A core module that imports loops breaks the contract (so the check above can fail)."""
    for name in PACKAGES:
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path)
    with open(tmp_path / "codegen" / "passk.py", "a") as f:
        f.write("\nimport loops.table  # deliberate violation\n")
    done = lint_imports(tmp_path)
    assert done.returncode != 0
    assert "core codegen imports none of rerankers, loops, codegen.app BROKEN" in done.stdout
    assert "codegen.passk -> loops.table" in done.stdout


def function_level_imports(path: Path):
    """Line numbers of the imports inside functions of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found = set()  # a nested function's imports are inside its outer function too
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            found |= {node.lineno for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    return sorted(found)


def has_reason(lines: list[str], lineno: int) -> bool:
    """The import's own line, or the comment above its block of imports, says heavy/optional."""
    i = lineno - 1
    if REASON.search(lines[i]):
        return True
    i -= 1
    while i >= 0 and re.match(r"\s*(from \S+ )?import |\s*try:\s*$|\s*$", lines[i]):
        i -= 1  # the rest of the import block (a blank line ends it only if a comment is not above)
    return i >= 0 and lines[i].lstrip().startswith("#") and bool(REASON.search(lines[i]))


def test_function_level_imports_say_why():
    unexplained = []
    for package in CHECKED:
        for path in sorted((REPO / package).rglob("*.py")):
            lines = path.read_text().splitlines()
            for lineno in function_level_imports(path):
                if not has_reason(lines, lineno):
                    unexplained.append(f"{path.relative_to(REPO)}:{lineno}: {lines[lineno - 1].strip()}")
    assert not unexplained, (
        "imports inside functions without a reason; move them to the top of the module, or, for a heavy "
        "or optional library, say why on the line above (# heavy: ... / # optional: ...):\n" + "\n".join(unexplained))


def test_eval_starts_without_heavy_libraries():
    """`itercode eval --help` imports none of torch, vLLM ... (python -X importtime shows what loads)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "codegen", "eval", "--help"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()
              if line.startswith("import time:")}
    assert not loaded & set(OPTIONAL), sorted(loaded & set(OPTIONAL))


def test_cli_runs_without_the_optional_extras():
    """Every command's module imports with the extras' libraries missing (the light core install)."""
    code = (
        "import sys, importlib.abc\n"
        f"OPTIONAL = {OPTIONAL!r}\n"
        "class Missing(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in OPTIONAL:\n"
        "            raise ImportError(f'{name} is not installed (test)')\n"
        "sys.meta_path.insert(0, Missing())\n"
        "from codegen.app.cli import build_parser\n"
        "parser = build_parser()\n"
        "names = sorted(parser._subparsers._group_actions[0].choices)\n"
        "print(' '.join(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == sorted(["eval", "sample", "decode", "starter", "sandbox", "reranker", "loop", "runs",
                                          "serve", "rlcoder", "complete"])
