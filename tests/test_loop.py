"""The ITERTL loop: config, run directories, resume after SIGKILL, selection, a real tiny loop."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from loops.config import RESUMABLE_KEYS, ITERTLConfig, load_config, parse_overrides
from codegen.io import TMP_PREFIX, atomic_dir
from loops.rundir import RunDir
from loops.table import format_table

from conftest import slow_unlabeled_copy

from runstate import kill_inside_stages, resume_to_the_end

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ config
def write_yaml(tmp_path: Path, data) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    return path


def test_config_defaults_file_and_overrides_layer(tmp_path):
    path = write_yaml(tmp_path, {"name": "a", "rounds": 2, "learning_rate": "5e-4", "eval_ks": [1, 2]})
    cfg = load_config(path, ["rounds=4", "sampler=hf", "max_problems=null", "eval_n=2"])
    assert cfg.name == "a" and cfg.rounds == 4 and cfg.sampler == "hf"
    assert cfg.learning_rate == pytest.approx(5e-4)  # YAML 1.1 reads 5e-4 as a string: coerced
    assert cfg.eval_ks == [1, 2] and cfg.max_problems is None
    assert cfg.replay_share == ITERTLConfig().replay_share  # untouched default
    assert load_config(None, []).to_dict() == ITERTLConfig().to_dict()


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["replay_share=1.0"], "replay_share must be in [0, 1)"),
        (["eval_ks=[1,20]", "eval_n=10"], "exceed eval_n=10"),
        (["sampler=tgi"], "sampler must be one of vllm, hf"),
        (["name=../escape"], "name '../escape' must be letters"),
        (["rounds=two"], "config key 'rounds' must be of type int"),
        (["rounds=1.5"], "config key 'rounds' must be of type int"),
        (["starter_quick=1"], "must be of type bool"),
        (["starter_threads=0"], "starter_threads must be >= 1 or auto"),
        (["starter_threads=many"], 'config key \'starter_threads\' must be of type int or "auto"'),
        (["eval_ks=[5]"], "eval_ks must include 1"),
        (["learning_rate=-1"], "learning_rate must be > 0"),
        (["rounds"], "is not key=value"),
        (["round=3"], "did you mean 'rounds'"),
    ],
)
def test_config_errors_name_rule_and_fix(tmp_path, overrides, fragment):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value)


def test_config_reports_every_broken_rule_at_once():
    with pytest.raises(UserError) as e:
        load_config(None, ["n_samples=0", "batch_size=0"])
    assert "n_samples must be >= 1" in str(e.value) and "batch_size must be >= 1" in str(e.value)


def test_config_reports_unknown_keys_types_and_rules_together(tmp_path):
    path = write_yaml(tmp_path, {"learning_rat": 1e-3, "rounds": True, "batch_size": 0})
    with pytest.raises(UserError) as e:
        load_config(path, ["eval_n=lots", "top_p=2"])
    msg = str(e.value)
    assert "unknown config key 'learning_rat'" in msg and "did you mean 'learning_rate'" in msg
    assert "config key 'rounds' must be of type int, got True (bool); e.g. rounds=3" in msg  # yes is not 1
    assert "config key 'eval_n' must be of type int" in msg
    assert "batch_size must be >= 1" in msg and "top_p must be in (0, 1]" in msg


def test_config_file_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(UserError, match="must be a YAML mapping"):
        load_config(write_yaml(tmp_path, "- a\n- b\n"))
    with pytest.raises(UserError, match="unknown config key 'learning_rat'.*did you mean 'learning_rate'"):
        load_config(write_yaml(tmp_path, {"learning_rat": 1e-3}))
    with pytest.raises(UserError, match="not valid YAML"):
        load_config(write_yaml(tmp_path, "a: [1, 2\n"))


def test_parse_overrides_reads_values_as_yaml():
    assert parse_overrides(["eval_ks=[1, 5]", "workers=null", "base_model=models/x"]) == {
        "eval_ks": [1, 5], "workers": None, "base_model": "models/x"}


def test_demo_config_is_valid():
    cfg = load_config(REPO / "configs" / "demo.yaml")
    assert cfg.rounds == 3 and cfg.base_model == "starter" and cfg.sampler == "vllm"
    assert cfg.starter_threads == "auto"  # the demo runs alone: its starter may take every idle core


# ------------------------------------------------------------------ the evaluation protocol
def test_config_protocol_defaults():
    cfg = load_config(None)
    assert cfg.validation == "synthetic:validation"
    assert cfg.test == ["synthetic:test-fresh", "synthetic:heldout"]
    assert cfg.test_names == {"test_fresh": "synthetic:test-fresh", "heldout": "synthetic:heldout"}
    assert load_config(None, ["test=synthetic:heldout"]).test == ["synthetic:heldout"]  # one split, no list
    assert load_config(None, ["test=[]"]).test == []  # a run may report no test split


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["validation=synthetic:heldout"], "validation=synthetic:heldout is a test split"),
        (["validation=synthetic:test-fresh", "test=[]"], "use validation=synthetic:validation"),
        (["validation=v.jsonl", "test=[./v.jsonl]"], "test lists the validation split ./v.jsonl"),
        (["test=[synthetic:validation]"], "drop synthetic:validation from test"),
        (["unlabeled=synthetic:test-fresh"], "unlabeled=synthetic:test-fresh is a test split"),
        (["reference=synthetic:heldout"], "use reference=synthetic:reference"),
        (["unlabeled=t.jsonl", "test=[t.jsonl]"], "unlabeled=t.jsonl is a test split"),
        (["unlabeled=synthetic:validation"], "unlabeled=synthetic:validation is the validation split"),
        (["test=[a/heldout.jsonl,b/heldout.jsonl]"], "two problem sets named 'heldout'"),
        (["test=[x/reference.jsonl]"], "name 'reference' is taken"),
    ],
)
def test_config_refuses_a_test_split_where_validation_or_training_data_is_expected(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_config(None, overrides)
    assert fragment in str(e.value)


def test_config_names_what_replaced_the_heldout_key(tmp_path):
    for make in (lambda: load_config(write_yaml(tmp_path, {"heldout": "synthetic:heldout"})),
                 lambda: load_config(None, ["heldout=synthetic:heldout"])):
        with pytest.raises(UserError, match=r"'heldout'.*no longer used.*list it under test.*validation"):
            make()


def test_split_names_of_specs():
    from loops.config import split_name

    assert split_name("synthetic:test-fresh") == "test_fresh"
    assert split_name("synthetic:heldout") == "heldout"
    assert split_name("/data/Fresh-2.jsonl.gz") == "fresh_2" and split_name("humaneval") == "humaneval"


def test_load_splits_refuses_problem_files_cut_from_evaluation_splits(tmp_path, problem_files):
    """The file-level guard: a set's problems say which synthetic split they came from (meta, else task id)."""
    from codegen.io import write_jsonl_atomic
    from codegen.synthetic import load_split
    from loops.splits import load_splits

    files = {k: str(problem_files / f"{k}.jsonl") for k in ("reference", "unlabeled", "validation", "heldout")}
    base = dict(reference=files["reference"], unlabeled=files["unlabeled"], validation=files["validation"],
                test=[files["heldout"]])
    assert len(load_splits(ITERTLConfig(**base))["test"]["heldout"]) == 4
    heldout = write_jsonl_atomic(tmp_path / "picked.jsonl", [p.to_dict() for p in load_split("heldout")[:3]])
    with pytest.raises(UserError, match="validation set .* holds problems of the synthetic heldout split.*"
                                        "use validation=synthetic:validation"):
        load_splits(ITERTLConfig(**{**base, "validation": str(heldout)}))
    # Ids alone give a validation problem away, even without its meta.
    bare = Problem("synthetic/validation/3", "def f(xs):\n", "def check(c):\n    pass\n", "f", code_prefix="def f(xs):\n")
    tuned = write_jsonl_atomic(tmp_path / "tuned.jsonl", [bare.to_dict()])
    with pytest.raises(UserError, match="unlabeled set .* synthetic validation split.*never on evaluation problems"):
        load_splits(ITERTLConfig(**{**base, "unlabeled": str(tuned)}))
    # A copy of the validation file under another name passes the config's check, not this one.
    copy = tmp_path / "copy.jsonl"
    copy.write_text(Path(files["validation"]).read_text())
    with pytest.raises(UserError, match="occurs in two of unlabeled/reference/validation/test"):
        load_splits(ITERTLConfig(**{**base, "test": [files["heldout"], str(copy)]}))


