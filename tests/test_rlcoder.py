"""RLCoder: prompts under a shared budget, the weighted target loss, labels, the retriever and its stop
block, the whole loop on hand-made repositories (SIGKILL at each stage), `itercode complete`, the benchmark."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

pytest.importorskip("bm25s")
pytest.importorskip("torch")

from codegen.io import read_jsonl  # noqa: E402
from codegen.repo.corpus import repos_in  # noqa: E402
from codegen.repo.generator import TINY, copy_drills, sample_lines, train_generator  # noqa: E402
from codegen.repo.prompts import PromptBuilder, token_weights  # noqa: E402
from codegen.repo.retriever import FEATURE_PARAMS, STOP, Retriever, copy_match, train_retriever  # noqa: E402
from codegen.repo.tasks import Task, edit_similarity, make_tasks  # noqa: E402
from loops.rlcoder import (Scorer, _candidates_for_round, arm_blocks, copy_rule, label_by_similarity,  # noqa: E402
                           label_of, label_stage, load_tasks, read_known, retriever_stage, round_retriever,
                           run_artifacts, run_rlcoder, soft_label)
from loops.rlcoder_config import TINY_OVERRIDES, load_rlcoder_config  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_run(tiny_repos, tmp_path_factory):
    """A whole tiny RLCoder run on the hand-made repositories (seconds)."""
    runs = tmp_path_factory.mktemp("rlcoder-runs")
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + [f"repos={tiny_repos}", f"runs_dir={runs}", "progress=false"])
    result = run_rlcoder(cfg)
    return cfg.run_dir, result


# --------------------------------------------------------------------------- labels
def test_label_is_the_candidate_that_most_lowers_the_loss_or_stop():
    assert label_of([2.0, 1.5, 1.7], no_block=2.1) == 1
    assert label_of([1.5, 1.5], no_block=2.0) == 0  # a tie goes to BM25's earlier candidate
    assert label_of([2.0, 2.2], no_block=1.9) == 2  # nothing helps: stop
    assert label_of([2.0, 1.98], no_block=2.0, margin=0.05) == 2  # helps, but by less than the margin
    assert label_of([2.0, 1.9], no_block=2.0, margin=0.05) == 1
    assert label_of([], no_block=1.0) == 0


def test_label_by_similarity_is_the_line_most_like_the_target_or_stop():
    assert label_by_similarity([0.5, 0.8, 0.7], no_block=0.6, losses=[2.0, 1.9, 1.5]) == 1
    assert label_by_similarity([0.8, 0.8], no_block=0.6, losses=[2.0, 1.5]) == 1  # a tie: the lower loss
    assert label_by_similarity([0.8, 0.8], no_block=0.6, losses=[1.5, 1.5]) == 0  # and then BM25's order
    assert label_by_similarity([0.5, 0.6], no_block=0.6, losses=[1.0, 0.5]) == 2  # none writes a better line: stop
    assert label_by_similarity([], no_block=0.6, losses=[]) == 0
    assert label_by_similarity([0.5, 0.7], no_block=0.6, losses=[1.0, 0.5], margin=0.1) == 2  # beats it, not by 0.1
    assert label_by_similarity([0.5, 0.75], no_block=0.6, losses=[1.0, 0.5], margin=0.1) == 1


def test_soft_label_weighs_each_candidate_by_its_gain_and_stop_by_the_margin():
    soft = soft_label([0.5, 0.8, 0.7], no_block=0.6, margin=0.1, temperature=0.05)
    assert sum(soft) == pytest.approx(1.0) and len(soft) == 4
    assert soft[1] > soft[2] > soft[0]  # gains 0.2, 0.1, -0.1
    assert soft[2] == pytest.approx(soft[3])  # stop's gain is the margin, 0.1
    cold = soft_label([0.5, 0.8, 0.7], no_block=0.6, margin=0.1, temperature=1e-3)  # the hard label's limit
    assert max(range(4), key=cold.__getitem__) == label_by_similarity([0.5, 0.8, 0.7], 0.6, [1, 1, 1], 0.1)
    assert soft_label([], no_block=0.6, margin=0.1, temperature=0.05) == [1.0]  # nothing to retrieve: stop
    with pytest.raises(Exception, match="set label_metric=es"):  # loss labels have no gains to soften
        load_rlcoder_config(None, ["label_metric=loss", "label_temperature=0.05"])
    with pytest.raises(Exception, match="label_temperature must be >= 0"):
        load_rlcoder_config(None, ["label_metric=es", "label_temperature=-1"])


def test_retriever_trains_on_soft_labels():
    """A distribution as the label: the retriever's softmax moves toward it (here: stop and the definition
    block equally, never the others)."""
    import torch

    r = Retriever.new(dim=8, buckets=4096, seed=0)
    examples = [(t, t.candidates, [0.0, 0.5, 0.0, 0.5]) for t in map(_toy_task, range(16))]
    losses = train_retriever(r, examples, epochs=15, lr=0.05)
    assert losses[-1] < losses[0]
    p = torch.softmax(r.scores(_toy_task(99), _toy_task(99).candidates), 0).tolist()
    assert p[1] > 0.3 and p[3] > 0.3 and p[0] + p[2] < 0.2


def test_retriever_on_expected_gain_takes_the_steady_block_over_the_one_that_wins_by_chance(tmp_path):
    """The gain objective learns each choice's mean gain: on one task seen 16 times (as tasks the features cannot
    tell apart), block 0 wins half the time by a lot and loses the rest by more (mean -0.1), block 1 always gains
    a little (+0.05). Hard labels split between the two; the expected gain takes block 1, and stop when every
    block loses on average."""
    import torch

    gains = [[0.3 if i % 2 else -0.5, 0.05, -0.2, 0.0] for i in range(16)]
    r = Retriever.new(dim=8, buckets=4096, seed=0)
    task = _toy_task(0)
    train_retriever(r, [(task, task.candidates, g) for g in gains], epochs=15, lr=0.05, objective="gain")
    p = torch.softmax(r.scores(task, task.candidates), 0).tolist()
    assert p[1] > 0.9
    hard = [label_by_similarity(g[:3], 0.0, [1, 1, 1]) for g in gains]
    assert hard.count(0) == hard.count(1) == 8  # what cross-entropy on the best of each task would learn from
    losing = [[g - 0.3 for g in row[:3]] + [0.0] for row in gains]
    r = Retriever.new(dim=8, buckets=4096, seed=0)
    train_retriever(r, [(task, task.candidates, g) for g in losing], epochs=15, lr=0.05, objective="gain")
    assert r.select(task, 2) == []
    # the loop's retriever stage turns each labelled row's lines into the gains (stop's 0)
    cfg = load_rlcoder_config(None, ["label_metric=es", "retriever_objective=gain", "retriever_lr=0.05",
                                     "epochs_per_round=15"])
    rows = [{"task_id": task.task_id, "cands": [c["id"] for c in task.candidates], "label": 0,
             "sims": [0.5 + g for g in row[:3]], "none_sim": 0.5} for row in gains]
    retriever_stage(cfg, [task], rows, None, tmp_path, 1)
    assert Retriever.load(tmp_path / "model").rank(task)[0] == "a.py:1"
    with pytest.raises(Exception, match="set label_metric=es"):
        load_rlcoder_config(None, ["label_metric=loss", "retriever_objective=gain"])
    with pytest.raises(Exception, match="set label_temperature=0"):
        load_rlcoder_config(None, ["label_metric=es", "retriever_objective=gain", "label_temperature=0.05"])


def test_retriever_trained_on_its_features_alone_keeps_its_word_embeddings():
    """features_only: the definition feature is what the labels follow, and it is learnt; the words (the
    training projects' own) are not."""
    import torch

    r = Retriever.new(dim=8, buckets=256, seed=0)
    before = {name: p.detach().clone() for name, p in r.net.named_parameters()}
    examples = [(t, t.candidates, 1) for t in map(_toy_task, range(8))]  # the definition is always best
    train_retriever(r, examples, epochs=15, lr=0.05, features_only=True)
    moved = {name for name, p in r.net.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert "w" in moved and moved <= set(FEATURE_PARAMS)
    assert r.rank(_toy_task(99))[0] == "a.py:1"


def test_similarity_labels_come_from_the_lines_the_generator_writes(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + ["progress=false", "label_metric=es"])
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    tasks = load_tasks(run_dir / "round-0" / "tasks" / "retriever.jsonl")[:4]
    known: dict = {}
    info = label_stage(cfg, scorer, tasks, None, known, tmp_path, print)
    rows = read_jsonl(tmp_path / "labels.jsonl")
    assert info["lines_written"] == sum(len(r["cands"]) + 1 for r in rows)
    for t, row in zip(tasks, rows):
        cands = {c["id"]: c for c in t.candidates}
        lines = scorer.complete([scorer.builder.prompt(t, [cands[c]])[0] for c in row["cands"]], cfg.max_new_tokens)
        assert row["sims"] == pytest.approx([edit_similarity(line, t.first_line) for line in lines])
        none = scorer.complete([scorer.builder.prompt(t)[0]], cfg.max_new_tokens)[0]
        assert row["none_sim"] == pytest.approx(edit_similarity(none, t.first_line))
        assert row["label"] == label_by_similarity(row["sims"], row["none_sim"], row["losses"])
    # the next round reads the lines' similarities back instead of writing them again
    assert read_known(tmp_path / "scores.jsonl") == known
    calls = []
    scorer.complete = lambda prompts, n: calls.append(prompts) or []
    (tmp_path / "again").mkdir()
    again = label_stage(cfg, scorer, tasks, None, read_known(tmp_path / "scores.jsonl"), tmp_path / "again", print)
    assert calls == [] and again["lines_written"] == 0
    assert read_jsonl(tmp_path / "again" / "labels.jsonl") == read_jsonl(tmp_path / "labels.jsonl")


def test_sampled_lines_come_back_per_prompt_in_order_and_seeded(tiny_run):
    run_dir, _ = tiny_run
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    tasks = load_tasks(run_dir / "round-0" / "tasks" / "retriever.jsonl")[:5]
    prompts = [scorer.builder.prompt(t, t.candidates[:1])[0] for t in tasks]
    greedy = scorer.complete(prompts, 8)
    cold = sample_lines(scorer.model, scorer.builder, prompts, 3, temperature=1e-4, max_new_tokens=8)  # one batch
    assert cold == [[line] * 3 for line in greedy]  # near 0 temperature: each prompt's greedy line, in order
    hot = [sample_lines(scorer.model, scorer.builder, prompts, 4, temperature=2.0, max_new_tokens=8, seed=s)
           for s in (1, 1, 2)]
    assert hot[0] == hot[1] != hot[2] and all(len(lines) == 4 for lines in hot[0])


def test_sampled_line_labels_judge_each_candidate_by_its_mean_line(tiny_run, tmp_path):
    """label_samples N: a candidate's (and no block's) similarity is the mean over N sampled lines."""
    run_dir, _ = tiny_run
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + ["progress=false", "label_metric=es", "label_samples=3",
                                                      "label_sample_temperature=1.5"])
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    tasks = load_tasks(run_dir / "round-0" / "tasks" / "retriever.jsonl")[:3]
    label_stage(cfg, scorer, tasks, None, {}, tmp_path, print)
    for t, row in zip(tasks, read_jsonl(tmp_path / "labels.jsonl")):
        cands = [None] + [{c["id"]: c for c in t.candidates}[cid] for cid in row["cands"]]
        sampled = scorer.sample([scorer.builder.prompt(t, [c] if c else [])[0] for c in cands], 3, 1.5,
                                cfg.max_new_tokens, seed=zlib.crc32(f"{cfg.seed}:{t.task_id}".encode()))
        means = [sum(edit_similarity(x, t.first_line) for x in lines) / 3 for lines in sampled]
        assert [row["none_sim"], *row["sims"]] == pytest.approx(means)  # seeded per task: the same lines again
    with pytest.raises(Exception, match="set it, or label_samples=0"):
        load_rlcoder_config(None, ["label_metric=loss", "label_samples=2"])
    with pytest.raises(Exception, match="label_sample_temperature must be positive"):
        load_rlcoder_config(None, ["label_metric=es", "label_samples=2", "label_sample_temperature=0"])


def test_the_loop_writes_each_candidates_line_once_across_rounds(tiny_repos, tmp_path):
    """label_metric es through `run_rlcoder`: round 2 writes lines only for the candidates round 1 did not have."""
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + [f"repos={tiny_repos}", f"runs_dir={tmp_path}", "progress=false",
                                                      "label_metric=es", "rounds=2"])
    run_rlcoder(cfg)
    first, second = (read_jsonl(cfg.run_dir / f"round-{k}" / "label" / "labels.jsonl") for k in (1, 2))
    new = sum(len(set(b["cands"]) - set(a["cands"])) for a, b in zip(first, second))
    written = [r["lines_written"] for r in read_jsonl(cfg.run_dir / "metrics.jsonl") if r["stage"] == "retriever"]
    assert written == [sum(len(r["cands"]) + 1 for r in first), new]
    known = read_known(cfg.run_dir / "round-2" / "label" / "scores.jsonl")
    for row in second:  # the labels read the cache: round 1's lines for the candidates both rounds have
        assert row["sims"] == [known[row["task_id"]]["sims"][c] for c in row["cands"]]


