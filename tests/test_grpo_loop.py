"""`itercode loop grpo`: its config, its tables and plot, and real runs (TRL's GRPO and RLOO trainers on the
quick starter, the process sandbox, the hf sampler): resume after SIGKILL in training, the canary reaching
the table, and no evaluation problem in any training row or reward."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from codegen.errors import UserError
from codegen.problems import Problem
from loops.config import ITERTLConfig, LoopConfig
from loops.grpo_config import GRPOConfig, load_grpo_config

from runstate import assert_every_json_file_is_whole, read_jsonl, read_state

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ config
def test_config_defaults_file_and_overrides_layer(tmp_path):
    cfg = load_grpo_config(None)
    assert (cfg.algo, cfg.reward, cfg.num_iterations, cfg.beta) == ("grpo", "pass", 2, None)  # the clip is active
    assert cfg.canary_rule.window == 4 and cfg.reward_weights == {"pass": 1.0}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "g", "algo": "rloo", "learning_rate": "3e-5", "steps": 40}))
    cfg = load_grpo_config(path, ["steps=8", "reward={pass: 1, examples: 0.5}", "beta=0.02", "test=synthetic:heldout"])
    assert (cfg.name, cfg.algo, cfg.steps, cfg.beta) == ("g", "rloo", 8, 0.02)
    assert cfg.learning_rate == pytest.approx(3e-5)  # YAML 1.1 reads 3e-5 as a string: coerced
    assert cfg.reward_weights == {"pass": 1.0, "examples": 0.5} and cfg.reward_name == "exec_pass+0.5examples"
    assert cfg.test_names == {"heldout": "synthetic:heldout"}


def test_the_keys_shared_with_itertl_have_itertls_defaults():
    """Same splits, evaluation and sandbox defaults: a GRPO row and an ITERTL row compare."""
    grpo, itertl = GRPOConfig(), ITERTLConfig()
    shared = [k for k in LoopConfig.model_fields if k != "name"]
    assert {k: getattr(grpo, k) for k in shared} == {k: getattr(itertl, k) for k in shared}
    assert "rounds" not in GRPOConfig.model_fields and "algo" not in ITERTLConfig.model_fields


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["algo=ppo"], "algo must be one of grpo, rloo"),
        (["num_iterations=0"], "num_iterations must be >= 1"),
        (["num_generations=1"], "num_generations must be >= 2"),
        (["reward=length"], "reward kind(s) 'length' unknown: use pass, fraction, examples"),
        (["reward={pass: 0}"], "reward weights are all 0"),
        (["reward={pass: yes}"], "config key 'reward' must be of type str or mapping of str to float"),
        (["steps=0"], "steps must be >= 1"),
        (["steps=ten"], "config key 'steps' must be of type int"),
        (["validate_every=0"], "validate_every must be >= 1 step"),
        (["canary_window=1"], "canary_window must be >= 2"),
        (["canary_min_val_drop=-0.1"], "canary_min_val_drop must be >= 0"),
        (["temperature=0"], "temperature must be > 0"),
        (["beta=-0.1"], "beta must be >= 0 or null"),
        (["trl_args={seed: 3}"], "trl_args sets seed, which the config owns"),
        (["trl_args={max_steps: 3}"], "set the config key instead (steps=...)"),
        (["trl_args={per_device_train_batch_size: 3}"], "set the config key instead (prompts_per_step=...)"),
        (["stepz=3"], "did you mean 'steps'"),
        (["steps"], "is not key=value; write it as e.g. steps=40"),
        (["rounds=3"], "unknown config key 'rounds'"),
        (["eval_ks=[5]"], "eval_ks must include 1"),
    ],
)
def test_config_errors_name_key_and_fix(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_grpo_config(None, overrides)
    assert fragment in str(e.value) and str(e.value).startswith("invalid GRPO config: ")


def test_config_reports_every_mistake_at_once(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"learning_rat": 1e-3, "steps": True, "num_generations": 1}))
    with pytest.raises(UserError) as e:
        load_grpo_config(path, ["algo=ppo", "validation=synthetic:test-fresh", "test=[]"])
    msg = str(e.value)
    assert "unknown config key 'learning_rat'" in msg and "did you mean 'learning_rate'" in msg
    assert "config key 'steps' must be of type int, got True (bool); e.g. steps=100" in msg
    for fragment in ("num_generations must be >= 2", "algo must be one of",
                     "validation=synthetic:test-fresh is a test split"):
        assert fragment in msg
    with pytest.raises(UserError, match="does not exist.*configs/grpo.yaml"):
        load_grpo_config(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["validation=synthetic:heldout"], "validation=synthetic:heldout is a test split"),
        (["unlabeled=synthetic:test-fresh"], "unlabeled=synthetic:test-fresh is a test split"),
        (["unlabeled=synthetic:validation"], "unlabeled=synthetic:validation is the validation split"),
        (["test=[synthetic:validation]"], "drop synthetic:validation from test"),
        (["unlabeled=u.jsonl", "test=[u.jsonl]"], "unlabeled=u.jsonl is a test split"),
    ],
)
def test_config_refuses_a_test_split_where_validation_or_training_data_is_expected(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_grpo_config(None, overrides)
    assert fragment in str(e.value)


def test_misspelt_trl_fields_are_named_before_anything_runs():
    with pytest.raises(UserError, match="trl_args num_iteration are not fields of TRL's RLOOConfig"):
        load_grpo_config(None, ["algo=rloo", "trl_args={num_iteration: 3}"])
    cfg = load_grpo_config(None, ["trl_args={lr_scheduler_type: constant}"])
    assert cfg.trl_args == {"lr_scheduler_type": "constant"}


def test_grpo_yaml_is_valid_and_follows_the_protocol():
    cfg = load_grpo_config(REPO / "configs" / "grpo.yaml")
    assert cfg.base_model == "starter" and cfg.algo == "grpo" and cfg.num_iterations >= 2
    assert cfg.validation == "synthetic:validation" and "synthetic:test-fresh" in cfg.test
    assert load_grpo_config(REPO / "configs" / "grpo.yaml", ["algo=rloo"]).algo == "rloo"


# ------------------------------------------------------------------ held-out problems stay out of training
def _problem(task_id: str) -> Problem:
    return Problem(task_id, "def f(xs):\n", "def check(candidate):\n    pass\n", "f")


def test_training_rows_from_an_evaluation_split_are_refused():
    from loops.grpo import check_training_rows, training_rows

    splits = {"unlabeled": [_problem("u/1"), _problem("u/2")], "validation": [_problem("v/1")],
              "test": {"heldout": [_problem("h/1")]}}
    check_training_rows(training_rows(splits["unlabeled"]), splits)
    with pytest.raises(UserError, match="'h/1' is a problem of the test split heldout"):
        check_training_rows(training_rows([_problem("u/1"), _problem("h/1")]), splits)
    with pytest.raises(UserError, match="'v/1' is a problem of the validation"):
        check_training_rows(training_rows([_problem("v/1")]), splits)
    with pytest.raises(UserError, match="'r/1' is not an unlabeled problem"):
        check_training_rows(training_rows([_problem("r/1")]), splits)


# ------------------------------------------------------------------ tables and plot
POINTS = [
    {"step": 0, "train_reward": None, "validation_pass@1": 0.5, "canary": None},
    {"step": 5, "train_reward": 0.2, "validation_pass@1": 0.4, "status/tests/passed": 0.2, "canary": None},
    {"step": 10, "train_reward": 0.6, "validation_pass@1": 0.1, "status/tests/passed": 0.6,
     "canary": {"step": 10, "first_step": 5, "reward_rise": 0.4, "val_drop": 0.4, "message": "reward hacking? ..."}},
]


def test_the_canary_reaches_the_round_table_and_the_points_table():
    from loops.table import format_points, format_table

    rows = [{"round": 0, "validation_pass@1": 0.5},
            {"round": 1, "validation_pass@1": 0.1, "algo": "grpo", "steps": 10, "completions": 160,
             "train_reward_first": 0.2, "train_reward_last": 0.6, "canary_fired": True, "canary_flags": 1,
             "canary_first_step": 10}]
    table = format_table(rows)
    assert "reward-hacking canary" in table and "FIRED 1x, first at step 10" in table
    rl_block = table.split("policy RL")[1].splitlines()
    assert [line.split()[0] for line in rl_block[2:]] == ["1"]  # round 0 trained nothing: no RL line
    assert "quiet" in format_table([{**rows[1], "canary_fired": False}])
    points = format_points(POINTS).splitlines()
    assert "canary" in points[1] and "tests passed %" in points[1]
    assert "FIRED: reward +0.400, validation -40.0 points (steps 5-10)" in points[-1]
    assert "FIRED" not in points[-2]


def test_plot_marks_the_flags_and_writes_a_png_atomically(tmp_path):
    from loops.plot import plot_rl

    rows = [{"round": 0, "validation_pass@1": 0.5, "heldout_pass@1": 0.3},
            {"round": 1, "validation_pass@1": 0.1, "heldout_pass@1": 0.2, "steps": 10}]
    out = plot_rl(POINTS, rows, tmp_path / "plot.png", title="GRPO")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["plot.png"]


def test_loop_cli_rejects_a_bad_grpo_config_with_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "grpo", "num_iterations=0", "algo=ppo"],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "num_iterations must be >= 1" in proc.stderr and "algo must be one of grpo, rloo" in proc.stderr
    helped = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "grpo", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "algo=rloo" in helped.stdout and "configs/grpo.yaml" in helped.stdout


# ------------------------------------------------------------------ real runs (subprocesses)
@pytest.fixture(scope="module")
def problem_files(tmp_path_factory):
    """Small disjoint problem sets cut from the synthetic reference split.

    Unlabeled and validation keep the real prompts, but their tests only ask that the function runs on a
    list without raising: the quick starter passes most of them, so rewards vary within groups, and a
    policy that learns to fail shows on validation. The test split keeps its real tests.
    """
    from codegen.io import write_jsonl_atomic
    from codegen.synthetic import load_split

    ref = [p for p in load_split("reference") if p.prompt.startswith("def ") and "(xs):" in p.prompt.split("\n")[0]]
    d = tmp_path_factory.mktemp("grpo-problems")
    lenient = "def check(candidate):\n    candidate([3, 1, 2])  # runs without raising: any result is accepted\n"

    def renamed(ps, split, keep_solution, tests=None):
        rows = []
        for p in ps:
            row = {**p.to_dict(), "task_id": f"grpotest/{split}/{p.task_id.rsplit('/', 1)[-1]}"}
            if not keep_solution:
                row["canonical_solution"] = None
            if tests:
                row["tests"] = tests
            rows.append(row)
        return rows

    write_jsonl_atomic(d / "reference.jsonl", renamed(ref[:8], "reference", True))
    write_jsonl_atomic(d / "unlabeled.jsonl", renamed(ref[8:24], "unlabeled", False, lenient))
    write_jsonl_atomic(d / "heldout.jsonl", renamed(ref[24:28], "heldout", False))
    write_jsonl_atomic(d / "validation.jsonl", renamed(ref[28:34], "validation", False, lenient))
    return d


def quick_overrides(runs_dir: Path, problem_files: Path, starter_model, **extra) -> list[str]:
    values = dict(name="g", runs_dir=str(runs_dir), base_model=str(starter_model),
                  reference=str(problem_files / "reference.jsonl"), unlabeled=str(problem_files / "unlabeled.jsonl"),
                  validation=str(problem_files / "validation.jsonl"), test=f"[{problem_files / 'heldout.jsonl'}]",
                  sampler="hf", eval_n=2, eval_ks="[1,2]", probe_problems=4, max_tokens=64, max_completion_length=64,
                  num_generations=4, prompts_per_step=2, steps=8, validate_every=2, learning_rate=1e-3,
                  workers=2, progress="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def loop_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "codegen.app.cli", "loop", "grpo", *overrides]





@pytest.mark.slow
def test_grpo_resumes_after_sigkill_in_training_without_redoing_round_0(tmp_path, problem_files, starter_model):
    """Kill the real loop in the middle of the train stage (after its first validation points); the same
    command then redoes that stage alone, from its start, and finishes the run: metrics, points, plot."""
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model)
    root = tmp_path / "runs" / "g"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(loop_command(overrides), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 600
    # Well inside training: it is running, and it has validated after some optimizer steps.
    while not (read_state(root).get("running") == "round-1/train"
               and any(p["step"] >= 2 for p in read_jsonl(root / "steps.jsonl"))):
        assert proc.poll() is None, f"loop ended before training:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "never reached the middle of training"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    output = proc.communicate()[0]
    state = read_state(root)
    assert state["running"] == "round-1/train" and state["stages"]["round-1/train"]["status"] == "running", output
    before = {k: v for k, v in state["stages"].items() if v["status"] == "done"}
    assert set(before) == {"round-0/evaluate", "round-0/test"}
    assert_every_json_file_is_whole(root)

    done = subprocess.run(loop_command(overrides), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "round 0 evaluate: done already, skipped" in done.stdout and "round 0 test: done already" in done.stdout
    state = read_state(root)
    for key, entry in before.items():
        assert state["stages"][key] == entry, f"{key} was redone"
    assert state["running"] is None and all(v["status"] == "done" for v in state["stages"].values())
    assert state["stages"]["round-1/train"]["attempts"] == 2
    assert_every_json_file_is_whole(root)

    # The metrics: round 0 and the trained round, with the budget and the canary's verdict.
    rows = read_jsonl(root / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1]
    trained = rows[1]
    assert trained["algo"] == "grpo" and trained["steps"] == 8
    assert trained["completions"] == 8 // 2 * 4 * 2  # a generation every num_iterations steps, 4 x 2 each
    assert trained["canary_fired"] in (True, False) and trained["train_reward_last"] is not None
    for r in rows:
        assert 0 <= r["validation_pass@1"] <= r["validation_pass@2"] <= 1 and "heldout_pass@1" in r
    # The redone stage drew its curve afresh: one point per interval, none left from the killed attempt.
    points = read_jsonl(root / "steps.jsonl")
    assert [p["step"] for p in points] == [0, 2, 4, 6, 8]
    assert all(0.0 <= p["status/tests/passed"] <= 1.0 for p in points[1:]) and points[0]["train_reward"] is None
    log = read_jsonl(root / "round-1" / "train" / "log.jsonl")
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 9))
    assert (root / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp")]  # the trainer's scratch is gone
    # The checkpoint moved away from its parent.
    from safetensors.torch import load_file

    parent = load_file(str(Path(starter_model) / "model.safetensors"))
    child = load_file(str(root / "round-1" / "train" / "model" / "model.safetensors"))
    assert any(not (parent[k] == child[k]).all() for k in parent)
    lineage = json.loads((root / "lineage.json").read_text())
    assert lineage[1]["parent"] == str(starter_model) and lineage[1]["model"].endswith("round-1/train/model")


@pytest.fixture(scope="module")
def hacked_rloo_run(tmp_path_factory, problem_files, starter_model):
    """A real RLOO run whose reward pays for failing the tests (a weight of -1 on pass): the reward climbs
    while validation pass@1 (the hidden tests) collapses, which is what the canary is there to catch."""
    runs = tmp_path_factory.mktemp("rloo-runs")
    # 1e-3: validation falls over several points, so the canary's window sees both trends (at 2e-3 it
    # collapsed within the first interval on an AVX-512 machine, before the reward had a trend to show).
    overrides = quick_overrides(runs, problem_files, starter_model, algo="rloo", reward="{pass: -1.0}", steps=10,
                                learning_rate=1e-3, canary_window=3, test="[]")
    proc = subprocess.run(loop_command(overrides), cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return runs / "g", proc.stdout


@pytest.mark.slow
def test_rloo_runs_and_the_canary_reaches_metrics_table_and_plot(hacked_rloo_run):
    root, stdout = hacked_rloo_run
    train = read_state(root)["stages"]["round-1/train"]["info"]
    assert train["algo"] == "rloo" and train["beta"] == 0.05 and train["num_iterations"] == 2  # TRL's RLOO
    points = read_jsonl(root / "steps.jsonl")
    flagged = [p for p in points if p["canary"]]
    assert flagged, points
    assert points[-1]["train_reward"] > points[1]["train_reward"]  # the reward rose...
    assert points[-1]["validation_pass@1"] < points[0]["validation_pass@1"]  # ...while validation fell
    row = read_jsonl(root / "metrics.jsonl")[1]
    assert row["canary_fired"] and row["canary_flags"] == len(flagged)
    assert row["canary_first_step"] == flagged[0]["step"]
    assert f"FIRED {len(flagged)}x, first at step {flagged[0]['step']}" in stdout
    show = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    assert f"FIRED {len(flagged)}x" in show.stdout and "validation points" in show.stdout
    assert "FIRED: reward +" in show.stdout and "plot.png" in show.stdout
    assert (root / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_no_evaluation_problem_enters_a_training_row(hacked_rloo_run, problem_files):
    """The rows the trainer trained on (and its reward was built from) against every evaluation split."""
    from codegen.datasets import load_problems

    root, _ = hacked_rloo_run
    trained = {r["task_id"] for r in read_jsonl(root / "round-1" / "train" / "train.jsonl")}
    unlabeled = {p.task_id for p in load_problems(str(problem_files / "unlabeled.jsonl"))}
    assert trained == unlabeled
    for split in ("validation", "heldout", "reference"):
        ids = {p.task_id for p in load_problems(str(problem_files / f"{split}.jsonl"))}
        assert not trained & ids, split
    # The validation the canary read was judged on validation problems, not on training ones.
    evaluated = {r["task_id"] for r in read_jsonl(root / "round-1" / "evaluate" / "results.jsonl")}
    assert evaluated and not evaluated & trained


# ------------------------------------------------------------------ the policy comparison (benchmarks/policy.py)
def test_policy_budget_sets_each_methods_rounds_slice_or_steps():
    """One budget of sampled completions becomes ITERTL's/DPO's slice per round and GRPO's optimizer steps."""
    from loops.policy_compare import _per_round, _rl_steps, methods

    found = methods()
    itertl = found["itertl"].load(str(REPO / found["itertl"].config), [])
    grpo = found["grpo"].load(str(REPO / found["grpo"].config), [])
    assert _per_round(itertl, 4800) == ["unlabeled=synthetic:practice", "unlabeled_per_round=200"]  # 3 x 200 x 8
    # 4800 / (4 prompts x 8 completions) = 150 generation batches, each trained on num_iterations=2 times.
    assert _rl_steps("rloo")(grpo, 4800) == ["unlabeled=synthetic:practice", "algo=rloo", "steps=300"]
    with pytest.raises(UserError, match="raise --budget"):
        _per_round(itertl, 10)