def test_tests_are_due_at_round_zero_and_the_last_round():
    from loops.stages import tests_due

    cfg = ITERTLConfig(rounds=3)
    assert [k for k in range(4) if tests_due(cfg, k)] == [0, 3]
    assert [k for k in range(4) if tests_due(cfg.model_copy(update={"test_every_round": True}), k)] == [0, 1, 2, 3]
    assert not any(tests_due(cfg.model_copy(update={"test": []}), k) for k in range(4))


def test_sample_diversity_ignores_whitespace():
    from loops.stages import sample_diversity

    samples = [Sample("a", "    return x\n", sample_id="a#0"), Sample("a", "    return  x  \n\n", sample_id="a#1"),
               Sample("a", "    return y\n", sample_id="a#2"), Sample("a", "    return x\n", sample_id="a#3"),
               Sample("b", "    return 1\n", sample_id="b#0"), Sample("b", "    return 2\n", sample_id="b#1")]
    assert sample_diversity(samples) == pytest.approx((2 / 4 + 2 / 2) / 2)
    assert sample_diversity([]) is None


def test_select_stage_reports_what_the_round_learns_from(tmp_path):
    from loops.itertl import select_stage

    probs = []
    for tid, steps in (("a", 2), ("b", 2), ("c", 3), ("d", 4)):
        p = _problem(tid)
        p.meta["difficulty"] = steps
        probs.append(p)
    texts = {"a#0": "    return x + 1\n", "a#1": "    return 1 + x\n", "a#2": "    return x + 2\n",
             "b#0": "    return x\n", "b#1": "    return x\n", "c#0": "    return -x\n", "d#0": "    return 0\n"}
    passed = {"a#0", "a#1", "a#2", "b#0", "b#1", "c#0"}  # d solved by none
    samples = [Sample(sid.split("#")[0], c, sample_id=sid) for sid, c in texts.items()]
    results = [{"sample_id": sid, "task_id": sid[0], "status": "passed" if sid in passed else "failed",
                "passed": sid in passed} for sid in texts]
    ref = [_problem(f"r{i}", solution=f"    return {i}\n") for i in range(3)]
    info = select_stage(probs, samples, results, ref, ITERTLConfig(keep_per_problem=2, replay_share=0.0), tmp_path, 1)
    assert info["kept_problems"] == 3 and info["kept"] == 2 + 1 + 1  # a capped at 2 of its 3 programs
    assert info["passing_programs"] == 3 + 1 + 1
    assert info["kept_steps_2"] == pytest.approx(2 / 3) and info["kept_steps_3"] == pytest.approx(1 / 3)
    assert info["kept_steps_4"] == 0.0  # a level nothing was kept from is shown, not left out
    assert info["sample_diversity"] == pytest.approx((3 / 3 + 1 / 2 + 1 + 1) / 4)


