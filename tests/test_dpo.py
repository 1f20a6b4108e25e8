"""Iterative DPO (loops.dpo): pair building, the config, TRL's real DPOTrainer, a real 1-round loop, SIGKILL resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.errors import UserError
from codegen.io import TMP_PREFIX
from codegen.problems import Problem
from codegen.samples import Sample
from loops.dpo import pairs_report, preference_pairs
from loops.dpo_config import DPOConfig, load_dpo_config
from test_loop import problem_files, quick_overrides  # noqa: F401  (problem_files is a fixture)

from conftest import slow_unlabeled_copy
from runstate import finished_stages, kill_inside_stages, resume_to_the_end

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ pairs (pure logic)
def _problem(tid: str) -> Problem:
    prompt = f"def f(x):\n    \"\"\"{tid}\"\"\"\n"
    return Problem(task_id=tid, prompt=prompt, code_prefix=prompt, tests="def check(c): pass", entry_point="f")


def _judged(rows: list[tuple[str, str, str, float | None]]) -> tuple[list[Sample], list[dict]]:
    """(sample_id, completion, status, mean_logprob) -> samples and their verdicts."""
    samples = [Sample(sid.split("#")[0], text, sample_id=sid, mean_logprob=lp) for sid, text, _, lp in rows]
    results = [{"sample_id": sid, "task_id": sid.split("#")[0], "status": st, "passed": st == "passed"}
               for sid, _, st, _ in rows]
    return samples, results


def test_pairs_reject_the_failures_the_policy_was_most_confident_in_first():
    samples, results = _judged([
        ("a#0", "    return x + 1\n", "passed", -0.9),
        ("a#1", "    return x - 1\n", "failed", -0.8),
        ("a#2", "    return x * 2\n", "failed", -0.1),  # the surest mistake
        ("a#3", "    return -x\n", "failed", -0.5),
        ("a#4", "    return x // 0\n", "failed", None),  # no log-prob: ranks last
        ("a#5", "    return 0\n", "failed", -0.3),
    ])
    pairs = preference_pairs([_problem("a")], samples, results, pairs_per_problem=3, seed=0)
    assert [p["rejected_id"] for p in pairs] == ["a#2", "a#5", "a#3"]  # capped at 3, most confident first
    assert all(p["chosen_id"] == "a#0" and p["chosen"] == "    return x + 1\n" for p in pairs)  # one passing: reused
    assert pairs[0]["rejected_mean_logprob"] == -0.1 and pairs[0]["prompt"] == _problem("a").prompt
    everything = preference_pairs([_problem("a")], samples, results, pairs_per_problem=10, seed=0)
    assert [p["rejected_id"] for p in everything][-1] == "a#4" and len(everything) == 5


def test_pairs_dedupe_programs_skip_infra_errors_and_count_provoked_errors_as_failures():
    samples, results = _judged([
        ("a#0", "    return x + 1\n", "passed", -0.5),
        ("a#1", "    return x+1  # the same tree\n\n", "passed", -0.4),
        ("a#2", "    return 1 + x\n", "passed", -0.6),
        ("a#3", "    return [][x]\n", "error", -0.2),  # raised: the program's own failure
        ("a#4", "    return [] [x]  # same program, surer\n", "error", -0.1),
        ("a#5", "    while True: pass\n", "timeout", -0.3),
        ("a#6", "    return x * 3\n", "infra_error", -0.01),  # the host broke: no signal either way
        ("b#0", "    return x\n", "infra_error", -0.1),
        ("b#1", "    return x + 2\n", "passed", -0.2),
        ("c#0", "    return 2\n", "oom", -0.2),
        ("c#1", "    return 3\n", "failed", -0.3),  # c: no pass, no pair
        ("d#0", "    return x\n", "passed", -0.2),  # d: every sample passed, nothing to prefer over
        ("d#1", "    return x\n", "passed", -0.2),
    ])
    problems = [_problem(t) for t in "abcd"]
    pairs = preference_pairs(problems, samples, results, pairs_per_problem=10, seed=1)
    assert {p["task_id"] for p in pairs} == {"a"}
    # Two distinct passing programs (a#0 = a#1) and two distinct failing ones (a#3 = a#4: the surer one kept).
    assert len(pairs) == 2 and [p["rejected_id"] for p in pairs] == ["a#4", "a#5"]
    assert {p["rejected_status"] for p in pairs} == {"error", "timeout"}
    assert {p["chosen_id"] for p in pairs} <= {"a#0", "a#2"} and len({p["chosen_id"] for p in pairs}) == 2
    assert not any("a#6" in (p["chosen_id"], p["rejected_id"]) for p in pairs)
    report = pairs_report(problems, samples, results, pairs)
    assert report["pairs"] == 2 and report["pair_problems"] == 1 and report["learned_task_ids"] == ["a"]
    assert report["infra_errors_skipped"] == 2 and report["solved_problems"] == 3 and report["all_passed_problems"] == 2
    assert report["passing_programs"] == 2 + 1 + 1 and report["failing_programs"] == 2 + 2
    assert report["rejected_statuses"] == {"error": 1, "timeout": 1}
    # The passing order is a seeded choice: the same seed gives the same pairs.
    assert preference_pairs(problems, samples, results, pairs_per_problem=10, seed=1) == pairs


def test_a_program_that_both_passed_and_failed_is_never_rejected():
    samples, results = _judged([("a#0", "    return x\n", "passed", -0.5),
                                ("a#1", "    return x\n", "timeout", -0.1),  # flaky: same program, timed out once
                                ("a#2", "    return 0\n", "failed", -0.9)])
    pairs = preference_pairs([_problem("a")], samples, results, pairs_per_problem=4, seed=0)
    assert [(p["chosen_id"], p["rejected_id"]) for p in pairs] == [("a#0", "a#2")]


def test_pairs_come_only_from_the_problems_given():
    """A sample of any other task (say a validation problem that slipped into the samples) makes no pair."""
    samples, results = _judged([("a#0", "    return x\n", "passed", -0.5), ("a#1", "    return 0\n", "failed", -0.1),
                                ("v#0", "    return x\n", "passed", -0.5), ("v#1", "    return 0\n", "failed", -0.1)])
    pairs = preference_pairs([_problem("a")], samples, results, pairs_per_problem=4, seed=0)
    assert {p["task_id"] for p in pairs} == {"a"}


# ------------------------------------------------------------------ config
def test_dpo_config_extends_itertls_with_dpo_defaults():
    cfg = load_dpo_config(None, ["beta=0.3", "pairs_per_problem=2", "sft_weight=0.5", "learning_rate=1e-5"])
    assert isinstance(cfg, DPOConfig) and cfg.name == "dpo"
    assert (cfg.beta, cfg.pairs_per_problem, cfg.sft_weight, cfg.learning_rate) == (0.3, 2, 0.5, 1e-5)
    assert cfg.replay_share == 0.0 and cfg.validation == "synthetic:validation"
    assert cfg.test == ["synthetic:test-fresh", "synthetic:heldout"]
    assert load_dpo_config(None).to_dict() == DPOConfig().to_dict()


def test_dpo_yaml_is_valid():
    cfg = load_dpo_config(REPO / "configs" / "dpo.yaml")
    assert cfg.rounds == 3 and cfg.base_model == "starter" and cfg.name == "dpo"


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["beta=0"], "beta must be > 0"),
        (["beta=-0.1"], "beta must be > 0"),
        (["pairs_per_problem=0"], "pairs_per_problem must be >= 1"),
        (["sft_weight=-1"], "sft_weight must be >= 0"),
        (["replay_share=0.25"], "replay_share must be 0 in the DPO loop"),
        (["keep_per_problem=2"], "'keep_per_problem' is not used by the DPO loop"),
        (["n_samples=1"], "a pair needs a passing and a failing sample"),
        (["beta=lots"], "config key 'beta' must be of type float"),
        (["pairs_per_problem=1.5"], "config key 'pairs_per_problem' must be of type int"),
        (["betta=0.1"], "did you mean 'beta'"),
        (["beta"], "is not key=value"),
        (["train_steps=0"], "train_steps must be >= 1"),  # ITERTL's own rules still hold
        (["validation=synthetic:heldout"], "validation=synthetic:heldout is a test split"),
        (["unlabeled=synthetic:test-fresh"], "unlabeled=synthetic:test-fresh is a test split"),
        (["unlabeled=synthetic:validation"], "unlabeled=synthetic:validation is the validation split"),
        (["test=[synthetic:validation]"], "drop synthetic:validation from test"),
    ],
)
def test_dpo_config_errors_name_the_key_and_the_fix(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_dpo_config(None, overrides)
    assert fragment in str(e.value) and str(e.value).startswith("invalid DPO config")


def test_dpo_config_reports_every_mistake_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("bata: 0.1\nbeta: true\npairs_per_problem: 0\n")
    with pytest.raises(UserError) as e:
        load_dpo_config(path, ["sft_weight=-1"])
    msg = str(e.value)
    assert "unknown config key 'bata'" in msg and "config key 'beta' must be of type float, got True" in msg
    assert "pairs_per_problem must be >= 1" in msg and "sft_weight must be >= 0" in msg


def test_loop_dpo_cli_rejects_a_bad_config_with_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "dpo", "beta=0", "replay_share=0.5"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "beta must be > 0" in proc.stderr and "replay_share must be 0" in proc.stderr


# ------------------------------------------------------------------ TRL's DPOTrainer (real, a few steps)
def _pairs(n: int = 8) -> list[dict]:
    from codegen.synthetic import load_split

    return [{"prompt": p.prompt, "chosen": p.canonical_solution, "rejected": "    return None\n"}
            for p in load_split("reference")[:n]]


@pytest.mark.slow
def test_train_dpo_measures_the_policy_against_the_reference_it_is_given(tmp_path, starter_model):
    """Against its own parent, the first step's margin is 0 (policy = reference); against an older
    reference it is not. The SFT term is TRL's "sft" loss beside "sigmoid"; the model is saved whole."""
    from transformers import AutoModelForCausalLM

    from loops.trainers import train_dpo

    common = dict(steps=4, beta=0.1, learning_rate=1e-4, seed=0, batch_size=4)
    first = train_dpo(str(starter_model), _pairs(), tmp_path / "a", ref_model=str(starter_model),
                      scratch=tmp_path / "s1", sft_weight=0.5, **common)
    assert first["loss_type"] == ["sigmoid", "sft"] and first["beta"] == 0.1 and first["pairs"] == 8
    assert len(first["margins"]) == 4 and first["margins"][0] == 0.0
    assert first["final_margin"] > 0 and first["reward_accuracy"] > 0  # chosen pulled above rejected
    assert first["reward_margin"] == pytest.approx(sum(first["margins"]) / 4)
    second = train_dpo(str(tmp_path / "a"), _pairs(), tmp_path / "b", ref_model=str(starter_model),
                       scratch=tmp_path / "s2", **common)
    assert second["loss_type"] == ["sigmoid"]
    assert second["margins"][0] > 0  # the parent already prefers chosen more than the older reference did
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "b") is not None
    assert (tmp_path / "b" / "tokenizer.json").exists() and not (tmp_path / "s2").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir of atomic_dir left