def test_token_weights_favour_the_first_token_and_identifiers(tiny_run):
    run_dir, _ = tiny_run
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    ids = scorer.builder.ids("    x = (y)\n")
    w = token_weights(scorer.builder.tok, ids)
    pieces = scorer.builder.tok.convert_ids_to_tokens(ids)
    assert w[0] >= 2.0
    for piece, weight in list(zip(pieces, w))[1:]:
        # byte-level pieces spell a space as "Ġ": only ASCII letters, digits and "_" make an identifier
        assert weight == (2.0 if any(ch.isascii() and (ch.isalnum() or ch == "_") for ch in piece) else 1.0), piece


def test_labels_match_the_generators_own_losses_and_reuse_scores(tiny_run, tmp_path):
    """label_stage on real tasks with the real tiny generator: each label is label_of of target_losses."""
    run_dir, _ = tiny_run
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + ["progress=false", "stop_margin=0.0"])
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    tasks = [Task.from_dict(json.loads(line)) for line in
             (run_dir / "round-0" / "tasks" / "retriever.jsonl").read_text().splitlines()][:3]
    known: dict = {}
    (tmp_path / "a").mkdir()
    info = label_stage(cfg, scorer, tasks, None, known, tmp_path / "a", print)
    rows = [json.loads(x) for x in (tmp_path / "a" / "labels.jsonl").read_text().splitlines()]
    for t, row in zip(tasks, rows):
        assert row["cands"] == [c["id"] for c in t.candidates[: cfg.bm25_k]]
        direct = scorer.losses(t, [[]] + [[c] for c in t.candidates[: cfg.bm25_k]])
        assert row["none"] == pytest.approx(direct[0], abs=1e-5)
        assert row["losses"] == pytest.approx(direct[1:], abs=1e-5)
        assert row["label"] == label_of(direct[1:], direct[0])
    assert info["scored"] == sum(len(r["cands"]) + 1 for r in rows)
    (tmp_path / "b").mkdir()
    again = label_stage(cfg, scorer, tasks, None, known, tmp_path / "b", print)
    assert again["scored"] == 0  # every loss was known: nothing scored twice


