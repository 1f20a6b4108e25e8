"""Rerankers: pairs from verdicts, real TRL training, loading, scoring, hard negatives, reports.

Logic tests use hand-made samples and verdicts; the training tests run TRL's
RewardTrainer for real on the session's tiny starter model, and the CLI test
runs the sandbox for real on synthetic problems.
"""
from __future__ import annotations

import json
import math
import re

import pytest

from codegen.decoding import best_index
from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from rerankers.baselines import mean_logprob_scores, random_scores
from rerankers.data import HeldOutLeakError, build_pairs, split_by_verdict
from rerankers.hard_negatives import mine_hard_negatives
from rerankers.report import format_report, rerank_report


# ---------------------------------------------------------------- helpers

def _problem(i: int, split: str = "reference", solution: str | None = None) -> Problem:
    return Problem(f"toy/{split}/{i}", f"def add{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n", "", f"add{i}",
                   canonical_solution=solution, meta={"split": split})


def _candidates(problem: Problem, verdicts: list[str], logprobs: list[float] | None = None):
    """Samples with distinct completions and result rows with the given statuses."""
    samples, results = [], []
    for j, status in enumerate(verdicts):
        sid = f"{problem.task_id}#{j}"
        lp = logprobs[j] if logprobs else None
        samples.append(Sample(problem.task_id, f"    return x + {j}  # {status}\n", sid, mean_logprob=lp))
        results.append({"task_id": problem.task_id, "sample_id": sid, "status": status, "passed": status == "passed"})
    return samples, results


class DictReranker:
    """A fake reranker for logic tests: scores by a lookup on the completion text."""

    def __init__(self, table):
        self.table = table

    def score(self, problem, candidates):
        return [self.table.get(c, 0.0) for c in candidates]

    def score_problems(self, items, progress=False):
        return [self.score(p, c) for p, c in items]


# ---------------------------------------------------------------- data.py

def test_pairs_mask_infra_errors_and_drop_duplicates():
    p = _problem(0)
    samples, results = _candidates(p, ["passed", "failed", "infra_error", "error"])
    samples.append(Sample(p.task_id, samples[1].completion, f"{p.task_id}#dup"))
    results.append({"task_id": p.task_id, "sample_id": f"{p.task_id}#dup", "status": "failed", "passed": False})
    groups = split_by_verdict(samples, results)
    passing, failing = groups[p.task_id]
    assert [s.sample_id for s in passing] == [f"{p.task_id}#0"]
    assert sorted(s.sample_id for s in failing) == [f"{p.task_id}#1", f"{p.task_id}#3"]  # no infra_error, no dup
    pairs = build_pairs([p], samples, results)
    assert len(pairs) == 2
    assert all(pr.chosen == samples[0].completion for pr in pairs)
    assert {pr.rejected_id for pr in pairs} == {f"{p.task_id}#1", f"{p.task_id}#3"}
    assert all(pr.prompt == p.prompt for pr in pairs)


def test_pairs_cap_per_problem_and_use_every_candidate_first():
    p = _problem(1)
    samples, results = _candidates(p, ["passed"] * 3 + ["failed"] * 5)
    pairs = build_pairs([p], samples, results, max_pairs_per_problem=5, seed=3)
    assert len(pairs) == 5
    assert len({pr.rejected_id for pr in pairs}) == 5  # every failing candidate appears
    assert len({pr.chosen_id for pr in pairs}) == 3  # every passing candidate appears
    assert len({(pr.chosen_id, pr.rejected_id) for pr in pairs}) == 5  # no pair twice
    full = build_pairs([p], samples, results, max_pairs_per_problem=100)
    assert len(full) == 15


def test_reference_solution_is_a_positive_when_no_sample_passed():
    p = _problem(2, solution="    return x + 2\n")
    samples, results = _candidates(p, ["failed", "failed"])
    pairs = build_pairs([p], samples, results)
    assert len(pairs) == 2 and all(pr.source == "reference" and pr.chosen == p.canonical_solution for pr in pairs)
    assert build_pairs([p], samples, results, use_references=False) == []