def test_train_dpo_refuses_bad_arguments_before_anything_loads(tmp_path):
    from loops.trainers import train_dpo

    with pytest.raises(UserError) as e:
        train_dpo("no/model", [{"prompt": "p", "chosen": "c"}], tmp_path / "m", ref_model="no/model", steps=0,
                  beta=0, learning_rate=1e-5, seed=0, scratch=tmp_path / "s")
    msg = str(e.value)
    assert "steps must be at least 1" in msg and "beta must be > 0" in msg and "`rejected`" in msg


@pytest.mark.slow
def test_train_dpo_names_unknown_trl_fields(tmp_path, starter_model):
    from loops.trainers import train_dpo

    with pytest.raises(UserError, match="rpo_alpha are not fields of TRL's DPOConfig"):
        train_dpo(str(starter_model), _pairs(2), tmp_path / "m", ref_model=str(starter_model), steps=1, beta=0.1,
                  learning_rate=1e-5, seed=0, scratch=tmp_path / "s", trl_args={"rpo_alpha": 1.0})


# ------------------------------------------------------------------ real loops (subprocesses)
def dpo_overrides(runs_dir: Path, problem_files: Path, starter_model, **extra) -> list[str]:  # noqa: F811
    values = dict(train_steps=4, pairs_per_problem=3)
    values.update(extra)
    return [o for o in quick_overrides(runs_dir, problem_files, starter_model, **values)
            if not o.startswith("keep_per_problem=")]


