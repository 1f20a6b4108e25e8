"""Repository-level completion tasks in RLCoder's style, and their BM25 candidates.

A task cuts one file of a repository at a random line between 20% and 80% of
its length: the lines before the cut are the in-file context, the next few
lines the target. The candidates are blocks of the repository's *other*
files: each file is split at blank lines into paragraphs, and neighbouring
paragraphs are merged while the block stays within ``max_block_lines`` (15,
as in RLCoder's reference code). BM25 (bm25s) preselects ``preselect`` of
them with the context's last lines as the query; the retriever later ranks
only these. Everything is seeded: the same repositories and seed give the same
tasks.

Tokenisation for BM25 is identifier-aware: ``parse_header_line`` gives the
words ``parse_header_line``, ``parse``, ``header`` and ``line``, so a call
matches the definition's name and its parts.

>>> tasks = make_tasks([repo_dir], per_repo=10, seed=0)   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import random
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from codegen.errors import UserError
from codegen.repo.corpus import python_files

_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
_PART = re.compile(r"[A-Z]?[a-z0-9]+|[A-Z]+(?![a-z])")


def words(text: str) -> list[str]:
    """BM25 terms: identifiers whole and split at underscores and case changes, lower-cased."""
    out: list[str] = []
    for w in _WORD.findall(text):
        low = w.lower()
        out.append(low)
        parts = [p.lower() for p in _PART.findall(w)]
        if len(parts) > 1:
            out.extend(parts)
    return out


@dataclass(frozen=True)
class Block:
    """Lines ``start``..``start + n`` (0-based) of ``path``; ``id`` is unique within a repository."""

    path: str
    start: int
    text: str

    @property
    def id(self) -> str:
        return f"{self.path}:{self.start}"


def split_blocks(text: str, path: str, max_lines: int = 15) -> list[Block]:
    """Blank-line paragraphs of ``text`` merged into blocks of at most ``max_lines`` lines.

    A paragraph longer than ``max_lines`` is cut into pieces of ``max_lines``.
    Blank lines between merged paragraphs are kept (the block reads as the file does).
    """
    lines = text.splitlines()
    paragraphs: list[tuple[int, list[str]]] = []  # (start line, lines)
    cur: list[str] = []
    start = 0
    for i, line in enumerate(lines + [""]):
        if line.strip():
            if not cur:
                start = i
            cur.append(line)
        elif cur:
            for j in range(0, len(cur), max_lines):
                paragraphs.append((start + j, cur[j:j + max_lines]))
            cur = []
    blocks: list[Block] = []
    b_start, b_lines, b_end = None, [], 0
    for p_start, p_lines in paragraphs:
        span = p_start + len(p_lines) - (b_start if b_start is not None else p_start)
        if b_start is not None and span <= max_lines:
            b_lines = b_lines + [""] * (p_start - b_end) + p_lines
        else:
            if b_start is not None:
                blocks.append(Block(path, b_start, "\n".join(b_lines)))
            b_start, b_lines = p_start, list(p_lines)
        b_end = p_start + len(p_lines)
    if b_start is not None:
        blocks.append(Block(path, b_start, "\n".join(b_lines)))
    return blocks


def repo_blocks(files: dict[str, str], max_lines: int = 15) -> list[Block]:
    """Every block of every file, in path order."""
    return [b for path in sorted(files) for b in split_blocks(files[path], path, max_lines)]


class BlockIndex:
    """BM25 over one repository's blocks; `search` leaves out the blocks of the file being completed."""

    def __init__(self, blocks: Sequence[Block]):
        try:
            import bm25s  # optional: the `retrieval` extra
        except ImportError:
            raise UserError("BM25 needs bm25s, which is not installed; pip install 'itercode[retrieval]'") from None

        self.blocks = list(blocks)
        self._bm25 = bm25s.BM25()
        # bm25s refuses an empty document list, and a block without words would be an empty document
        self._bm25.index([words(b.text) or ["_"] for b in self.blocks] or [["_"]], show_progress=False)

    def search(self, query: str, k: int, exclude_path: str | None = None) -> list[tuple[Block, float]]:
        """The ``k`` best-scoring blocks outside ``exclude_path``, best first, with their BM25 scores.

        Ties are broken by position in the repository, so the order is deterministic.
        """
        if not self.blocks:
            return []
        terms = words(query) or ["_"]
        scores = self._bm25.get_scores(terms)
        order = sorted((i for i, b in enumerate(self.blocks) if b.path != exclude_path),
                       key=lambda i: (-float(scores[i]), i))
        return [(self.blocks[i], float(scores[i])) for i in order[:k]]