def test_pairs_refuse_heldout_problems_by_split_and_by_id():
    held = _problem(3, split="heldout")
    samples, results = _candidates(held, ["passed", "failed"])
    with pytest.raises(HeldOutLeakError, match="held-out"):
        build_pairs([held], samples, results)
    # A problem that lost its meta is still caught by its synthetic held-out id.
    bare = Problem("synthetic/heldout/7", "def f(x):\n", "", "f")
    samples, results = _candidates(bare, ["passed", "failed"])
    with pytest.raises(HeldOutLeakError, match="reference or unlabeled"):
        build_pairs([bare], samples, results)
    # And so is any id the caller forbids.
    p = _problem(3)
    samples, results = _candidates(p, ["passed", "failed"])
    with pytest.raises(HeldOutLeakError):
        build_pairs([p], samples, results, forbidden_task_ids={p.task_id})


def test_pairs_refuse_the_validation_and_fresh_test_splits_too():
    """Every evaluation split of the protocol: test-fresh (a test split) and validation (settings are chosen on it)."""
    for problem in (_problem(5, split="test-fresh"), _problem(6, split="validation"),
                    Problem("synthetic/test-fresh/s2-4", "def f(x):\n", "", "f"),
                    Problem("synthetic/validation/9", "def f(x):\n", "", "f")):
        samples, results = _candidates(problem, ["passed", "failed"])
        with pytest.raises(HeldOutLeakError, match="held-out"):
            build_pairs([problem], samples, results)


def test_results_that_do_not_match_the_samples_are_clear_errors():
    p = _problem(4)
    samples, results = _candidates(p, ["passed", "failed"])
    with pytest.raises(UserError, match="no result"):
        build_pairs([p], samples, results[:1])
    with pytest.raises(UserError, match="not among the given problems"):
        build_pairs([], samples, results)


# ---------------------------------------------------------------- report.py, baselines.py

def test_report_pickers_on_a_hand_made_case():
    p0, p1, p2 = _problem(0), _problem(1), _problem(2)
    s0, r0 = _candidates(p0, ["failed", "passed", "failed", "failed"], logprobs=[-0.1, -0.9, -0.5, -0.6])
    s1, r1 = _candidates(p1, ["passed", "failed", "failed", "failed"], logprobs=[-0.2, -0.1, -0.3, -0.4])
    s2, r2 = _candidates(p2, ["failed"] * 4, logprobs=[-0.1] * 4)
    scores = {p0.task_id: [0.0, 5.0, 1.0, 2.0], p1.task_id: [3.0, 1.0, 0.0, 0.0], p2.task_id: [1.0, 0.0, 0.0, 0.0]}
    rep = rerank_report([p0, p1, p2], s0 + s1 + s2, r0 + r1 + r2, scores=scores)
    assert rep["problems"] == 3 and rep["n_min"] == rep["n_max"] == 4
    assert rep["pass@1"] == pytest.approx((0.25 + 0.25 + 0) / 3)
    assert rep["reranked_pass@1"] == pytest.approx(2 / 3)
    assert rep["oracle_pass@n"] == pytest.approx(2 / 3)
    assert rep["mean_logprob_pick"] == pytest.approx(0.0)  # picks #0 of p0 and #1 of p1: both fail
    assert 0.0 <= rep["random_pick"] <= 2 / 3
    # The real Reranker interface works the same way as precomputed scores.
    table = {s.completion: sc for ss, t in ((s0, p0), (s1, p1), (s2, p2)) for s, sc in zip(ss, scores[t.task_id])}
    assert rerank_report([p0, p1, p2], s0 + s1 + s2, r0 + r1 + r2, DictReranker(table))["reranked_pass@1"] == rep["reranked_pass@1"]
    text = format_report({"round 1": rep})
    assert "reranked_pass@1" in text and "66.7%" in text