# --------------------------------------------------------------------------- prompts
def test_prompt_shares_one_budget_and_cuts_at_line_boundaries(tiny_run, tiny_repos):
    run_dir, _ = tiny_run
    scorer = Scorer(run_dir / "round-0" / "generator" / "model")
    tok = scorer.builder.tok
    b = PromptBuilder(tok, budget=60, block_budget=30, target_tokens=8)
    task = make_tasks(repos_in(tiny_repos)[:1], per_repo=1, seed=0, preselect=3)[0]
    plain, n0 = b.prompt(task)
    with_blocks, n = b.prompt(task, task.candidates)
    assert n0 == 0 and 0 < n <= 30
    assert len(plain) <= 60 and len(with_blocks) <= 60
    text = tok.decode(with_blocks)
    assert text.startswith("# ") and f"# {task.path}\n" in text
    after_header = text.split(f"# {task.path}\n", 1)[1]
    assert task.context.endswith(after_header) and (after_header == "" or task.context[
        len(task.context) - len(after_header) - 1] == "\n")  # whole lines only
    assert len(with_blocks) - n < len(plain)  # the blocks cost context
    assert len(b.target(task)) <= 8


def test_an_overflowing_block_keeps_the_lines_that_match_the_context(tiny_run):
    """The window of a long block is around the line the context's end names, not the block's first lines;
    the budget goes to the last (most useful) block first."""
    run_dir, _ = tiny_run
    tok = Scorer(run_dir / "round-0" / "generator" / "model").builder.tok
    b = PromptBuilder(tok, budget=240, block_budget=80, target_tokens=8)
    filler = [f"    v{i} = {i}" for i in range(30)]
    text = "\n".join(filler[:24] + ["    frobnicate_widget(size)", "    return widget_total"] + filler[24:])
    block = {"id": "lib.py:0", "path": "lib.py", "text": text, "bm25": 1.0}
    task = Task("t", "r", "app.py", 3, "def f(size):\n    frobnicate_widget(size)\n", "    return widget_total\n")
    ids, n = b.prompt(task, [block])
    kept = tok.decode(ids[:n])
    assert 0 < n <= 80 and kept.startswith("# lib.py\n")
    assert "frobnicate_widget(size)\n    return widget_total\n" in kept and "v0 = 0" not in kept
    # with nothing to match, the block's first lines stay (a definition's signature comes first)
    plain = Task("t", "r", "app.py", 3, "x = 1\n", "y = 2\n")
    assert "v0 = 0" in tok.decode(b.prompt(plain, [block])[0])
    # two blocks: the last one (nearest the cursor) is kept whole-as-possible before the first gets room
    small = {"id": "lib.py:99", "path": "util.py", "text": "\n".join(filler), "bm25": 0.5}
    ids2, n2 = b.prompt(task, [small, block])
    assert tok.decode(ids2[:n2]).count("frobnicate_widget(size)") == 1 and n2 <= 80