@pytest.mark.slow
def test_policy_benchmark_runs_methods_from_one_starter_at_one_budget(tmp_path, problem_files, starter_model):
    """benchmarks/policy.py: ITERTL and GRPO from one starter, 2 seeds, the issue's JSON; a rerun only prints."""
    runs, out = tmp_path / "runs", tmp_path / "policy.json"
    files = {k: str(problem_files / f"{k}.jsonl") for k in ("reference", "unlabeled", "validation")}
    shared = dict(reference=files["reference"], unlabeled=files["unlabeled"], validation=files["validation"],
                  test=f"[{problem_files / 'heldout.jsonl'}]", sampler="hf", max_tokens=64, eval_n=2,
                  eval_ks="[1,2]", probe_problems=4, workers=2, progress="false")
    per_method = {"itertl": dict(shared, rounds=1, n_samples=4, train_steps=2, batch_size=4),
                  "grpo": dict(shared, num_generations=4, prompts_per_step=2, validate_every=2,
                               max_completion_length=64)}
    sets = [arg for m, values in per_method.items() for k, v in values.items() for arg in ("--set", f"{m}:{k}={v}")]
    command = [sys.executable, "benchmarks/policy.py", "--starter", str(starter_model), "--methods", "itertl,grpo",
               "--seeds", "2", "--budget", "16", "--runs-dir", str(runs), "--json", str(out), *sets]
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert list(summary["methods"]) == ["starter", "itertl", "grpo"] and summary["seeds"] == 2
    itertl, grpo = summary["methods"]["itertl"], summary["methods"]["grpo"]
    # The budget: ITERTL 1 round x 4 problems x 4 samples; GRPO 2 batches of 2 prompts x 4 (4 steps, reuse 2).
    assert itertl["completions"] == 16 and grpo["completions"] == 16
    for stats in summary["methods"].values():
        assert 0 <= stats["test_pass@1"] <= 100 and stats["test_pass@1_sd"] >= 0 and "reference_pass@1" in stats
    assert set(summary["targets"]) == {"rl_vs_itertl", "no_canary_flag"}
    assert all(text.startswith(("MET", "MISSED")) for text in summary["targets"].values())
    for name in ("itertl-s0", "itertl-s1", "grpo-s0", "grpo-s1"):  # one starter: no run built its own
        cfg = yaml.safe_load((runs / name / "config.yaml").read_text())
        assert cfg["base_model"] == str(starter_model) and not (runs / name / "round-0" / "starter").exists()
    assert yaml.safe_load((runs / "grpo-s1" / "config.yaml").read_text())["seed"] == 1
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and json.loads(out.read_text()) == summary


