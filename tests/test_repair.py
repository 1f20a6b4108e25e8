"""Repair examples (ITERTL's repair_share): failing attempt + feedback -> passing solution,
in iterative decoding's own format, from training problems only."""
from __future__ import annotations

import dataclasses

import pytest

from codegen.errors import UserError
from codegen.io import read_jsonl
from codegen.judging import Judge
from codegen.samples import Sample
from loops.config import ITERTLConfig, load_config
from loops.repair import repair_count, repair_rows


def _round(problems):
    """A round's samples and verdicts: per problem the reference solution (passing) and two broken copies."""
    samples, results = [], []
    for p in problems:
        bad_value = p.canonical_solution.replace("return ", "return 1 + ", 1)
        for i, (text, ok) in enumerate(((p.canonical_solution, True), (bad_value, False), ("    return (\n", False))):
            sid = f"{p.task_id}#{i}"
            samples.append(Sample(p.task_id, text, sample_id=sid))
            results.append({"sample_id": sid, "task_id": p.task_id, "status": "passed" if ok else "failed", "passed": ok})
    return samples, results


@pytest.fixture(scope="module")
def training_problems():
    from codegen.synthetic import load_split

    # reference problems stand in for a round's unlabeled ones (they have solutions to play the passing samples)
    return [p for p in load_split("reference") if "sum(xs)" in (p.canonical_solution or "")][:4]


@pytest.fixture(scope="module")
def judge():
    with Judge(workers=2) as j:
        yield j


def test_repair_rows_show_the_failing_attempts_feedback_and_target_a_passing_solution(training_problems, judge):
    samples, results = _round(training_problems)
    # The last problem has no passing sample this round: it cannot give a repair row.
    last = training_problems[-1].task_id
    results = [dict(r, status="failed", passed=False) if r["task_id"] == last else r for r in results]
    rows = repair_rows(training_problems, samples, results, n=10, seed=0, judge=judge)
    assert sorted(r["task_id"] for r in rows) == sorted(p.task_id for p in training_problems[:-1])
    by_id = {p.task_id: p for p in training_problems}
    for row in rows:
        p = by_id[row["task_id"]]
        assert row["source"] == "repair" and row["completion"] == p.canonical_solution
        assert row["prompt"].startswith(f"# Earlier attempts at {p.entry_point}, with what the checks said.\n")
        assert row["prompt"].endswith(p.prompt)
        assert "# Best so far (examples: 0/1 passed):" in row["prompt"] and " should be " in row["prompt"]
        assert "# Worst so far (examples: error):" in row["prompt"]
    assert len(repair_rows(training_problems, samples, results, n=2, seed=0, judge=judge)) == 2


def test_a_problem_no_sample_solved_is_repaired_to_its_reference_solution_when_one_is_given(training_problems,
                                                                                             judge):
    samples, results = _round(training_problems)
    last = training_problems[-1].task_id
    results = [dict(r, status="failed", passed=False) if r["task_id"] == last else r for r in results]
    solutions = {p.task_id: "    return 42\n" for p in training_problems}
    rows = {r["task_id"]: r for r in repair_rows(training_problems, samples, results, n=10, seed=0, judge=judge,
                                                  solutions=solutions)}
    assert set(rows) == {p.task_id for p in training_problems}
    # Nothing passed: the given solution is the target.
    assert rows[last]["completion"] == "    return 42\n" and rows[last]["sample_id"] is None
    assert "# Worst so far (examples: error):" in rows[last]["prompt"]
    # A passing sample stays the target where there is one (the model's own program, not the reference).
    for p in training_problems[:-1]:
        assert rows[p.task_id]["completion"] == p.canonical_solution and rows[p.task_id]["sample_id"] == f"{p.task_id}#0"


