"""A corpus of real Python repositories: pinned, fetched once, split by repository.

The corpus file (configs/rlcoder_corpus.yaml) lists ``name==version`` pins under
three splits: ``generator`` (the code model trains on them), ``retriever``
(the retriever's training tasks) and ``evaluation`` (only evaluated on). A
project may sit in one split only, which `load_corpus_spec` checks, so no
evaluation repository is ever seen in training.

`fetch_corpus` runs ``pip download --no-deps`` for each pin not yet in the
cache and unpacks the wheel or sdist as one directory per project; nothing
touches the network once the cache holds every pin. Any directory of
repositories works too: `repos_in` lists its subdirectories, and
`split_by_name` spreads them over the three splits by a hash of their names
(stable whatever else the directory holds).

What this does not do: resolve dependencies (the pins are leaves on purpose),
build C extensions, or check licences.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from codegen.errors import UserError
from codegen.verdict_cache import cache_dir

SPLITS = ("generator", "retriever", "evaluation")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.+!_-]+)$")
# Files larger than this are data tables (unicode maps, generated parsers), not code to learn from.
MAX_FILE_BYTES = 200_000
# Files shorter than this (empty __init__.py, a version string) are alike in unrelated projects.
MIN_FINGERPRINT_CHARS = 200


@dataclass(frozen=True)
class Pin:
    name: str
    version: str

    @property
    def key(self) -> str:
        """The project's normalised name (PEP 503): ``Jinja2`` and ``jinja2`` are one project."""
        return re.sub(r"[-_.]+", "-", self.name).lower()

    @property
    def dirname(self) -> str:
        return f"{self.key}-{self.version}"

    def __str__(self) -> str:
        return f"{self.name}=={self.version}"


def parse_pin(text: str) -> Pin:
    m = _PIN.match(str(text).strip())
    if not m:
        raise UserError(f"corpus entry {text!r} is not a pin; write it as name==version, e.g. attrs==23.2.0")
    return Pin(m.group(1), m.group(2))