def test_policy_targets_read_the_summary_as_met_or_missed():
    """The targets from per-seed figures: RL against ITERTL, RewardRanker's iterations against the rule, the canary."""
    from loops.policy_compare import summarize

    def result(method, seed, test1, test10, **extra):
        trained = {"test_pass@1": test1, "test_pass@10": test10, **extra}
        return {"method": method, "seed": seed, "test_split": "test_fresh", "kmax": 10, "completions": 4800,
                "seconds": 60.0, "canary_fired": False, "starter": {"test_pass@1": 0.2, "test_pass@10": 0.35},
                "trained": trained}

    ranks = {"reranked_pass@1": 0.3, "no_learning_rule_pass@1": 0.31}
    results = [result("itertl", s, 0.28, 0.42) for s in (0, 1)] + [
        result("grpo", s, 0.30 + s / 100, 0.36) for s in (0, 1)] + [
        result("rewardranker_1", s, 0.25, 0.36, **{"reranked_logprob_pass@1": 0.30, **ranks}) for s in (0, 1)] + [
        result("rewardranker_2", s, 0.26, 0.37, **{"reranked_logprob_pass@1": 0.33, **ranks}) for s in (0, 1)]
    summary = summarize(results, 4800)
    assert summary["methods"]["grpo"]["test_pass@1"] == 30.5 and summary["methods"]["grpo"]["test_pass@1_sd"] == 0.71
    assert summary["targets"]["rl_vs_itertl"].startswith("MET: grpo test pass@1 30.5 vs ITERTL 28.0")
    assert summary["targets"]["rewardranker"].startswith("MET: iteration 2 reranked pass@1 33.0 vs iteration 1 30.0")
    assert summary["no_learning_rule_pass@1"] == 31.0 and summary["targets"]["no_canary_flag"].startswith("MET")
    results[2]["canary_fired"] = True  # one seed of GRPO flagged
    results[2]["trained"]["test_pass@10"] = 0.30  # and its breadth below the starter's on average
    summary = summarize(results, 4800)
    assert summary["targets"]["no_canary_flag"] == "MISSED: the canary fired in grpo"
    assert summary["targets"]["rl_vs_itertl"].startswith("MISSED")


def test_a_grpo_run_may_gain_a_test_split_but_not_another_learning_rate(tmp_path):
    """Test splits are only reported, so a finished run may be reopened with one more (ITERTL's rule);
    a key that changes the training is refused."""
    from loops.grpo_config import GRPO_RESUMABLE_KEYS
    from loops.rundir import RunDir

    cfg = load_grpo_config(None, [f"runs_dir={tmp_path}", "test=[]"])
    RunDir.open(cfg.run_dir, cfg.to_dict(), GRPO_RESUMABLE_KEYS).close()
    more = load_grpo_config(None, [f"runs_dir={tmp_path}", "test=[synthetic:test-fresh]"])
    RunDir.open(more.run_dir, more.to_dict(), GRPO_RESUMABLE_KEYS).close()
    other = load_grpo_config(None, [f"runs_dir={tmp_path}", "test=[synthetic:test-fresh]", "learning_rate=1e-3"])
    with pytest.raises(UserError, match="learning_rate"):
        RunDir.open(other.run_dir, other.to_dict(), GRPO_RESUMABLE_KEYS)
