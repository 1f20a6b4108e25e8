"""The ITERTL loop: config, run directories, resume after SIGKILL, selection, a real tiny loop."""
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
from codegen.samples import Sample
from loops.config import ITERTLConfig, load_config, parse_overrides
from loops.rundir import TMP_PREFIX, RunDir, atomic_dir, resolve_run, write_json_atomic
from loops.table import format_table

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
        (["rounds=two"], "config key 'rounds' must be a int"),
        (["rounds=1.5"], "config key 'rounds' must be a int"),
        (["starter_quick=1"], "must be a bool"),
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
    assert resolve_run(str(tmp_path / "r")) == tmp_path / "r"
    with pytest.raises(UserError, match="no run 'nope'"):
        resolve_run("nope", tmp_path)


def test_format_table_shows_rounds_and_percent():
    text = format_table([{"round": 1, "heldout_pass@1": 0.5, "heldout_pass@5": 0.75, "kept": 12},
                         {"round": 0, "heldout_pass@1": 0.125, "heldout_pass@5": 0.5}])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["round", "heldout", "pass@1"]
    assert lines[1].split()[:3] == ["0", "12.5", "50.0"] and lines[1].split()[-1] == "-"
    assert lines[2].split() == ["1", "50.0", "75.0", "12"]