@dataclass
class Task:
    """One completion task: ``context`` of ``path`` in ``repo`` continues with ``target``."""

    task_id: str
    repo: str
    path: str
    line: int  # 0-based index of the target's first line in the file
    context: str  # the file's lines before ``line``, each ending in "\n"
    target: str  # the next lines (at most target_lines), each ending in "\n"
    # BM25's preselection, best first: {"id", "path", "text", "bm25"}
    candidates: list[dict[str, Any]] = field(default_factory=list)
    # Generator training only: the block BM25 finds with the target in the query (a block that
    # likely holds what the next lines need; never used for the retriever or evaluation).
    hint: dict[str, Any] | None = None

    @property
    def first_line(self) -> str:
        return self.target.split("\n", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        return cls(**d)


def query_of(context: str, lines: int = 10) -> str:
    """The BM25 query: the context's last ``lines`` lines (what the next line most depends on)."""
    return "\n".join(context.splitlines()[-lines:])


def _good_target(line: str) -> bool:
    """A target line worth predicting: some code with an identifier, not a lone bracket or docstring quote."""
    s = line.strip()
    return len(s) >= 6 and bool(_WORD.search(s)) and not s.startswith(("#", '"""', "'''"))


def cut_points(text: str, rng: random.Random, low: float = 0.2, high: float = 0.8,
               tries: int = 20) -> int | None:
    """A line index between ``low`` and ``high`` of the file whose line is a good target; None if none found."""
    lines = text.splitlines()
    if len(lines) < 10:
        return None
    # Lines inside a triple-quoted string are prose, not code: an odd number of
    # quotes before a line puts it inside one (a heuristic, good enough to sample).
    quotes, inside = 0, []
    for line in lines:
        inside.append(quotes % 2 == 1)
        quotes += line.count('"""') + line.count("'''")
    for _ in range(tries):
        i = rng.randint(int(len(lines) * low), max(int(len(lines) * low), int(len(lines) * high) - 1))
        if _good_target(lines[i]) and not inside[i]:
            return i
    return None


def _as_candidate(block: Block, score: float) -> dict[str, Any]:
    return {"id": block.id, "path": block.path, "text": block.text, "bm25": round(score, 4)}


def make_file_task(repo_name: str, path: str, text: str, line: int, index: BlockIndex, *,
                   target_lines: int = 2, preselect: int = 20, query_lines: int = 10, hint: bool = False) -> Task:
    """The task that cuts ``path`` before ``line`` (0-based), with BM25's ``preselect`` candidates.

    ``hint``: also find the block BM25 ranks first with the target in the query (generator training).
    """
    lines = text.splitlines()
    context = "".join(line_ + "\n" for line_ in lines[:line])
    target = "".join(line_ + "\n" for line_ in lines[line:line + target_lines])
    hits = index.search(query_of(context, query_lines), preselect, exclude_path=path)
    task_id = f"{repo_name}/{path}:{line}"
    cands = [_as_candidate(b, s) for b, s in hits]
    hint_block = None
    if hint:
        hint_block = _hint_block(index, context, target, path, cands)
    return Task(task_id, repo_name, path, line, context, target, cands, hint_block)


def _hint_block(index: BlockIndex, context: str, target: str, path: str,
                cands: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The generator-training hint: a block that holds the target's first line if one does, else BM25's
    best with the target in the query (so copying from a block is what the generator learns to do)."""
    found = [_as_candidate(b, s) for b, s in index.search(query_of(context, 3) + "\n" + target, 5,
                                                           exclude_path=path) if s > 0]
    first = target.split("\n", 1)[0].strip()
    for c in found + cands:
        if first and first in (ln.strip() for ln in c["text"].split("\n")):
            return c
    return found[0] if found else None


def _rng_for(seed: int, name: str) -> random.Random:
    # One stream per repository: adding a repository never changes another's tasks.
    return random.Random(int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:16], 16))


def make_tasks(repos: Iterable[str | Path], per_repo: int, seed: int = 0, *, target_lines: int = 2,
               preselect: int = 20, max_block_lines: int = 15, query_lines: int = 10,
               hint: bool = False) -> list[Task]:
    """Up to ``per_repo`` tasks from each repository (fewer if it has few usable files), deterministic in ``seed``.

    Files are drawn with replacement weighted by length, each cut at a random
    20-80% point on a good target line; a (file, line) is used once. Only
    repositories with at least two Python files give tasks (cross-file
    retrieval needs another file).
    """
    tasks: list[Task] = []
    for repo in repos:
        repo = Path(repo)
        files = python_files(repo)
        files = {p: t for p, t in files.items() if t.strip()}
        if len(files) < 2:
            continue
        rng = _rng_for(seed, repo.name)
        index = BlockIndex(repo_blocks(files, max_block_lines))
        paths = sorted(p for p, t in files.items() if len(t.splitlines()) >= 10)
        if not paths:
            continue
        weights = [len(files[p].splitlines()) for p in paths]
        seen: set[tuple[str, int]] = set()
        for _ in range(per_repo * 4):
            if len(seen) >= per_repo:
                break
            path = rng.choices(paths, weights)[0]
            line = cut_points(files[path], rng)
            if line is None or (path, line) in seen:
                continue
            seen.add((path, line))
            tasks.append(make_file_task(repo.name, path, files[path], line, index, target_lines=target_lines,
                                        preselect=preselect, query_lines=query_lines, hint=hint))
    return tasks


def file_task(repo: str | Path, path: str, line: int, *, preselect: int = 20, max_block_lines: int = 15,
              query_lines: int = 10) -> Task:
    """The task of completing line ``line`` (1-based) of ``path`` in ``repo`` (what `itercode complete` asks)."""
    repo = Path(repo)
    files = python_files(repo)
    rel = str(Path(path)) if not Path(path).is_absolute() else str(Path(path).resolve().relative_to(repo.resolve()))
    if rel not in files:
        raise UserError(f"{path!r} is not a Python file of {str(repo)!r}; give its path relative to --repo")
    n = len(files[rel].splitlines())
    if not 1 <= line <= n + 1:
        raise UserError(f"--line {line} is outside {rel!r} (lines 1..{n + 1})")
    index = BlockIndex(repo_blocks(files, max_block_lines))
    return make_file_task(repo.name, rel, files[rel], line - 1, index, preselect=preselect, query_lines=query_lines)


# ----------------------------------------------------------------------------- metrics
def exact_match(pred: str, target: str) -> float:
    """1.0 when the lines agree ignoring surrounding whitespace."""
    return float(pred.strip() == target.strip())


def edit_similarity(pred: str, target: str) -> float:
    """1 - Levenshtein distance / the longer length, on the stripped lines (CrossCodeEval's ES, in 0..1)."""
    a, b = pred.strip(), target.strip()
    if not a and not b:
        return 1.0
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return 1.0 - prev[-1] / max(len(a), len(b))