def test_baselines():
    p = _problem(0)
    assert random_scores(p, ["a", "b", "c"], seed=1) == random_scores(p, ["a", "b", "c"], seed=1)
    assert random_scores(p, ["a", "b", "c"], seed=1) != random_scores(p, ["a", "b", "c"], seed=2)
    assert mean_logprob_scores([Sample("t", "a", mean_logprob=-0.5), Sample("t", "b")]) == [-0.5, -math.inf]
    assert best_index([1.0, 3.0, 3.0, 2.0]) == 1  # the first of a tie wins


# ---------------------------------------------------------------- hard_negatives.py (logic)

def test_hard_negatives_are_the_failures_ranked_highest():
    p = _problem(5)
    samples, results = _candidates(p, ["passed", "passed", "failed", "failed", "failed"])
    text = [s.completion for s in samples]
    # The reranker likes failure #2 most and puts failure #4 below every passing candidate.
    fake = DictReranker({text[0]: 1.0, text[1]: 3.0, text[2]: 5.0, text[3]: 2.0, text[4]: -1.0})
    pairs = mine_hard_negatives(fake, [p], samples, results, negatives_per_problem=3, positives_per_negative=1)
    assert [(pr.chosen_id, pr.rejected_id) for pr in pairs] == [(f"{p.task_id}#0", f"{p.task_id}#2"),
                                                                (f"{p.task_id}#0", f"{p.task_id}#3")]
    assert all(pr.source == "hard_negative" for pr in pairs)
    held = _problem(6, split="heldout")
    hs, hr = _candidates(held, ["passed", "failed"])
    with pytest.raises(HeldOutLeakError):
        mine_hard_negatives(fake, [held], hs, hr)


# ---------------------------------------------------------------- real training (TRL RewardTrainer)

def _toy_pairs(count: int = 12, good=lambda i: "+"):
    """Problems answered with ``x + i``, ``x - i`` and ``x * i``; the one with operator ``good(i)`` passes."""
    problems, samples, results = [], [], []
    for i in range(count):
        p = _problem(i)
        problems.append(p)
        for j, op in enumerate("+-*"):
            sid, ok = f"{p.task_id}#{j}", op == good(i)
            samples.append(Sample(p.task_id, f"    return x {op} {i}\n", sid))
            results.append({"task_id": p.task_id, "sample_id": sid, "status": "passed" if ok else "failed",
                            "passed": ok})
    return problems, samples, results


@pytest.mark.slow
def test_reward_trainer_learns_to_rank_passing_candidates_first(starter_model, tmp_path):
    from rerankers.model import Reranker
    from rerankers.train import TrainConfig, train_reranker

    problems, samples, results = _toy_pairs()
    pairs = build_pairs(problems, samples, results)
    out = tmp_path / "rr"
    result = train_reranker(pairs, str(starter_model), out,
                            TrainConfig(epochs=6, min_steps=0, learning_rate=2e-3, batch_size=8, progress=False))
    assert result.path == out and result.stats["pairs"] == len(pairs) == 24
    meta = json.loads((out / "reranker.json").read_text())
    losses = [row["loss"] for row in meta["logs"] if "loss" in row]
    assert losses[-1] < losses[0]  # the Bradley-Terry loss went down
    assert not list(tmp_path.glob(".rr.tmp-*"))  # nothing half-written left behind

    rr = Reranker.load(out, batch_size=5)  # a batch size that splits problems across batches
    scored = rr.score_problems([(p, [s.completion for s in samples if s.task_id == p.task_id]) for p in problems])
    right = sum(sc[0] > sc[1] and sc[0] > sc[2] for sc in scored)
    assert right >= 0.9 * len(problems), scored
    # Batched scoring equals one-at-a-time scoring.
    one = [rr.score(problems[0], [s.completion])[0] for s in samples[:3]]
    assert one == pytest.approx(scored[0], abs=1e-4)