def load_corpus_spec(path: str | Path) -> dict[str, list[Pin]]:
    """``{split: [Pin]}`` from a corpus YAML file; every split present, no project in two splits."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"corpus file {str(p)!r} does not exist; pass the path of a YAML file like "
                        "configs/rlcoder_corpus.yaml")
    raw = yaml.safe_load(p.read_text()) or {}
    if not isinstance(raw, dict):
        raise UserError(f"corpus file {str(p)!r} must map each split ({', '.join(SPLITS)}) to a list of pins")
    unknown = sorted(set(raw) - set(SPLITS))
    if unknown:
        raise UserError(f"corpus file {str(p)!r}: unknown split(s) {unknown}; the splits are {', '.join(SPLITS)}")
    spec = {split: [parse_pin(x) for x in (raw.get(split) or [])] for split in SPLITS}
    check_disjoint(spec)
    return spec


def check_disjoint(spec: dict[str, list]) -> None:
    """Raise if a project (by normalised name) is in two splits, or twice in one."""
    seen: dict[str, str] = {}
    for split, pins in spec.items():
        for pin in pins:
            key = pin.key if isinstance(pin, Pin) else Path(pin).name
            if key in seen:
                raise UserError(f"project {key!r} is listed under {seen[key]!r} and {split!r}; a repository "
                                "must be in one split only (else evaluation would see training code)")
            seen[key] = split


def default_cache() -> Path:
    """Where fetched repositories live: ``$ITERCODE_CACHE/rlcoder-repos`` (default ~/.cache/itercode)."""
    return cache_dir() / "rlcoder-repos"


def _unpack(archive: Path, dest: Path) -> None:
    """Extract a wheel (zip) or sdist (tar.gz / zip) into ``dest``, refusing paths that leave it."""
    dest.mkdir(parents=True, exist_ok=True)
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            for name in z.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise UserError(f"{archive.name}: member {name!r} would be written outside the repository")
            z.extractall(dest)
    elif archive.name.endswith((".tar.gz", ".tgz", ".tar.bz2")):
        with tarfile.open(archive) as t:
            t.extractall(dest, filter="data")  # the data filter refuses links and paths out of dest
    else:
        raise UserError(f"cannot unpack {archive.name}: expected a .whl, .zip or .tar.gz from pip download")


def fetch_pin(pin: Pin, cache: Path, pip: list[str] | None = None) -> Path:
    """The unpacked repository of ``pin`` under ``cache``, downloaded with pip if missing."""
    final = cache / pin.dirname
    if final.is_dir():
        return final
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".fetch.", dir=cache))
    try:
        cmd = (pip or [sys.executable, "-m", "pip"]) + [
            "download", "--no-deps", "--disable-pip-version-check", "-q", "-d", str(work / "dl"), str(pin)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        archives = sorted((work / "dl").glob("*")) if (work / "dl").is_dir() else []
        if done.returncode != 0 or not archives:
            raise UserError(f"pip download {pin} failed ({done.stderr.strip()[-400:]}); check the pin exists on "
                            "the package index and that the index is reachable, or pass --repos DIR")
        _unpack(archives[0], work / "repo")
        try:
            os.rename(work / "repo", final)
        except OSError:
            if not final.is_dir():  # else another process unpacked the same pin first: theirs is identical
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def fetch_corpus(spec: dict[str, list[Pin]], cache: str | Path | None = None, *,
                 progress=None) -> dict[str, list[Path]]:
    """``{split: [repository dir]}``, fetching each pin not yet in ``cache`` (default `default_cache`)."""
    root = Path(cache) if cache else default_cache()
    out: dict[str, list[Path]] = {}
    for split, pins in spec.items():
        out[split] = []
        for pin in pins:
            if progress:
                progress(f"{split}: {pin}")
            out[split].append(fetch_pin(pin, root))
    return out


def repos_in(directory: str | Path) -> list[Path]:
    """The repositories under ``directory``: its subdirectories holding at least one .py file, sorted."""
    d = Path(directory)
    if not d.is_dir():
        raise UserError(f"--repos {str(d)!r} is not a directory; give a folder with one subfolder per repository")
    repos = [p for p in sorted(d.iterdir()) if p.is_dir() and not p.name.startswith(".")
             and any(p.rglob("*.py"))]
    if not repos:
        raise UserError(f"no repository under {str(d)!r}: expected subfolders that contain .py files")
    return repos


def split_by_name(repos: list[Path], fractions=(0.5, 0.25, 0.25)) -> dict[str, list[Path]]:
    """Spread ``repos`` over `SPLITS` by a hash of each name: a repository's split never depends on the others.

    Each split with a positive fraction gets at least one repository when there
    are enough of them.
    """
    def u(p: Path) -> float:
        return int(hashlib.sha256(p.name.encode()).hexdigest()[:12], 16) / 16 ** 12

    bounds = [sum(fractions[: i + 1]) / sum(fractions) for i in range(len(SPLITS))]
    out: dict[str, list[Path]] = {s: [] for s in SPLITS}
    for repo in sorted(repos, key=u):
        out[SPLITS[next(i for i, b in enumerate(bounds) if u(repo) < b or i == len(bounds) - 1)]].append(repo)
    # Tiny directories: a hash may leave a split empty; move one repository from the largest split.
    for split, frac in zip(SPLITS, fractions):
        if frac > 0 and not out[split] and len(repos) >= len(SPLITS):
            donor = max(out, key=lambda s: len(out[s]))
            out[split].append(out[donor].pop())
    return {s: sorted(v) for s, v in out.items()}


def python_files(repo: str | Path) -> dict[str, str]:
    """``{relative path: text}`` of the repository's .py files (sorted), skipping data-sized and undecodable ones."""
    root = Path(repo)
    out: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if not path.is_file() or path.stat().st_size > MAX_FILE_BYTES:
            continue
        try:
            out[str(path.relative_to(root))] = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
    return out


def file_fingerprints(repo: str | Path) -> set[str]:
    """Hashes of the repository's non-trivial .py files, whitespace-normalised: what a renamed copy still shares."""
    return {hashlib.sha256(" ".join(text.split()).encode()).hexdigest()
            for text in python_files(repo).values() if len(text) >= MIN_FINGERPRINT_CHARS}


def check_unseen(evaluation: list[Path], training: list[Path], max_shared: float = 0.5) -> None:
    """Raise if an evaluation repository is a training one: more than ``max_shared`` of its files the same text.

    Names miss a project unpacked under another folder name (``httpx`` as
    ``client-lib``), and two unrelated projects may share a name; the files'
    text says which is which.
    """
    owner = {fp: Path(repo).name for repo in training for fp in file_fingerprints(repo)}
    for repo in evaluation:
        prints = file_fingerprints(repo)
        for name, n in Counter(owner[fp] for fp in prints & owner.keys()).items():
            if n > max_shared * len(prints):
                raise UserError(f"evaluation repository {Path(repo).name!r} shares {n} of its {len(prints)} Python "
                                f"files with the training repository {name!r}: it is the same project under another "
                                "name; evaluate on projects the run never trained on")