# --------------------------------------------------------------------------- the retriever
def _toy_task(i: int) -> Task:
    cands = [{"id": f"a.py:{j}", "path": "a.py", "text": text, "bm25": 3.0 - j}
             for j, text in enumerate(["x = 1\ny = 2", f"def helper_{i}(v):\n    return v", "import os"])]
    return Task(f"t{i}", "r", "b.py", 5, f"a = 1\nresult = helper_{i}(3)\n", "z = 2\n", cands)


def test_retriever_starts_in_bm25_order_learns_labels_and_round_trips(tmp_path):
    r = Retriever.new(dim=8, buckets=256, seed=0)
    task = _toy_task(0)
    assert r.rank(task)[:3] == ["a.py:0", "a.py:1", "a.py:2"] and r.rank(task)[-1] == STOP
    examples = [(t, t.candidates, 1) for t in map(_toy_task, range(8))]  # the definition is always best
    losses = train_retriever(r, examples, epochs=15, lr=0.05)
    assert losses[-1] < losses[0]
    assert r.rank(_toy_task(99))[0] == "a.py:1"  # generalises to a name never seen (the def feature)
    assert [b["id"] for b in r.select(task, 1)] == ["a.py:1"]
    r.save(tmp_path / "ret")
    loaded = Retriever.load(tmp_path / "ret")
    assert loaded.scores(task, task.candidates).tolist() == pytest.approx(r.scores(task, task.candidates).tolist())


def test_stop_block_learns_to_retrieve_nothing():
    r = Retriever.new(dim=8, buckets=256, seed=0)
    assert len(r.select(_toy_task(0), 2)) == 2  # stop starts last: never cuts
    examples = [(t, t.candidates, len(t.candidates)) for t in map(_toy_task, range(8))]  # stop is always best
    train_retriever(r, examples, epochs=15, lr=0.05)
    assert r.select(_toy_task(50), 2) == []
    assert len(r.select(_toy_task(50), 2, use_stop=False)) == 2