def dpo_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "codegen.app.cli", "loop", "dpo", *overrides]


def _task_ids(path: Path) -> set[str]:
    return {json.loads(line)["task_id"] for line in path.read_text().splitlines()}


@pytest.mark.slow
def test_dpo_one_real_round(tmp_path, problem_files, starter_model):  # noqa: F811
    """The loop end to end (hf sampler, process sandbox, TRL DPO): pairs from the unlabeled problems only,
    the parent as the reference, metrics with margins, the table and the plot."""
    root = tmp_path / "runs" / "t"
    proc = subprocess.run(dpo_command(dpo_overrides(tmp_path / "runs", problem_files, starter_model)), cwd=REPO,
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    # No held-out, test, validation or reference problem ever enters a pair.
    pairs = [json.loads(line) for line in (root / "round-1" / "select" / "pairs.jsonl").read_text().splitlines()]
    assert pairs, "no pair was built: the train stage did no work"
    evaluation = set().union(*(_task_ids(problem_files / f"{s}.jsonl") for s in ("heldout", "validation", "reference")))
    assert {p["task_id"] for p in pairs} <= _task_ids(problem_files / "unlabeled.jsonl")
    assert not {p["task_id"] for p in pairs} & evaluation
    assert all(p["chosen"] != p["rejected"] for p in pairs)
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    for r in rows:  # one round: round 0 and the last round both score the test split
        assert 0 <= r["heldout_pass@1"] <= r["heldout_pass@2"] <= 1
        assert 0 <= r["validation_pass@1"] <= r["validation_pass@2"] <= 1
    assert rows[1]["pairs"] == len(pairs) and rows[1]["pair_problems"] == len({p["task_id"] for p in pairs})
    assert rows[1]["reward_margin"] is not None and 0 <= rows[1]["reward_accuracy"] <= 1 and rows[1]["train_loss"] > 0
    lineage = json.loads((root / "lineage.json").read_text())
    assert lineage[1]["reference"] == lineage[1]["parent"] == str(starter_model)
    from safetensors.torch import load_file

    parent = load_file(str(Path(starter_model) / "model.safetensors"))
    child = load_file(str(root / "round-1" / "train" / "model" / "model.safetensors"))
    assert any(not (parent[k] == child[k]).all() for k in parent)  # the checkpoint really moved
    assert (root / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    show = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert show.returncode == 0 and "preference pairs and DPO reward margins" in show.stdout
    assert "heldout pass@1" in show.stdout and "plot.png" in show.stdout


@pytest.mark.slow
def test_dpo_resumes_after_sigkill_without_redoing_finished_stages(tmp_path, problem_files, starter_model):  # noqa: F811
    """SIGKILL the real DPO loop inside five stages, one after another; the same command then finishes the
    run, and no stage that had finished is ever run again. (The select stage runs in milliseconds: it is
    caught finished, and the final resume must skip it.)"""
    # A slow execute stage and a verdict cache of its own: killable inside execute, whatever ran before.
    unlabeled = slow_unlabeled_copy(problem_files / "unlabeled.jsonl", tmp_path / "unlabeled.jsonl")
    overrides = dpo_overrides(tmp_path / "runs", problem_files, starter_model, test="[]", eval_reference="false",
                              unlabeled=str(unlabeled))
    root = tmp_path / "runs" / "t"
    targets = ["round-0/evaluate", "round-1/sample", "round-1/execute", "round-1/train", "round-1/evaluate"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ITERCODE_CACHE": str(tmp_path / "verdicts")}
    for kill in kill_inside_stages(dpo_command(overrides), root, targets, env):
        if kill.target == "round-1/train":
            assert not (root / kill.target / "model").exists()  # a checkpoint appears whole or not at all

    assert "round-1/select" in finished_stages(root)  # finished between the kills
    done, state = resume_to_the_end(dpo_command(overrides), root, env)
    assert "round 1 select: done already, skipped" in done.stdout
    for target in targets:  # killed once, finished on the next attempt
        assert state["stages"][target]["attempts"] == 2, target
    assert state["stages"]["round-1/select"]["info"]["pairs"] > 0, "no pair: the train stage did no work"
    assert state["stages"]["round-1/train"]["info"]["model"] == "model"
    assert not [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]  # no leftovers
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["pairs"] > 0
