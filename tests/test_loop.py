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
from codegen.io import TMP_PREFIX, atomic_dir
from loops.rundir import RunDir
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
        (["rounds=two"], "config key 'rounds' must be of type int"),
        (["rounds=1.5"], "config key 'rounds' must be of type int"),
        (["starter_quick=1"], "must be of type bool"),
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
    text = format_table([{"round": 1, "heldout_pass@1": 0.5, "heldout_pass@5": 0.75, "kept": 12},
                         {"round": 0, "heldout_pass@1": 0.125, "heldout_pass@5": 0.5}])
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["round", "heldout", "pass@1"]
    assert lines[1].split()[:3] == ["0", "12.5", "50.0"] and lines[1].split()[-1] == "-"
    assert lines[2].split() == ["1", "50.0", "75.0", "12"]


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
    return d


def quick_overrides(runs_dir: Path, problem_files: Path, starter_model, **extra) -> list[str]:
    values = dict(name="t", runs_dir=str(runs_dir), base_model=str(starter_model), rounds=1,
                  reference=str(problem_files / "reference.jsonl"), unlabeled=str(problem_files / "unlabeled.jsonl"),
                  heldout=str(problem_files / "heldout.jsonl"), sampler="hf", n_samples=4, max_tokens=64,
                  keep_per_problem=2, train_steps=4, batch_size=4, eval_n=2, eval_ks="[1,2]", probe_problems=4,
                  workers=2, progress="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def loop_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "codegen.app.cli", "loop", "itertl", *overrides]


def read_state(root: Path) -> dict:
    try:
        return json.loads((root / "state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"stages": {}, "running": None}


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
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model)
    root = tmp_path / "runs" / "t"
    targets = ["round-0/evaluate", "round-1/sample", "round-1/execute", "round-1/train", "round-1/evaluate"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for target in targets:
        before = {k: dict(v) for k, v in read_state(root)["stages"].items() if v.get("status") == "done"}
        proc = subprocess.Popen(loop_command(overrides), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 600
        while read_state(root).get("running") != target:
            assert proc.poll() is None, f"loop ended before reaching {target}:\n{proc.stdout.read()}"
            assert time.monotonic() < deadline, f"never reached {target}"
            time.sleep(0.02)
        time.sleep(0.5 if target.endswith("train") else 0.1)  # well inside the stage
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate()[0]
        state = read_state(root)
        assert state["running"] == target and state["stages"][target]["status"] == "running", output
        for key, entry in before.items():  # finished stages were skipped, not redone
            assert state["stages"][key] == entry, f"{key} was redone before the kill at {target}"
        assert f"{target.split('/')[0].replace('-', ' ')} {target.split('/')[1]}: done already" not in output
        assert_no_half_written_artifact(root)

    before = {k: dict(v) for k, v in read_state(root)["stages"].items() if v.get("status") == "done"}
    done = subprocess.run(loop_command(overrides), cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    state = read_state(root)
    for key, entry in before.items():
        assert state["stages"][key] == entry, f"{key} was redone on the final resume"
    assert state["running"] is None
    assert all(v["status"] == "done" for v in state["stages"].values())
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
    overrides = quick_overrides(tmp_path / "runs", problem_files, starter_model, sampler="vllm")
    proc = subprocess.run(loop_command(overrides), cwd=REPO, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.stdout.count("loaded vllm sampler") == 2  # round-0 model, round-1 model
    root = tmp_path / "runs" / "t"
    rows = [json.loads(line) for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1]
    for r in rows:
        assert 0 <= r["heldout_pass@1"] <= r["heldout_pass@2"] <= 1
    assert rows[1]["kept"] > 0 and rows[1]["train_loss"] > 0
    # the checkpoint really moved away from its parent
    from safetensors.torch import load_file

    parent = load_file(str(Path(starter_model) / "model.safetensors"))
    child = load_file(str(root / "round-1" / "train" / "model" / "model.safetensors"))
    assert any(not (parent[k] == child[k]).all() for k in parent)
    show = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert show.returncode == 0 and "heldout pass@1" in show.stdout and "plot.png" in show.stdout
    table_rounds = [line.split()[0] for line in show.stdout.splitlines()[2:] if line[:1].isdigit()]
    assert table_rounds == ["0", "1"]


def test_plot_writes_a_png_atomically(tmp_path):
    from loops.plot import plot_metrics

    rows = [{"round": 0, "heldout_pass@1": 0.2, "heldout_pass@5": 0.4, "reference_pass@1": 0.6},
            {"round": 1, "heldout_pass@1": 0.3, "heldout_pass@5": 0.45, "reference_pass@1": None}]
    out = plot_metrics(rows, tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["plot.png"]