def test_stop_bias_cuts_earlier_as_it_rises_and_travels_with_the_retriever(tmp_path):
    r = Retriever.new(dim=8, buckets=256, seed=0)
    task = _toy_task(0)
    scores = r.scores(task, task.candidates).tolist()
    gap = max(scores[:-1]) - scores[-1]  # the best block's lead over the stop block
    assert len(r.select(task, 3)) == 3 and len(r.select(task, 3, stop_bias=gap / 2)) == 3
    assert r.select(task, 3, stop_bias=gap + 0.01) == []  # stop now outranks every block
    counts = [len(r.select(task, 3, stop_bias=b)) for b in (0.0, gap * 0.9, gap + 1)]
    assert counts == sorted(counts, reverse=True) and counts[-1] == 0
    assert len(r.select(task, 3, use_stop=False, stop_bias=gap + 1)) == 3  # no stop: no cut at all
    r.settings["stop_bias"] = gap + 0.01  # what the loop's retriever stage saves
    r.save(tmp_path / "ret")
    assert Retriever.load(tmp_path / "ret").select(task, 3) == []


def test_copy_match_finds_the_context_last_line_in_a_block_that_continues_it():
    assert copy_match("a = 1\n    total = add(a, b)\n\n", "def f():\n    total = add(a, b)\n    return total") == 1.0
    assert copy_match("total = add(a, b)\n", "x = 2\ntotal = add(a, b)") < 0.5  # the copy has no next line
    assert 0.6 < copy_match("total = add(a, b)\n", "totals = add(a, c)\nreturn totals") < 1.0
    assert copy_match("\n\n", "a\nb") == 0.0 and copy_match("x\n", "") == 0.0


def _copy_task(i: int, near_copy: bool) -> Task:
    """BM25 ranks the last block last; it holds the context's last line and a line to copy after it, or
    (``near_copy`` False) the same two lines the other way round: the same words, nothing to copy."""
    line, after = f"value_{i} = compute_{i}(item)", f"return value_{i}"
    last = f"{line}\n{after}" if near_copy else f"{after}\n{line}"
    texts = ["import os\nimport sys", f"def other_{i}():\n    pass", last]
    cands = [{"id": f"a.py:{j}", "path": "a.py", "text": text, "bm25": 3.0 - j} for j, text in enumerate(texts)]
    return Task(f"c{i}", "r", "b.py", 5, f"item = 1\n{line}\n", f"{after}\n", cands)


def test_copy_rule_arm_takes_a_near_copy_or_nothing():
    """The baseline without learning: the best copy_match at least COPY_MATCH, whatever BM25's order."""
    assert [b["id"] for b in arm_blocks("copy_rule", _copy_task(0, True), None, None, top_k=2)] == ["a.py:2"]
    assert arm_blocks("copy_rule", _copy_task(0, False), None, None, top_k=2) == []  # same words, nothing to copy
    assert arm_blocks("copy_rule", Task("t", "r", "b.py", 1, "x = 1\n", "y\n", []), None, None, top_k=2) == []


def test_copy_features_let_the_retriever_take_the_near_copy_and_stop_without_one(tmp_path):
    """Only the copy features tell the two kinds of task apart (same words, same BM25 order): without them
    this fails (checked on 8 seeds: 0-2 of 10 right against 10 of 10)."""
    r = Retriever.new(dim=8, buckets=4096, copy_features=True, seed=0)
    assert r.rank(_copy_task(0, True)).index("a.py:2") < 2  # the prior lifts the near copy BM25 ranks last
    assert r.rank(_copy_task(0, False)).index("a.py:2") == 2
    examples = [(t, t.candidates, 2 if i % 2 == 0 else 3)  # the near copy is best, else stop
                for i, t in ((i, _copy_task(i, i % 2 == 0)) for i in range(32))]
    train_retriever(r, examples, epochs=10, lr=0.1)
    for i in range(100, 105):  # names never seen
        assert [b["id"] for b in r.select(_copy_task(i, True), 1)] == ["a.py:2"]
        assert r.select(_copy_task(i + 50, False), 1) == []
    r.save(tmp_path / "ret")  # the setting travels with the retriever
    assert [b["id"] for b in Retriever.load(tmp_path / "ret").select(_copy_task(200, True), 1)] == ["a.py:2"]


def test_a_retriever_started_as_the_copy_rule_picks_what_the_rule_picks_before_any_training():
    """init copy_rule: the near copy when there is one (BM25 ranks it last here), else the stop block cuts
    before any block; the config refuses it without the copy features it ranks by."""
    r = Retriever.new(dim=8, buckets=4096, copy_features=True, init="copy_rule", seed=0)
    for i in range(5):
        for near in (True, False):
            task = _copy_task(i, near)
            assert r.select(task, 2) == copy_rule(task) == ([task.candidates[2]] if near else [])
    plain = Retriever.new(dim=8, buckets=4096, copy_features=True, seed=0)
    assert len(plain.select(_copy_task(0, False), 2)) == 2  # started as BM25's order, stop never cuts
    with pytest.raises(ValueError, match="copy_features"):
        Retriever.new(init="copy_rule")
    with pytest.raises(Exception, match="set copy_features=true, or retriever_init=bm25"):
        load_rlcoder_config(None, ["retriever_init=copy_rule"])
    cfg = load_rlcoder_config(None, TINY_OVERRIDES + ["copy_features=true", "retriever_init=copy_rule"])
    assert round_retriever(cfg, None).settings["init"] == "copy_rule"