@pytest.mark.slow
def test_hard_negative_round_retrains_from_base_on_all_pairs(starter_model, tmp_path):
    from rerankers.hard_negatives import train_rounds
    from rerankers.model import Reranker
    from rerankers.train import TrainConfig

    # Contradictory toy data: "+" passes on even problems, "-" on odd ones. Whichever operator round 1
    # leans to, it ranks a failure first somewhere, so round 2 has mistakes to learn from.
    problems, samples, results = _toy_pairs(6, good=lambda i: "+-"[i % 2])
    seen, expected_hard = [], []

    def after_round(rr):
        reranker = Reranker.load(rr.path)
        seen.append(reranker.meta)
        if rr.round == 1:  # what round 2 must add: round 1's own mistakes on the candidates
            expected_hard.extend(mine_hard_negatives(reranker, problems, samples, results, negatives_per_problem=2))

    rounds = train_rounds(problems, [(samples, results)], str(starter_model), tmp_path / "rr", rounds=2,
                          config=TrainConfig(epochs=1, min_steps=0, batch_size=8, progress=False),
                          negatives_per_problem=2, on_round=after_round)
    first, second = rounds
    assert first.hard_negative_pairs == 0 and first.pairs == 12
    assert expected_hard and second.hard_negative_pairs == len(expected_hard)
    assert second.pairs == 12 + len(expected_hard)  # retrained on all pairs, old and new
    assert seen[1]["warm_start"] is False and seen[1]["base"] == str(starter_model)
    assert rounds[-1].path == tmp_path / "rr" and (tmp_path / "rr" / "rounds" / "round-1").is_dir()
    assert not list(tmp_path.glob(".rr.rounds-*"))


def test_optimizer_steps_are_the_epochs_unless_too_few_pairs_make_fewer_than_min_steps():
    from rerankers.train import TrainConfig, optimizer_steps

    # 141 pairs in batches of 16 are 9 steps an epoch: 2 epochs would be 18 steps, the floor makes 100.
    assert optimizer_steps(TrainConfig(epochs=2, min_steps=100, batch_size=16), 141) == 100
    assert optimizer_steps(TrainConfig(epochs=2, min_steps=0, batch_size=16), 141) == 18
    # Enough pairs: the epochs decide (242 steps an epoch), as transformers counts a fractional epoch.
    assert optimizer_steps(TrainConfig(epochs=2, min_steps=100, batch_size=16), 3867) == 484
    assert optimizer_steps(TrainConfig(epochs=0.5, min_steps=0, batch_size=16), 3867) == 121
    with pytest.raises(UserError, match="--min-steps must be 0 or more"):
        TrainConfig(min_steps=-1).check()


@pytest.mark.slow
def test_few_pairs_train_for_min_steps_through_the_cli(starter_model, tmp_path, capsys):
    """The CLI's --min-steps reaches TRL: 12 pairs in batches of 8 make 2 steps an epoch, the floor 5."""
    from codegen.app.cli import main
    from codegen.io import write_jsonl_atomic

    problems, samples, results = _toy_pairs(6)
    write_jsonl_atomic(tmp_path / "problems.jsonl", [p.to_dict() for p in problems])
    write_jsonl_atomic(tmp_path / "s.jsonl", [s.to_dict() for s in samples])
    write_jsonl_atomic(tmp_path / "r.jsonl", results)
    out = tmp_path / "rr"
    code = main(["reranker", "train", "--problems", str(tmp_path / "problems.jsonl"), "--samples", str(tmp_path / "s.jsonl"),
                 "--results", str(tmp_path / "r.jsonl"), "--base", str(starter_model), "--out", str(out),
                 "--epochs", "1", "--batch-size", "8", "--min-steps", "5", "--feedback", "none"])
    assert code == 0
    meta = json.loads((out / "reranker.json").read_text())
    assert meta["stats"]["pairs"] == 12 and meta["stats"]["steps"] == 5 and meta["config"]["min_steps"] == 5
    assert "round 1: 12 pairs (0 hard negatives) on 6 problems, 5 steps," in capsys.readouterr().out


@pytest.mark.slow
def test_lora_training_saves_a_merged_loadable_reranker(starter_model, tmp_path):
    from rerankers.model import Reranker
    from rerankers.train import TrainConfig, train_reranker

    problems, samples, results = _toy_pairs(4)
    out = tmp_path / "rr-lora"
    train_reranker(build_pairs(problems, samples, results), str(starter_model), out,
                   TrainConfig(epochs=1, min_steps=0, batch_size=4, lora=True, lora_r=4, progress=False))
    assert not (out / "adapter_config.json").exists()  # adapters merged, a plain checkpoint
    rr = Reranker.load(out)
    assert rr.meta["config"]["lora"] is True
    assert not [n for n, _ in rr.model.named_parameters() if "lora" in n]
    scores = rr.score(problems[0], [s.completion for s in samples[:3]])
    assert len(scores) == 3 and all(math.isfinite(x) for x in scores)


