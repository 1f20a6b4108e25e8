"""Rerankers: pairs from verdicts, real TRL training, loading, scoring, hard negatives, reports.

Logic tests use hand-made samples and verdicts; the training tests run TRL's
RewardTrainer for real on the session's tiny starter model, and the CLI test
runs the sandbox for real on synthetic problems.
"""
from __future__ import annotations

import json
import math

import pytest

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from rerankers.baselines import mean_logprob_scores, random_scores
from rerankers.data import HeldOutLeakError, build_pairs, split_by_verdict
from rerankers.hard_negatives import mine_hard_negatives
from rerankers.report import format_report, rerank_report, top_index


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
    assert top_index([1.0, 3.0, 3.0, 2.0]) == 1  # the first of a tie wins


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