def test_round_one_labels_the_near_copies_the_copy_prior_raises():
    """RLCoder labels what its retriever retrieves: with copy_features the new retriever's picks join BM25's in
    round 1, so a near copy BM25 ranks low is labelled (and so learnable); without them BM25 alone picks."""
    task = _copy_task(0, True)
    plain = load_rlcoder_config(None, TINY_OVERRIDES)
    assert round_retriever(plain, None, labelling=True) is None
    assert not round_retriever(plain, None).settings["copy_features"]
    copy = load_rlcoder_config(None, TINY_OVERRIDES + ["copy_features=true"])
    first = round_retriever(copy, None, labelling=True)
    assert [c["id"] for c in _candidates_for_round(task, first, bm25_k=1, retrieve_k=1)] == ["a.py:0", "a.py:2"]
    assert [c["id"] for c in _candidates_for_round(task, None, bm25_k=1, retrieve_k=1)] == ["a.py:0"]


# --------------------------------------------------------------------------- the loop
def test_tiny_loop_reports_every_arm_and_the_gate(tiny_run):
    run_dir, result = tiny_run
    assert list(result["arms"]) == ["infile", "bm25", "copy_rule", "rlcoder", "rlcoder_no_stop", "oracle"]
    for arm in result["arms"].values():
        assert set(arm) == {"em", "es", "retrieved_tokens"} and 0 <= arm["em"] <= 100 and 0 <= arm["es"] <= 100
    assert result["arms"]["infile"]["retrieved_tokens"] == 0 and result["arms"]["bm25"]["retrieved_tokens"] > 0
    assert {"best", "none", "random", "tasks"} <= set(result["gate"]) and result["examples"] > 0
    assert result["gate"]["passes"] == (result["gate"]["best"] < result["gate"]["none"] - 0.1)
    assert result["gate"]["best"] <= result["gate"]["none"] + 1e-9 and result["gate"]["best"] <= result["gate"]["random"]
    assert set(result["targets"].values()) <= {"met", "missed"}
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["stage"] for r in rows] == ["gate", "retriever", "retriever", "evaluate"]
    assert (run_dir / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    model, retriever = run_artifacts(run_dir)
    assert (model / "config.json").is_file() and retriever == run_dir / "round-2" / "retriever" / "model"
    repos = json.loads((run_dir / "round-0" / "corpus" / "repos.json").read_text())
    flat = [p for ps in repos.values() for p in ps]
    assert len(flat) == len(set(flat)) == 6  # no repository in two splits


def test_copy_drills_score_only_the_repeat_of_real_lines():
    import random

    lines = [[10 + i, 100 + i, 1] for i in range(50)]  # token ids of 50 distinct code lines, 1 = newline
    drills = copy_drills(40, lines, random.Random(0))
    assert len(drills) == 40
    for ids, labels, n_target in drills:
        assert n_target == 0 and len(ids) == len(labels)
        scored = [i for i, y in enumerate(labels) if y != -100]
        span = len(scored) + 1  # the repeat is scored from its second token on, nothing before it
        assert scored == list(range(len(ids) - len(scored), len(ids)))
        assert ids[:span] == ids[-span:] and [labels[i] for i in scored] == ids[-span + 1:]
        assert 3 <= span <= 9 and span % 3 == 0 and ids[:span] in [sum(lines[k:k + span // 3], [])
                                                                   for k in range(50)]
    assert len({tuple(ids) for ids, _, _ in drills}) > 30  # drills differ
    with pytest.raises(ValueError, match="no Python file"):
        copy_drills(1, [], random.Random(0))


def test_drill_settings_are_checked_and_recorded(tiny_run):
    with pytest.raises(Exception, match="gen_p_drill must be in"):
        load_rlcoder_config(None, ["gen_p_drill=1.0"])
    with pytest.raises(Exception, match="gen_drill_steps must be"):
        load_rlcoder_config(None, ["gen_drill_steps=-1"])
    run_dir, _ = tiny_run
    info = json.loads((run_dir / "round-0" / "generator" / "model" / "generator_info.json").read_text())
    assert info["config"]["drill_steps"] == 4 and info["config"]["p_drill"] == 0.1
    assert info["drill_loss"] > 0  # the drill phase ran


def test_runs_show_prints_the_rlcoder_table(tiny_run):
    run_dir, _ = tiny_run
    done = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(run_dir)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "rlcoder_no_stop" in done.stdout and "plot:" in done.stdout


def test_complete_on_a_hand_made_repository(tiny_run, tmp_path, capsys):
    """`itercode complete` (the CLI's main, in process: a subprocess per call would reload torch)."""
    from codegen.app.cli import main
    from codegen.repo.tasks import file_task
    from tiny_repos import make_tiny_repos

    run_dir, _ = tiny_run
    repo = make_tiny_repos(tmp_path / "mine", n=1, seed=42)[0]
    app = (repo / "repo0" / "app.py").read_text().splitlines()
    base = ["complete", "--repo", str(repo), "--file", "repo0/app.py", "--line", str(len(app) - 1),
            "--run", str(run_dir), "--json"]
    for extra, retrieval in (([], "rlcoder"), (["--retriever", "bm25"], "bm25")):
        capsys.readouterr()
        assert main(base + extra) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["retrieval"] == retrieval and isinstance(out["completion"], str) and "\n" not in out["completion"]
        assert all(not b["id"].startswith("repo0/app.py:") for b in out["blocks"])  # other files only
    assert out["blocks"] and out["retrieved_tokens"] > 0
    capsys.readouterr()
    assert main(base + ["--retriever", "copy_rule"]) == 0  # the rule's block, or none
    out = json.loads(capsys.readouterr().out)
    task = file_task(str(repo), "repo0/app.py", len(app) - 1)
    assert out["retrieval"] == "copy_rule" and [b["id"] for b in out["blocks"]] == [b["id"] for b in copy_rule(task)]
    assert main(base[:5] + ["--line", "9999", "--run", str(run_dir)]) == 2
    assert "outside" in capsys.readouterr().err
    assert main(base[:5] + ["--line", "3", "--run", str(tmp_path / "no-run")]) == 2
    assert "pass --model DIR" in capsys.readouterr().err


# --------------------------------------------------------------------------- SIGKILL at each stage
KILLER = """
import os, signal, sys
import loops.rlcoder as L
target = os.environ["RLCODER_KILL_IN"]
real = getattr(L, target)
def killed(*a, **k):
    real(*a, **k)  # the stage's work is done and written, but the run has not recorded it
    os.kill(os.getpid(), signal.SIGKILL)
setattr(L, target, killed)
from loops.rlcoder_config import load_rlcoder_config
L.run_rlcoder(load_rlcoder_config(None, sys.argv[1:]))
"""
STAGES = {"corpus_stage": "round-0/corpus", "tasks_stage": "round-0/tasks", "train_generator": "round-0/generator",
          "gate_stage": "round-0/gate", "label_stage": "round-1/label", "retriever_stage": "round-1/retriever",
          "evaluate_stage": "round-2/evaluate"}


@pytest.mark.slow
def test_loop_resumes_after_sigkill_at_each_stage(tiny_repos, tmp_path):
    overrides = TINY_OVERRIDES + [f"repos={tiny_repos}", f"runs_dir={tmp_path}", "name=k", "progress=true"]
    root = tmp_path / "k"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}

    def state() -> dict:
        return json.loads((root / "state.json").read_text())

    for fn, key in STAGES.items():
        before = {k: v for k, v in (state()["stages"].items() if root.exists() else []) if v["status"] == "done"}
        done = subprocess.run([sys.executable, "-c", KILLER, *overrides], cwd=REPO, capture_output=True, text=True,
                              env={**env, "RLCODER_KILL_IN": fn}, timeout=600)
        assert done.returncode == -signal.SIGKILL, done.stdout[-2000:] + done.stderr[-2000:]
        s = state()
        assert s["running"] == key and s["stages"][key]["status"] == "running", (fn, s)
        for k, v in before.items():
            assert s["stages"][k] == v, f"{k} was redone before the kill in {key}"
    done = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "rlcoder", *overrides], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    s = state()
    assert s["running"] is None and all(v["status"] == "done" for v in s["stages"].values())
    for key in STAGES.values():
        assert s["stages"][key]["attempts"] == 2, key
    assert json.loads((root / "round-2" / "evaluate" / "eval.json").read_text())["examples"] > 0
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp")]


def test_a_run_made_before_new_keys_existed_resumes(tiny_run, tmp_path):
    """A run whose config.yaml predates keys added since (at their defaults) resumes as it was; a key set away
    from its default is still a different config."""
    import yaml

    run_dir, result = tiny_run
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    saved = yaml.safe_load((old / "config.yaml").read_text())
    for key in ("copy_features", "label_temperature", "stop_bias", "retriever_init", "label_samples",
                "label_sample_temperature", "retriever_objective", "retriever_train"):
        del saved[key]
    (old / "config.yaml").write_text(yaml.safe_dump({**saved, "runs_dir": str(tmp_path), "name": "old"}))
    base = TINY_OVERRIDES + [f"repos={saved['repos']}", f"runs_dir={tmp_path}", "name=old", "progress=false"]
    assert run_rlcoder(load_rlcoder_config(None, base))["arms"] == result["arms"]  # every stage done already
    with pytest.raises(Exception, match="copy_features: False -> True"):
        run_rlcoder(load_rlcoder_config(None, base + ["copy_features=true"]))


def test_validation_trains_and_measures_on_retriever_projects_only(tiny_run):
    """benchmarks/rlcoder_validate.py: a fresh retriever on part of the retriever-training projects, every arm on
    the others; the run's evaluation projects are read by neither."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rlcoder_validate", REPO / "benchmarks" / "rlcoder_validate.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    run_dir, _ = tiny_run
    split = json.loads((run_dir / "round-0" / "corpus" / "repos.json").read_text())
    out = bench.validate(run_dir, ["rounds=1", "copy_features=true"], val_tasks=3, stop_biases=[0.0, 1000.0])
    train, val = set(out["train_projects"]), set(out["validation_projects"])
    assert train and val and not train & val
    assert train | val == {Path(r).name for r in split["retriever"]}
    assert not (train | val) & {Path(r).name for r in split["evaluation"]}
    assert set(out["arms"]) == {"infile", "bm25", "copy_rule", "rlcoder", "rlcoder_no_stop", "oracle"}
    assert out["examples"] > 0 and out["train_tasks"] > 0 and out["overrides"] == ["rounds=1", "copy_features=true"]
    sweep = out["stop_bias_sweep"]  # the same retriever: bias 0 is the rlcoder arm, a huge one is in-file only
    assert sweep["0.0"] == out["arms"]["rlcoder"]
    assert sweep["1000.0"]["retrieved_tokens"] == 0 and sweep["1000.0"]["es"] == out["arms"]["infile"]["es"]
    with pytest.raises(SystemExit, match="at least 2"):
        bench.split_for_validation(["repos/only-one"])


def test_compare_bootstraps_the_paired_difference(tiny_run, tmp_path, capsys):
    """benchmarks/rlcoder_compare.py: hand-built rows give the known verdicts; a real run's predictions are read."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rlcoder_compare", REPO / "benchmarks" / "rlcoder_compare.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = [{"target": "x = 1", "rlcoder": "x = 1" if i % 2 else "y = 2", "bm25": "y = 2"} for i in range(200)]
    out = bench.compare(rows, "rlcoder", "bm25", resamples=500)
    assert out["em"]["rlcoder"] == 50.0 and out["em"]["bm25"] == 0.0 and out["em"]["difference"] == 50.0
    assert out["em"]["verdict"] == "above" and 35 < out["em"]["ci95"][0] < 50 < out["em"]["ci95"][1] < 65
    assert (out["em"]["only_a"], out["em"]["only_b"]) == (100, 0)
    same = bench.compare(rows, "bm25", "bm25", resamples=500)
    assert same["es"]["ci95"] == [0.0, 0.0] and same["es"]["verdict"] == "no real difference"
    assert bench.compare(rows, "bm25", "rlcoder", resamples=500)["es"]["verdict"] == "below"

    run_dir, result = tiny_run
    assert bench.main([str(run_dir), "--json", "--resamples", "200"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["examples"] == result["examples"]
    assert got["em"]["rlcoder"] == result["arms"]["rlcoder"]["em"] and got["es"]["bm25"] == result["arms"]["bm25"]["es"]
    (tmp_path / "empty").mkdir()
    assert bench.main([str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err
    with pytest.raises(bench.UserError, match="before the arm"):  # a run evaluated before an arm existed
        old = tmp_path / "old"
        shutil.copytree(run_dir, old)
        pred = next(old.glob("round-*/evaluate/predictions.jsonl"))
        pred.write_text("".join(json.dumps({k: v for k, v in r.items() if not k.startswith("copy_rule")}) + "\n"
                                for r in read_jsonl(pred)))
        bench.predictions(str(old), ("copy_rule", "bm25"))


@pytest.mark.slow
def test_benchmark_json_on_unseen_eval_repos(tiny_repos, tmp_path):
    """benchmarks/rlcoder.py --tiny --json --eval-repos DIR: the issue's JSON, on repositories never trained on."""
    from tiny_repos import make_tiny_repos

    def bench(eval_repos: Path) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "benchmarks/rlcoder.py", "--tiny", "--json", "--repos", str(tiny_repos),
                               "--eval-repos", str(eval_repos), f"runs_dir={tmp_path / 'runs'}", "progress=false"],
                              cwd=REPO, capture_output=True, text=True, timeout=900,
                              env={**os.environ, "PYTHONPATH": str(REPO)})

    unseen = tmp_path / "unseen"
    make_tiny_repos(unseen, n=2, seed=7)
    done = bench(unseen)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert set(out["arms"]) == {"infile", "bm25", "copy_rule", "rlcoder", "rlcoder_no_stop", "oracle"}
    assert all(set(a) == {"em", "es", "retrieved_tokens"} for a in out["arms"].values())
    assert out["examples"] > 0 and {"best", "none", "random"} <= set(out["gate"])
    assert [Path(p).name for p in out["eval_repos"]] == ["repo0", "repo1"] and Path(out["eval_repos"][0]).parent == unseen
    assert out["loop_seconds"] > 0 and out["loop_within_45_min"] in ("met", "missed")

    # a training repository under another name is refused, with a message rather than a traceback
    shutil.copytree(tiny_repos / "repo2", tmp_path / "seen" / "renamed")
    refused = bench(tmp_path / "seen")
    assert refused.returncode == 2 and "error: evaluation repository 'renamed' shares" in refused.stderr, refused.stderr