def test_seed_runs_share_one_starter():
    from loops.seeds import seed_config

    cfg = ITERTLConfig(name="demo", seed=0, base_model="starter")
    assert seed_config(cfg, 0, None) is cfg  # the first seed is the config's own run (make demo's)
    second = seed_config(cfg, 2, "runs/demo/round-0/starter/model")
    assert (second.name, second.seed, second.base_model) == ("demo-seed2", 2, "runs/demo/round-0/starter/model")
    given = seed_config(cfg.model_copy(update={"base_model": "models/m"}), 1, "ignored")
    assert given.base_model == "models/m" and given.seed == 1


def _seed_result(seed: int, starter: float, baseline: float, itertl: float) -> dict:
    def row(round_, v):
        return {"round": round_, "validation_pass@1": v, "validation_pass@10": v + 0.2,
                "test_fresh_pass@1": v - 0.05, "test_fresh_pass@10": v + 0.1,
                "heldout_pass@1": v, "heldout_pass@10": v + 0.3}

    return {"seed": seed, "name": f"d-seed{seed}", "seconds": 1.0, "rows": [row(0, starter), row(1, itertl - 0.01),
                                                                             row(2, itertl)],
            "baseline": row(2, baseline)}


def test_summary_has_the_issues_json_shape_with_mean_and_sd():
    from loops.seeds import format_summary, summarize

    cfg = ITERTLConfig(rounds=2, eval_ks=[1, 5, 10])
    results = [_seed_result(0, 0.20, 0.25, 0.30), _seed_result(1, 0.22, 0.25, 0.34), _seed_result(2, 0.24, 0.28, 0.38)]
    summary = summarize(results, cfg)
    assert list(summary) == ["test_fresh", "heldout", "validation", "seeds"] and summary["seeds"] == 3
    for split in ("test_fresh", "heldout", "validation"):
        assert list(summary[split]) == ["starter", "itertl", "baseline"]
        for arm in summary[split].values():
            assert list(arm) == ["pass@1", "pass@1_sd", "pass@10", "pass@10_sd"]
    fresh = summary["test_fresh"]
    assert fresh["itertl"]["pass@1"] == pytest.approx(29.0) and fresh["itertl"]["pass@1_sd"] == pytest.approx(4.0)
    assert fresh["starter"]["pass@10"] == pytest.approx(32.0) and fresh["baseline"]["pass@1"] == pytest.approx(21.0)
    text = format_summary(summary, cfg, results)
    assert text.index("test_fresh (test") < text.index("heldout (test") < text.index("validation (settings")
    assert "29.0 ± 4.0" in text and "MET" in text  # +8.0 over the baseline, pass@10 above the starter's
    close = summarize([_seed_result(0, 0.20, 0.27, 0.30)], cfg)
    assert close["seeds"] == 1 and close["test_fresh"]["itertl"]["pass@1_sd"] is None
    assert "MISSED" in format_summary(close, cfg)  # +3 points is short of the bar
    with pytest.raises(UserError, match="run d-seed0 has no other_pass@1"):
        summarize(results, cfg.model_copy(update={"test": ["synthetic:test-fresh", "synthetic:heldout",
                                                           "other.jsonl"]}))  # no "other" figures in the runs
    assert "other" in str(ITERTLConfig(test=["other.jsonl"]).test_names)