def test_reranker_directories_that_do_not_load_get_a_clear_error(tmp_path, starter_model):
    from rerankers.model import Reranker, RerankerLoadError

    with pytest.raises(RerankerLoadError, match="does not exist.*itercode reranker train"):
        Reranker.load(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RerankerLoadError, match="not a reranker directory"):
        Reranker.load(tmp_path / "empty")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(RerankerLoadError, match="does not load as a reranker"):
        Reranker.load(broken)
    # A language model is not a reward model: it has no one-output head.
    with pytest.raises(RerankerLoadError, match="not a reward model"):
        Reranker.load(starter_model)
    assert issubclass(RerankerLoadError, UserError)  # the CLI prints it as one line, exit status 2


def test_cli_refuses_a_missing_reranker_before_any_work(tmp_path, capsys):
    from codegen.app.cli import main

    missing = str(tmp_path / "nope")
    assert main(["eval", "--problems", "humaneval", "--samples", str(tmp_path / "s.jsonl"), "--rerank", missing]) == 2
    assert f"reranker directory {missing} does not exist" in capsys.readouterr().err
    assert main(["reranker", "score", "--reranker", missing, "--problems", "humaneval",
                 "--samples", str(tmp_path / "s.jsonl")]) == 2
    assert "itercode reranker train --out DIR" in capsys.readouterr().err


# ---------------------------------------------------------------- the CLI end to end, real sandbox

def _synthetic_candidates(problems):
    """Per problem: the reference solution (passes), and two broken variants (fail)."""
    samples = []
    for p in problems:
        body = p.canonical_solution
        lines = body.rstrip("\n").split("\n")
        wrong_return = "\n".join(lines[:-1] + ["    return None"]) + "\n"
        skipped_step = "\n".join(lines[1:]) + "\n" if len(lines) > 1 else "    pass\n"
        for j, text in enumerate([body, wrong_return, skipped_step]):
            samples.append(Sample(p.task_id, text, f"{p.task_id}#{j}", mean_logprob=-0.1 * (3 - j)))
    return samples