def test_select_stage_takes_repair_rows_but_no_kept_programs_from_repair_reference_problems(training_problems,
                                                                                           tmp_path):
    from loops.itertl import select_stage

    samples, results = _round(training_problems)
    unlabeled, reference = training_problems[:2], training_problems[2:]
    # The reference problems' passing samples are dropped: their reference solutions are the targets.
    ref_ids = {p.task_id for p in reference}
    samples = [s for s in samples if not (s.task_id in ref_ids and s.sample_id.endswith("#0"))]
    # ...and each written twice more: their diversity is not the round's (that of its unlabeled problems)
    samples += [Sample(p.task_id, "    return (\n", sample_id=f"{p.task_id}#{i}") for p in reference for i in (3, 4)]
    results += [{"sample_id": f"{p.task_id}#{i}", "task_id": p.task_id, "status": "failed", "passed": False}
                for p in reference for i in (3, 4)]
    cfg = ITERTLConfig(keep_per_problem=1, replay_share=0.0, repair_share=0.8, repair_reference=2)
    info = select_stage(unlabeled, samples, results, [], cfg, tmp_path, 1, repair_reference=reference)
    rows = read_jsonl(tmp_path / "train.jsonl")
    assert {r["task_id"] for r in rows if r["source"] == "self"} == {p.task_id for p in unlabeled}
    repair = [r for r in rows if r["source"] == "repair"]
    assert {r["task_id"] for r in repair} == {p.task_id for p in training_problems}
    assert info["repair"] == 4 and info["repair_from_reference"] == 2
    assert info["sample_diversity"] == 1.0  # 3 distinct of 3 per unlabeled problem; the reference ones not counted
    own = [r for r in results if r["task_id"] in {p.task_id for p in unlabeled}]
    assert info["sampled_pass_rate"] == sum(r["passed"] for r in own) / len(own) != sum(r["passed"] for r in results) / len(results)
    assert all(r["completion"] == p.canonical_solution for p in reference for r in repair if r["task_id"] == p.task_id)


def test_repair_reference_needs_a_repair_share():
    with pytest.raises(UserError, match="repair_reference=100 .* set repair_share"):
        load_config(None, ["repair_reference=100"])
    assert load_config(None, ["repair_reference=100", "repair_share=0.2"]).repair_reference == 100


def test_repair_rows_never_use_evaluation_problems(training_problems, judge):
    from codegen.synthetic import load_split

    for split in ("validation", "test-fresh", "heldout"):
        held_out = load_split(split)[:1]
        samples, results = _round([dataclasses.replace(held_out[0], canonical_solution="    return 0\n")])
        with pytest.raises(UserError, match="evaluation problem"):
            repair_rows(training_problems + held_out, samples, results, n=5, seed=0, judge=judge)
    # A problems file's rows say their split in meta even under another task id.
    disguised = dataclasses.replace(training_problems[0], task_id="mine/0", meta={"split": "validation"})
    with pytest.raises(UserError, match="evaluation problem"):
        repair_rows([disguised], [], [], n=5, seed=0, judge=judge)


def test_select_stage_mixes_repair_rows_at_the_share_and_fits_them_to_max_length(training_problems, starter_model,
                                                                                tmp_path):
    from loops.itertl import select_stage

    samples, results = _round(training_problems)
    cfg = ITERTLConfig(keep_per_problem=1, replay_share=0.0, repair_share=0.4, max_length=512)
    info = select_stage(training_problems, samples, results, [], cfg, tmp_path, 1, model=str(starter_model))
    rows = read_jsonl(tmp_path / "train.jsonl")
    repair = [r for r in rows if r["source"] == "repair"]
    assert info["kept"] == 4 and info["repair"] == len(repair) == repair_count(4, 0.4) == 3
    assert {r["task_id"] for r in repair} <= {p.task_id for p in training_problems}
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(starter_model))
    assert all(len(tok(r["prompt"] + r["completion"])["input_ids"]) < 512 for r in repair)
    off = select_stage(training_problems, samples, results, [], ITERTLConfig(keep_per_problem=1, replay_share=0.0),
                       tmp_path / "off", 1)
    assert off["repair"] == 0


def test_repair_share_is_checked_with_replay_share():
    with pytest.raises(UserError, match="repair_share"):
        load_config(None, ["repair_share=0.5", "replay_share=0.5"])
    assert load_config(None, ["repair_share=0.2"]).repair_share == 0.2
