"""The RLCoder corpus (pins, split, fetch, unpack) and its tasks (blocks, BM25, cuts, metrics)."""
from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from codegen.errors import UserError
from codegen.repo.corpus import (SPLITS, Pin, _unpack, check_disjoint, check_unseen, load_corpus_spec, parse_pin,
                                 python_files, repos_in, split_by_name)
from codegen.repo.tasks import BlockIndex, edit_similarity, exact_match, make_tasks, repo_blocks, split_blocks, words

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_corpus_puts_each_repository_in_one_split():
    spec = load_corpus_spec(ROOT / "configs" / "rlcoder_corpus.yaml")
    keys = [pin.key for split in SPLITS for pin in spec[split]]
    assert len(keys) == len(set(keys)) >= 30
    assert all(spec[s] for s in SPLITS)


def test_a_project_in_two_splits_is_refused(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("generator: [attrs==23.2.0]\nretriever: []\nevaluation: [Attrs==23.1.0]\n")
    with pytest.raises(UserError, match="'attrs' is listed under 'generator' and 'evaluation'"):
        load_corpus_spec(f)
    with pytest.raises(UserError, match="name==version"):
        parse_pin("attrs>=23")


def test_split_by_name_is_a_partition_and_stable(tmp_path):
    repos = [tmp_path / f"r{i}" for i in range(20)]
    split = split_by_name(repos)
    flat = [r for s in SPLITS for r in split[s]]
    assert sorted(flat) == sorted(repos) and len(flat) == len(set(flat))
    check_disjoint(split)
    # a repository's split does not depend on what else is in the folder
    fewer = split_by_name(repos[:10])
    where = {r: s for s, rs in split.items() for r in rs}
    assert sum(where[r] == s for s, rs in fewer.items() for r in rs) >= 8  # only tiny-folder top-ups may move
    assert all(split_by_name(repos[:3])[s] for s in SPLITS)


def test_a_training_project_under_another_name_is_refused_by_its_files(tiny_repos, tmp_path):
    """check_unseen: a renamed copy of a training repository is caught by its files' text; other projects pass,
    even one that happens to share a training repository's name."""
    from tiny_repos import make_tiny_repos

    training = repos_in(tiny_repos)
    copy = tmp_path / "eval" / "renamed"
    shutil.copytree(training[0], copy)
    with pytest.raises(UserError, match="'renamed' shares 3 of its 3 Python files with the training repository 'repo0'"):
        check_unseen([copy], training)
    check_unseen(make_tiny_repos(tmp_path / "other", n=2, seed=7), training)  # named repo0, repo1; other code


def test_unpack_refuses_paths_outside_the_repository(tmp_path):
    evil = tmp_path / "evil-1.0-py3-none-any.whl"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../outside.py", "x = 1\n")
    with pytest.raises(UserError, match="outside"):
        _unpack(evil, tmp_path / "out")
    assert not (tmp_path / "outside.py").exists()


def test_repos_in_and_python_files(tiny_repos):
    repos = repos_in(tiny_repos)
    assert [r.name for r in repos] == [f"repo{i}" for i in range(6)]
    files = python_files(repos[0])
    assert set(files) == {"repo0/__init__.py", "repo0/app.py", "repo0/helpers.py", "repo0/models.py"}
    with pytest.raises(UserError, match="not a directory"):
        repos_in(tiny_repos / "nope")


def test_split_blocks_merges_paragraphs_up_to_the_limit():
    text = "a\nb\n\nc\n\n\nd\ne\nf\ng\n"
    blocks = split_blocks(text, "x.py", max_lines=3)
    assert [(b.start, b.text) for b in blocks] == [(0, "a\nb"), (3, "c"), (6, "d\ne\nf"), (9, "g")]
    assert [b.text for b in split_blocks(text, "x.py", max_lines=15)] == ["a\nb\n\nc\n\n\nd\ne\nf\ng"]


def test_words_split_identifiers():
    assert words("parse_header(HTTPRequest)") == ["parse_header", "parse", "header", "httprequest", "http",
                                                  "request"]


def test_bm25_finds_the_definition_in_another_file(tiny_repos):
    files = python_files(tiny_repos / "repo0")
    index = BlockIndex(repo_blocks(files))
    app = files["repo0/app.py"]
    fn = next(line for line in app.splitlines() if "helpers." in line).split("helpers.")[1].split("(")[0]
    hits = index.search(f"x = helpers.{fn}(3)", k=3, exclude_path="repo0/app.py")
    assert hits and all(b.path != "repo0/app.py" for b, _ in hits)
    assert any(f"def {fn}(" in b.text for b, _ in hits)
    assert all(fn in b.text for b, _ in hits[:2])


def test_tasks_are_deterministic_and_cut_between_20_and_80_percent(tiny_repos):
    repos = repos_in(tiny_repos)
    a = make_tasks(repos, per_repo=4, seed=3, preselect=5)
    b = make_tasks(repos, per_repo=4, seed=3, preselect=5)
    assert [t.to_dict() for t in a] == [t.to_dict() for t in b]
    assert [t.task_id for t in a] != [t.task_id for t in make_tasks(repos, per_repo=4, seed=4, preselect=5)]
    for t in a:
        n = len(python_files(tiny_repos / t.repo)[t.path].splitlines())
        assert 0.2 * n - 1 <= t.line <= 0.8 * n
        assert t.context.count("\n") == t.line and t.first_line.strip()
        assert t.candidates and all(c["path"] != t.path for c in t.candidates)
        assert len(t.candidates) <= 5


def test_metrics():
    assert exact_match("  x = 1 ", "x = 1") == 1.0 and exact_match("x = 2", "x = 1") == 0.0
    assert edit_similarity("abcd", "abcd") == 1.0
    assert edit_similarity("abcd", "abce") == pytest.approx(0.75)
    assert edit_similarity("", "abc") == 0.0


@pytest.mark.slow
def test_fetch_two_real_pins_from_the_registry(tmp_path):
    """CI reaches the package index: two small pins download, unpack and give tasks (cached per session)."""
    from codegen.repo.corpus import fetch_corpus

    spec = {"generator": [Pin("iniconfig", "2.0.0")], "retriever": [], "evaluation": [Pin("blinker", "1.8.2")]}
    repos = fetch_corpus(spec, tmp_path)
    assert repos["generator"][0].name == "iniconfig-2.0.0"
    assert "iniconfig/__init__.py" in python_files(repos["generator"][0])
    again = fetch_corpus(spec, tmp_path)  # cached: no second download
    assert again == repos
    assert make_tasks(repos["evaluation"], per_repo=3, seed=0)