@pytest.mark.slow
def test_cli_trains_two_rounds_scores_and_evals_with_rerank(starter_model, tmp_path, capsys):
    from codegen.app.cli import main
    from codegen.evaluate import evaluate_samples
    from codegen.io import read_jsonl, write_jsonl_atomic
    from codegen.synthetic import load_split

    train = load_split("reference")[:6]
    samples = _synthetic_candidates(train)
    results = evaluate_samples(train, samples, progress=False, cache=False)
    write_jsonl_atomic(tmp_path / "train.jsonl", [s.to_dict() for s in samples])
    write_jsonl_atomic(tmp_path / "train_results.jsonl", results)
    statuses = [r["status"] for r in results]
    assert statuses.count("passed") == 6 and statuses.count("infra_error") == 0  # the sandbox judged for real

    out = tmp_path / "rr"
    argv = ["reranker", "train", "--problems", "synthetic:reference", "--samples", str(tmp_path / "train.jsonl"),
            "--results", str(tmp_path / "train_results.jsonl"), "--base", str(starter_model), "--out", str(out),
            "--rounds", "2", "--warm-start", "--epochs", "1", "--min-steps", "0", "--batch-size", "8", "--lr", "1e-3"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "round 1:" in text and "round 2:" in text and f"reranker written to {out}" in text
    meta = json.loads((out / "reranker.json").read_text())
    assert meta["round"] == 2 and [h["round"] for h in meta["round_history"]] == [1, 2]
    if meta["hard_negative_pairs"]:  # round 2 continued from round 1 (or copied it when nothing was mined)
        assert meta["warm_start"] is True
    assert (out / "rounds" / "round-1" / "config.json").exists()
    assert set(meta["trained_task_ids"]) <= {p.task_id for p in train}

    # score: every sample gets a score and a rank; the report table is printed.
    scored = tmp_path / "scored.jsonl"
    assert main(["reranker", "score", "--reranker", str(out), "--problems", "synthetic:reference",
                 "--samples", str(tmp_path / "train.jsonl"), "--results", str(tmp_path / "train_results.jsonl"),
                 "--out", str(scored)]) == 0
    rows = read_jsonl(scored)
    assert len(rows) == 18 and all(isinstance(r["rerank_score"], float) for r in rows)
    assert sorted(r["rerank_rank"] for r in rows if r["task_id"] == train[0].task_id) == [0, 1, 2]
    printed = capsys.readouterr().out
    assert "reranked_pass@1" in printed and "oracle_pass@n" in printed

    # eval --rerank: pass@1 beside reranked pass@1, oracle, random and mean-logprob picks.
    assert main(["eval", "--problems", "synthetic:reference", "--samples", str(tmp_path / "train.jsonl"),
                 "--k", "1", "--rerank", str(out), "--out", str(tmp_path / "again.jsonl")]) == 0
    printed = capsys.readouterr().out
    for metric in ("reranked_pass@1", "oracle_pass@n", "random_pick", "mean_logprob_pick"):
        assert metric in printed
    assert re.search(r"oracle_pass@n\s+100.0%", printed)  # every problem has its reference among the candidates
    assert re.search(r"mean_logprob_pick\s+0.0%", printed)  # the broken variants were given the higher log-probs


@pytest.mark.slow
def test_the_reranker_never_trains_on_heldout_problems(starter_model, tmp_path, capsys):
    """Held-out candidates are refused in round 1 and in a hard-negative round, before any training."""
    from codegen.app.cli import main
    from codegen.io import write_jsonl_atomic
    from codegen.synthetic import load_split
    from rerankers.hard_negatives import train_rounds

    held = load_split("heldout")[:2]
    train = load_split("reference")[:2]
    rows, results = [], []
    for p in held + train:
        for j, ok in enumerate([True, False]):
            sid = f"{p.task_id}#{j}"
            rows.append({"task_id": p.task_id, "sample_id": sid, "completion": f"    return {j}\n"})
            results.append({"task_id": p.task_id, "sample_id": sid, "status": "passed" if ok else "failed",
                            "passed": ok})
    write_jsonl_atomic(tmp_path / "s.jsonl", rows)
    write_jsonl_atomic(tmp_path / "r.jsonl", results)
    out = tmp_path / "rr"
    code = main(["reranker", "train", "--problems", "synthetic:heldout,synthetic:reference",
                 "--samples", str(tmp_path / "s.jsonl"), "--results", str(tmp_path / "r.jsonl"),
                 "--base", str(starter_model), "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err
    assert "refusing to train a reranker on held-out problems" in err and held[0].task_id in err
    assert not out.exists()

    # Fresh candidates for a hard-negative round are checked the same way.
    from codegen.samples import samples_from_rows

    samples = samples_from_rows(rows)
    clean = [(s, r) for s, r in zip(samples, results) if s.task_id.startswith("synthetic/reference/")]
    with pytest.raises(HeldOutLeakError):
        train_rounds(train + held, [([s for s, _ in clean], [r for _, r in clean]), (samples, results)],
                     str(starter_model), out, rounds=2)
    assert not out.exists()



@pytest.mark.slow
def test_example_feedback_teaches_what_the_code_alone_hides(feedback_reranker):
    from rerankers.model import Reranker

    path, unseen = feedback_reranker
    rr = Reranker.load(path)
    assert rr.feedback == "examples" and rr.meta["feedback"] == "examples"
    try:
        scores = rr.score_problems([(p, [right, wrong]) for p, right, wrong in unseen])
    finally:
        rr.close()
    # Problems it never saw, candidates one constant apart: the one whose example passed ranks first.
    assert sum(right > wrong for right, wrong in scores) >= 9, scores