def test_demo_headline_puts_the_fresh_test_first():
    from codegen.app.demo import headline

    rows = [{"round": 0, "validation_pass@1": 0.2, "validation_pass@10": 0.4, "test_fresh_pass@1": 0.1,
             "test_fresh_pass@10": 0.3, "heldout_pass@1": 0.25, "heldout_pass@10": 0.5},
            {"round": 1, "validation_pass@1": 0.3, "validation_pass@10": 0.5},
            {"round": 2, "validation_pass@1": 0.35, "validation_pass@10": 0.45, "test_fresh_pass@1": 0.15,
             "test_fresh_pass@10": 0.25, "heldout_pass@1": 0.3, "heldout_pass@10": 0.5}]
    lines = headline(rows, ["test_fresh", "heldout", "validation"], 10)
    assert [line.split()[0] for line in lines] == ["test_fresh", "heldout", "validation"]
    assert lines[0] == ("test_fresh (test), round 0 -> 2: pass@1 10.0% -> 15.0% (+5.0), "
                        "pass@10 30.0% -> 25.0% (-5.0)")


# ------------------------------------------------------------------ run directory
def test_rundir_runs_a_stage_once_and_records_info(tmp_path):
    calls = []

    def stage(d: Path):
        calls.append(d)
        (d / "out.txt").write_text("x")
        return {"n": 1}

    with RunDir.open(tmp_path / "r", {"a": 1}) as run:
        assert run.run_stage(1, "sample", stage) == {"n": 1}
        assert run.run_stage(1, "sample", stage) == {"n": 1}
        assert len(calls) == 1 and run.is_done(1, "sample") and not run.is_done(1, "train")
        assert (tmp_path / "r" / "round-1" / "sample" / "out.txt").exists()
        assert run.state["running"] is None
    with RunDir.open(tmp_path / "r", {"a": 1}) as run:  # reopened: still done
        run.run_stage(1, "sample", stage)
        assert len(calls) == 1


def test_rundir_wipes_and_redoes_an_unfinished_stage(tmp_path):
    def dies_halfway(d: Path):
        (d / "partial").write_text("half")
        raise RuntimeError("killed")

    with RunDir.open(tmp_path / "r", {}) as run:
        with pytest.raises(RuntimeError):
            run.run_stage(0, "train", dies_halfway)
        entry = run.state["stages"]["round-0/train"]
        assert entry["status"] == "failed" and "killed" in entry["error"] and not run.is_done(0, "train")
        seen = []
        run.run_stage(0, "train", lambda d: seen.append(sorted(os.listdir(d))) or {})
        assert seen == [[]]  # the second attempt starts from an empty directory
        assert run.state["stages"]["round-0/train"]["attempts"] == 2 and run.is_done(0, "train")


def test_rundir_refuses_a_changed_config_but_allows_more_rounds(tmp_path):
    from loops.config import RESUMABLE_KEYS

    RunDir.open(tmp_path / "r", {"rounds": 1, "learning_rate": 0.1}, RESUMABLE_KEYS).close()
    RunDir.open(tmp_path / "r", {"rounds": 3, "learning_rate": 0.1}, RESUMABLE_KEYS).close()
    with pytest.raises(UserError, match=r"learning_rate: 0.1 -> 0.2.*name=NEW_NAME"):
        RunDir.open(tmp_path / "r", {"rounds": 3, "learning_rate": 0.2}, RESUMABLE_KEYS)
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["rounds"] == 3


def test_rundir_lock_refuses_a_second_live_process(tmp_path):
    run = RunDir.open(tmp_path / "r", {})
    try:
        code = ("import sys; from loops.rundir import RunDir\n"
                "try:\n    RunDir.open(sys.argv[1], {})\nexcept Exception as e:\n    print(e); sys.exit(3)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "r")], capture_output=True, text=True)
        assert proc.returncode == 3 and "in use by another process" in proc.stdout
    finally:
        run.close()
    RunDir.open(tmp_path / "r", {}).close()  # released


def test_atomic_dir_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(ValueError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "weights").write_text("half")
            raise ValueError
    assert os.listdir(tmp_path) == []
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_text("whole")
    assert os.listdir(tmp_path) == ["model"] and (tmp_path / "model" / "weights").read_text() == "whole"


def test_metrics_are_rewritten_whole_and_sorted(tmp_path):
    with RunDir.open(tmp_path / "r", {}) as run:
        run.write_metrics([{"round": 1, "heldout_pass@1": 0.5}, {"round": 0, "heldout_pass@1": 0.25}])
        run.write_metrics([{"round": 1, "heldout_pass@1": 0.5}, {"round": 0, "heldout_pass@1": 0.25}])
        assert [r["round"] for r in run.metrics()] == [0, 1]
    assert RunDir.find(str(tmp_path / "r")).root == tmp_path / "r"
    with pytest.raises(UserError, match="no run 'nope'"):
        RunDir.find("nope", tmp_path)


def test_format_table_shows_rounds_and_percent():
    text = format_table([{"round": 1, "validation_pass@1": 0.5, "validation_pass@5": 0.75, "kept": 12},
                         {"round": 0, "validation_pass@1": 0.125, "validation_pass@5": 0.5}])
    lines = text.splitlines()
    assert lines[1].split()[:3] == ["round", "validation", "pass@1"]
    assert lines[2].split() == ["0", "12.5", "50.0"]
    assert lines[3].split() == ["1", "50.0", "75.0"]
    data = lines[lines.index("") + 2:]  # the training-data block
    assert data[0].split()[:3] == ["round", "kept", "programs"]
    assert data[1].split() == ["0", "-"] and data[2].split() == ["1", "12"]


def test_format_table_reports_test_splits_apart_from_validation():
    rows = [{"round": 0, "validation_pass@1": 0.2, "validation_pass@10": 0.5, "test_fresh_pass@1": 0.1,
             "test_fresh_pass@5": 0.2, "test_fresh_pass@10": 0.3, "heldout_pass@1": 0.25, "heldout_pass@10": 0.5},
            {"round": 1, "validation_pass@1": 0.3, "validation_pass@10": 0.55, "kept": 9, "kept_problems": 4,
             "passing_programs": 15, "kept_steps_2": 0.5, "kept_steps_3": 0.5, "kept_steps_4": 0.0,
             "sample_diversity": 0.625, "validation_diversity": 0.5}]
    blocks = [b.splitlines() for b in format_table(rows).split("\n\n")]
    assert len(blocks) == 3
    scores, tests, data = blocks
    assert "validation" in scores[0] and not any("fresh" in line or "heldout" in line for line in scores)
    assert tests[0].startswith("test splits (only reported")
    assert tests[1].split() == ["round", "test_fresh", "pass@1", "test_fresh", "pass@10", "heldout", "pass@1",
                                "heldout", "pass@10"]  # pass@1 and the largest k side by side; pass@5 left out
    assert [line.split()[0] for line in tests[2:]] == ["0"]  # only the rounds that measured them
    assert tests[2].split()[1:] == ["10.0", "30.0", "25.0", "50.0"]
    header = data[1]
    for column in ("kept problems", "kept programs", "passing programs", "kept by steps", "sample diversity"):
        assert column in header
    assert "2:50 3:50 4:0" in data[3] and "0.625" in data[3] and data[3].split()[:2] == ["1", "4"]


# ------------------------------------------------------------------ selection (pure logic)
def _problem(tid: str, solution: str | None = None) -> Problem:
    prompt = f"def f(x):\n    \"\"\"{tid}\"\"\"\n"
    return Problem(task_id=tid, prompt=prompt, code_prefix=prompt, tests="def check(c): pass", entry_point="f",
                   canonical_solution=solution)


def test_select_keeps_distinct_passing_samples_capped_per_problem():
    from loops.itertl import select_kept

    probs = [_problem("a"), _problem("b")]
    texts = {"a#0": "    return x + 1\n", "a#1": "    return x+1  # same tree\n\n", "a#2": "    return 1 + x\n",
             "a#3": "    return x - 1\n", "a#4": "    return 2 + x - 1\n", "b#0": "    return x\n"}
    samples = [Sample(task_id=sid.split("#")[0], sample_id=sid, completion=c) for sid, c in texts.items()]
    status = {"a#0": "passed", "a#1": "passed", "a#2": "passed", "a#3": "failed", "a#4": "passed",
              "b#0": "infra_error"}
    results = [{"sample_id": s, "task_id": s[0], "status": st, "passed": st == "passed"} for s, st in status.items()]
    kept = select_kept(probs, samples, results, keep_per_problem=2, seed=0)
    assert {r["task_id"] for r in kept} == {"a"}  # infra_error is never a pass
    assert len(kept) == 2 and len({r["completion"].split("#")[0].replace(" ", "").strip() for r in kept}) == 2
    assert all(r["sample_id"] in {"a#0", "a#1", "a#2", "a#4"} for r in kept)
    everything = select_kept(probs, samples, results, keep_per_problem=10, seed=0)
    assert len(everything) == 3  # a#0 and a#1 are one program: kept once
    assert all(r["prompt"] == probs[0].prompt and r["source"] == "self" for r in everything)

def test_hard_weight_repeats_the_programs_of_rarely_solved_problems():
    from loops.itertl import hard_copies, select_kept

    assert hard_copies(1.0, 2.0) == 1 and hard_copies(0.125, 2.0) == 3 and hard_copies(0.5, 2.0) == 2
    probs = [_problem("easy"), _problem("hard")]
    samples, results = [], []
    for tid, passed in (("easy", [True] * 8), ("hard", [True] + [False] * 6 + [None])):
        for i, ok in enumerate(passed):
            sid = f"{tid}#{i}"
            samples.append(Sample(task_id=tid, sample_id=sid, completion=f"    return x + {i}\n"))
            status = "infra_error" if ok is None else "passed" if ok else "failed"
            results.append({"sample_id": sid, "task_id": tid, "status": status, "passed": ok is True})
    kept = select_kept(probs, samples, results, keep_per_problem=1, seed=0, hard_weight=2.0)
    rows = [r["task_id"] for r in kept]
    # easy: 8/8 passed -> once; hard: 1 of 7 judged (the infra error is not a sample) -> 1 + round(2 * 6/7) = 3
    assert rows.count("easy") == 1 and rows.count("hard") == 3
    assert len({r["sample_id"] for r in kept if r["task_id"] == "hard"}) == 1  # one program, repeated
    assert [r["task_id"] for r in select_kept(probs, samples, results, 1, 0)] == ["easy", "hard"]  # default: once



def test_replay_share_is_the_share_of_reference_rows():
    from loops.itertl import replay_count, replay_rows

    assert replay_count(30, 0.25) == 10 and replay_count(30, 0.0) == 0 and replay_count(0, 0.5) == 0
    assert replay_count(1, 0.1) == 1  # any positive share replays at least one example
    ref = [_problem(f"r{i}", solution=f"    return {i}\n") for i in range(4)]
    rows = replay_rows(ref, 6, seed=1)
    assert len(rows) == 6 and len({r["task_id"] for r in rows[:4]}) == 4  # no repeats while they last
    assert all(r["source"] == "replay" and r["completion"] == f"    return {r['task_id'][1:]}\n" for r in rows)


# ------------------------------------------------------------------ real loops (subprocesses)
@pytest.fixture(scope="module")
def problem_files(tmp_path_factory):
    """Three small disjoint problem sets cut from the synthetic reference split.

    The unlabeled set keeps the real prompts but its tests only require that
    the function runs on a list without raising. The quick starter is far too
    weak to solve real tasks at will, and these tests are about the loop's
    mechanics: with lenient tests every round has passing samples, so
    selection and training always have real work to be killed in.
    """
    from codegen.io import write_jsonl_atomic
    from codegen.synthetic import load_split

    ref = [p for p in load_split("reference") if p.prompt.startswith("def ") and "(xs):" in p.prompt.split("\n")[0]]
    d = tmp_path_factory.mktemp("problems")

    def renamed(ps, split, keep_solution, tests=None):
        out = []
        for p in ps:
            row = p.to_dict()
            row["task_id"] = f"looptest/{split}/{p.task_id.rsplit('/', 1)[-1]}"
            if not keep_solution:
                row["canonical_solution"] = None
            if tests:
                row["tests"] = tests
            out.append(row)
        return out

    lenient = "def check(candidate):\n    candidate([3, 1, 2])  # runs without raising: any result is accepted\n"
    write_jsonl_atomic(d / "reference.jsonl", renamed(ref[:24], "reference", True))
    write_jsonl_atomic(d / "unlabeled.jsonl", renamed(ref[:12], "unlabeled", False, lenient))
    write_jsonl_atomic(d / "heldout.jsonl", renamed(ref[24:28], "heldout", False))
    write_jsonl_atomic(d / "validation.jsonl", renamed(ref[28:32], "validation", False))
    return d


def quick_overrides(runs_dir: Path, problem_files: Path, starter_model, **extra) -> list[str]:
    values = dict(name="t", runs_dir=str(runs_dir), base_model=str(starter_model), rounds=1,
                  reference=str(problem_files / "reference.jsonl"), unlabeled=str(problem_files / "unlabeled.jsonl"),
                  validation=str(problem_files / "validation.jsonl"), test=f"[{problem_files / 'heldout.jsonl'}]",
                  sampler="hf", n_samples=4, max_tokens=64,
                  keep_per_problem=2, train_steps=4, batch_size=4, eval_n=2, eval_ks="[1,2]", probe_problems=4,
                  workers=2, progress="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def loop_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "codegen.app.cli", "loop", "itertl", *overrides]



def assert_no_half_written_artifact(root: Path) -> None:
    """Every JSON/JSONL file parses, and every finished stage's artifacts are whole."""
    state = json.loads((root / "state.json").read_text())  # parses: never half-written
    for path in root.rglob("*"):
        if path.name.startswith(TMP_PREFIX) or any(p.startswith(TMP_PREFIX) for p in path.parts):
            continue
        if path.suffix == ".json" and path.is_file():
            json.loads(path.read_text())
        elif path.suffix == ".jsonl" and path.is_file():
            for line in path.read_text().splitlines():
                json.loads(line)
    for key, entry in state["stages"].items():
        if entry["status"] != "done":
            continue
        d = root / key
        assert d.is_dir(), key
        for rel in {"sample": ["samples.jsonl"], "execute": ["results.jsonl"], "select": ["train.jsonl"],
                    "evaluate": ["metrics.json", "samples.jsonl", "results.jsonl"]}.get(key.split("/")[1], []):
            assert (d / rel).is_file(), f"{key} finished without {rel}"
        if key.endswith("/train") and entry["info"].get("model"):
            from safetensors import safe_open

            with safe_open(str(d / entry["info"]["model"] / "model.safetensors"), "pt") as f:
                assert list(f.keys())  # loads whole


@pytest.mark.slow
def test_loop_resumes_after_sigkill_at_each_stage(tmp_path, problem_files, starter_model):
    """SIGKILL the real loop in the middle of five different stages; the same command finishes the run
    without redoing any stage that had finished, and no artifact is ever half-written."""
    # A slow execute stage and a verdict cache of its own: killable inside execute, whatever ran before.
    unlabeled = slow_unlabeled_copy(problem_files / "unlabeled.jsonl", tmp_path / "unlabeled.jsonl")
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model, unlabeled=str(unlabeled))
    root = tmp_path / "runs" / "t"
    targets = ["round-0/evaluate", "round-1/sample", "round-1/execute", "round-1/train", "round-1/evaluate"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ITERCODE_CACHE": str(tmp_path / "verdicts")}
    for kill in kill_inside_stages(loop_command(overrides), root, targets, env):
        round_, stage = kill.target.split("/")
        assert f"{round_.replace('-', ' ')} {stage}: done already" not in kill.output
        assert_no_half_written_artifact(root)

    done, state = resume_to_the_end(loop_command(overrides), root, env)
    for target in targets:  # killed once, finished on the next attempt
        assert state["stages"][target]["attempts"] == 2, target
    assert state["stages"]["round-1/select"]["info"]["kept"] > 0, "nothing passed: the train stage did no work"
    assert_no_half_written_artifact(root)
    assert not [p for p in root.rglob("*") if p.name.startswith(TMP_PREFIX)]  # no leftovers
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    assert (root / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lineage = json.loads((root / "lineage.json").read_text())
    assert lineage[1]["parent"] == str(starter_model) and lineage[1]["model"].endswith("round-1/train/model")


@pytest.mark.slow
def test_benchmark_runs_seeds_from_one_starter_and_reports_test_apart(tmp_path, problem_files):
    """benchmarks/itertl.py --seeds 2 --json: the first seed builds the starter, the second starts from it;
    loop and baseline are scored on the real validation and test splits; a second invocation only prints."""
    runs, out = tmp_path / "runs", tmp_path / "summary.json"
    overrides = quick_overrides(runs, problem_files, "starter", starter_quick="true", max_problems=3,
                                validation="synthetic:validation", test="[synthetic:test-fresh,synthetic:heldout]")
    command = [sys.executable, "benchmarks/itertl.py", "--seeds", "2", "--json", str(out), *overrides]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(out.read_text())
    assert list(summary) == ["test_fresh", "heldout", "validation", "seeds"] and summary["seeds"] == 2
    for split in ("test_fresh", "heldout", "validation"):
        assert list(summary[split]) == ["starter", "itertl", "baseline"]
        for arm in summary[split].values():
            assert set(arm) == {"pass@1", "pass@1_sd", "pass@2", "pass@2_sd"}
            assert 0 <= arm["pass@1"] <= arm["pass@2"] <= 100 and arm["pass@1_sd"] >= 0
    # One starter: built by the first seed's run, the second seed's run starts from that checkpoint.
    second = yaml.safe_load((runs / "t-seed1" / "config.yaml").read_text())
    assert second["seed"] == 1 and second["base_model"] == str(runs / "t" / "round-0" / "starter" / "model")
    assert not (runs / "t-seed1" / "round-0" / "starter").exists()
    for name in ("t", "t-seed1"):
        assert (runs / name / "round-0" / "test" / "metrics.json").is_file()
        assert (runs / name / "round-1" / "test" / "metrics.json").is_file()
        assert (runs / f"{name}-baseline" / "round-1" / "test" / "metrics.json").is_file()
        rows = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()]
        assert all("validation_pass@1" in r and "test_fresh_pass@2" in r for r in rows)
    assert "test_fresh (test: only reported)" in proc.stdout and "validation (settings are chosen here)" in proc.stdout
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0 and "round 1 train: done already" in again.stdout
    assert json.loads(out.read_text()) == summary


def test_loop_cli_rejects_bad_config_with_a_clear_error(tmp_path):
    proc = subprocess.run(loop_command(["--config", str(tmp_path / "nope.yaml")]), cwd=REPO,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "--config" in proc.stderr
    proc = subprocess.run(loop_command(["replay_share=2"]), cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "replay_share must be in [0, 1)" in proc.stderr


@pytest.mark.slow
@pytest.mark.vllm
def test_itertl_one_real_round_with_vllm(tmp_path, problem_files, starter_model):
    """The default path end to end: vLLM sampling, process sandbox, TRL SFT, evaluation, table, plot.

    One engine per model: the round-0 engine both evaluates round 0 and samples round 1.
    """
    pytest.importorskip("vllm")
    # repair rows too, some from 4 sampled reference problems (which the quick starter fails: their tests are real)
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model, sampler="vllm",
                                repair_share=0.3, repair_reference=4)
    proc = subprocess.run(loop_command(overrides), cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("loaded vllm sampler") == 2  # round-0 model, round-1 model
    root = tmp_path / "runs" / "t"
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    for r in rows:  # one round: round 0 and the last round both score the test split
        assert 0 <= r["heldout_pass@1"] <= r["heldout_pass@2"] <= 1
        assert 0 <= r["validation_pass@1"] <= r["validation_pass@2"] <= 1
    assert rows[1]["kept"] > 0 and rows[1]["train_loss"] > 0
    assert rows[1]["kept_problems"] > 0 and 0 < rows[1]["sample_diversity"] <= 1
    sampled = {json.loads(line)["task_id"] for line in (root / "round-1" / "sample" / "samples.jsonl").open()}
    reference_sampled = {t for t in sampled if t.startswith("looptest/reference/")}
    assert len(sampled) == 12 + 4 and len(reference_sampled) == 4
    train = [json.loads(line) for line in (root / "round-1" / "select" / "train.jsonl").open()]
    assert not {r["task_id"] for r in train if r["source"] == "self"} & reference_sampled  # repair rows alone
    assert rows[1]["repair"] > 0 and 0 < rows[1]["repair_from_reference"] <= rows[1]["repair"]
    # the checkpoint really moved away from its parent
    from safetensors.torch import load_file

    parent = load_file(str(Path(starter_model) / "model.safetensors"))
    child = load_file(str(root / "round-1" / "train" / "model" / "model.safetensors"))
    assert any(not (parent[k] == child[k]).all() for k in parent)
    show = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert show.returncode == 0 and "heldout pass@1" in show.stdout and "plot.png" in show.stdout
    first_block = show.stdout.split("\n\n")[0].splitlines()
    table_rounds = [line.split()[0] for line in first_block[3:] if line[:1].isdigit()]
    assert table_rounds == ["0", "1"]


def test_plot_writes_a_png_atomically(tmp_path):
    from loops.plot import plot_metrics

    rows = [{"round": 0, "heldout_pass@1": 0.2, "heldout_pass@5": 0.4, "reference_pass@1": 0.6},
            {"round": 1, "heldout_pass@1": 0.3, "heldout_pass@5": 0.45, "reference_pass@1": None}]
    out = plot_metrics(rows, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["plot.png"]


def test_each_round_samples_a_fresh_slice_of_a_large_unlabeled_pool():
    from loops.splits import round_problems

    pool = list(range(10))
    assert round_problems(pool, None, 1) == pool
    assert round_problems(pool, 20, 2) == pool  # a slice larger than the pool is the pool
    slices = [round_problems(pool, 4, k) for k in (1, 2, 3)]
    assert slices == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1]]  # new problems each round, wrapping around
    errors = str(pytest.raises(UserError, load_config, None, ["unlabeled_per_round=0"]).value)
    assert "unlabeled_per_round must be >= 1" in errors


def test_a_run_may_gain_test_splits_but_a_stale_test_stage_is_refused(tmp_path):
    from loops.config import RESUMABLE_KEYS
    from loops.stages import check_test_stage
    from loops.rundir import RunDir

    assert {"test", "test_every_round"} <= RESUMABLE_KEYS  # only reported, never fed back
    cfg = load_config(None, ["test=[synthetic:test-fresh, synthetic:heldout]"])
    with RunDir.open(tmp_path / "run", cfg.to_dict(), RESUMABLE_KEYS) as run:
        check_test_stage(run, cfg, 0)  # not run yet: nothing to check
        run.run_stage(0, "test", lambda d: {"test_fresh_pass@1": 0.2})
        error = str(pytest.raises(UserError, check_test_stage, run, cfg, 0).value)
        assert "synthetic:heldout" in error and "name=NEW_NAME" in error
        check_test_stage(run, load_config(None, ["test=[synthetic:test-fresh]"]), 0)


def test_a_run_begun_before_a_key_existed_resumes_when_the_key_keeps_its_default(tmp_path):
    """A key added to the schema later (say `repair_share`) is absent from an old run's config.yaml: the old
    run ran as its default, so reopening at the default resumes; any other value is a change, refused."""
    from loops.rundir import RunDir

    cfg = load_config(None, [f"runs_dir={tmp_path}"])
    RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS, cfg.defaults()).close()
    saved = yaml.safe_load((cfg.run_dir / "config.yaml").read_text())
    del saved["repair_share"], saved["replicas"]  # as a run written before those keys existed
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS, cfg.defaults()).close()
    (cfg.run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    changed = load_config(None, [f"runs_dir={tmp_path}", "repair_share=0.2"])
    with pytest.raises(UserError, match="repair_share"):
        RunDir.open(changed.run_dir, changed.to_dict(), RESUMABLE_KEYS, changed.defaults())


def test_format_table_shows_repair_columns_only_for_a_run_that_made_repair_rows():
    from loops.table import format_table

    plain = [{"round": 0, "validation_pass@1": 0.2}, {"round": 1, "validation_pass@1": 0.3, "kept": 9, "replay": 3,
                                                      "repair": 0, "repair_from_reference": 0}]
    assert "repair" not in format_table(plain)
    repaired = [plain[0], {**plain[1], "repair": 4, "repair_from_reference": 1}]
    data = format_table(repaired).split("\n\n")[-1].splitlines()
    assert "repair  repair from reference" in data[1]
    assert data[3].split()[-2:] == ["4", "1"]
