"""`itercode loop rewardranker` (loops.rewardranker): its config, the reranker's data (pairs, hard negatives,
the two variants), the LEVER combination and pairwise accuracy, the tables, and a real 2-iteration run (hf
sampler, process sandbox, TRL's RewardTrainer and GRPOTrainer on the quick starter) killed with SIGKILL inside
every stage of an iteration and resumed: no finished stage redone, no evaluation problem in any pair, hard
negative or RL row, and `itercode eval --rerank` ranking with the log-prob weight the loop chose."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samples import Sample
from loops.grpo_config import GRPOConfig
from loops.rewardranker_config import RewardRankerConfig, load_rewardranker_config
from rerankers.combined import choose_logprob_weight, combined_scores, pairwise_accuracy
from rerankers.data import HeldOutLeakError, Pair
from test_grpo_loop import problem_files  # noqa: F401  (a module fixture)

from conftest import slow_unlabeled_copy

from runstate import kill_inside_stages, read_jsonl, read_state, resume_to_the_end

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ config
def test_config_defaults_are_the_grpo_loops_plus_the_reranker():
    cfg = load_rewardranker_config(None)
    assert (cfg.iterations, cfg.reward, cfg.hard_negatives, cfg.reranker_base) == (2, "reranker", "with_positives",
                                                                                   "policy")
    assert cfg.reward_weights == {"reranker": 1.0} and cfg.reward_name == "reranker" and cfg.num_iterations == 2
    shared = [k for k in GRPOConfig.model_fields if k not in ("name", "reward")]
    assert {k: getattr(cfg, k) for k in shared} == {k: getattr(GRPOConfig(), k) for k in shared}
    mixed = load_rewardranker_config(None, ["reward={reranker: 1, examples: 0.5}", "hard_negatives=only"])
    assert mixed.reward_name == "reranker+0.5examples" and mixed.hard_negatives == "only"
    train = load_rewardranker_config(None, ["reranker_learning_rate=3e-4", "train_threads=2"]).train_config
    assert train.learning_rate == pytest.approx(3e-4) and train.threads == 2 and train.feedback == "examples"


def test_every_sandbox_the_loop_makes_runs_on_the_loops_ray_cluster():
    """The reranker's example feedback (in training, scoring and the rerank stage) runs where the
    loop's rewards run: the loop's ``ray_address``, not only $RAY_ADDRESS."""
    from rerankers.feedback import ExampleRunner

    cfg = load_rewardranker_config(None, ["executor=ray", "ray_address=ray://head:10001"])
    assert cfg.train_config.sandbox == "ray"
    assert cfg.train_config.sandbox_options == {"address": "ray://head:10001"}
    runner = ExampleRunner(cfg.executor, cfg.workers, options=cfg.executor_options)
    assert (runner.judge.backend_name, runner.judge.options) == ("ray", {"address": "ray://head:10001"})
    runner.close()  # never started: nothing to stop


def test_rewardranker_yaml_is_valid_and_follows_the_protocol():
    cfg = load_rewardranker_config(REPO / "configs" / "rewardranker.yaml")
    assert cfg.iterations == 2 and cfg.base_model == "starter" and cfg.validation == "synthetic:validation"
    assert "synthetic:test-fresh" in cfg.test and cfg.logprob_weights[0] == 0


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["iterations=0"], "iterations must be >= 1"),
        (["hard_negatives=some"], "hard_negatives must be one of only, with_positives"),
        (["reward=pass"], "reward must give the reranker a weight > 0"),
        (["reward={reranker: 1, length: 1}"], "reward kind(s) 'length' unknown"),
        (["n_samples=1"], "n_samples must be >= 2"),
        (["reranker_feedback=tests"], "reranker_feedback must be one of examples, none"),
        (["logprob_weights=[]"], "logprob_weights must be a non-empty list"),
        (["logprob_weights=[-1]"], "logprob_weights must be a non-empty list of numbers >= 0"),
        (["reranker_epochs=0"], "reranker_epochs must be > 0"),
        (["reranker_min_steps=-1"], "reranker_min_steps must be >= 0"),
        (["sample_temperature=0"], "sample_temperature must be > 0"),
        (["num_generations=1"], "num_generations must be >= 2"),  # the GRPO loop's rules hold
        (["unlabeled=synthetic:validation"], "unlabeled=synthetic:validation is the validation split"),
        (["validation=synthetic:heldout"], "validation=synthetic:heldout is a test split"),
        (["iteratons=1"], "did you mean 'iterations'"),
    ],
)
def test_config_errors_name_the_key_and_the_fix(overrides, fragment):
    with pytest.raises(UserError) as e:
        load_rewardranker_config(None, overrides)
    assert fragment in str(e.value) and str(e.value).startswith("invalid RewardRanker config")


# ------------------------------------------------------------------ LEVER and pairwise accuracy (pure logic)
def _problem(tid: str) -> Problem:
    prompt = f"def f(xs):\n    \"\"\"{tid}\"\"\"\n"
    return Problem(task_id=tid, prompt=prompt, code_prefix=prompt, tests="def check(c): pass", entry_point="f")


def _group(tid, rows):
    """(problem, samples, passed) from (completion, passed, mean_logprob) rows."""
    samples = [Sample(tid, text, sample_id=f"{tid}#{i}", mean_logprob=lp) for i, (text, _, lp) in enumerate(rows)]
    return _problem(tid), samples, [ok for _, ok, _ in rows]


def test_the_log_prob_weight_is_chosen_on_validation_and_a_tie_keeps_the_reranker_alone():
    # Problem a: the reranker prefers a failing candidate the policy was unsure of; the log-prob fixes it.
    a = _group("a", [("x", True, -0.2), ("y", False, -1.5)])
    b = _group("b", [("x", False, -0.1), ("y", True, -0.5)])  # here the reranker is right and the log-prob misleads
    scores = {"a": [0.0, 1.0], "b": [0.0, 2.0]}
    assert combined_scores(scores["a"], a[1], 1.0) == pytest.approx([-0.2, -0.5])
    weight, rates = choose_logprob_weight([a, b], scores, [0, 1, 8])
    assert weight == 1.0 and rates == {"0": 0.5, "1": 1.0, "8": 0.5}
    weight, rates = choose_logprob_weight([b], {"b": scores["b"]}, [2, 0, 1])  # every w up to 2 ties: the smallest
    assert weight == 0.0 and rates["0"] == 1.0
    no_logprobs = [(p, [Sample(s.task_id, s.completion) for s in ss], ok) for p, ss, ok in (a, b)]
    assert choose_logprob_weight(no_logprobs, scores)[0] == 0.0
    assert combined_scores([1.0], [Sample("a", "x")], 0.5) == [-math.inf]  # no log-prob: last when it counts
    with pytest.raises(UserError, match="non-empty list of numbers >= 0"):
        choose_logprob_weight([a], scores, [])


def test_pairwise_accuracy_counts_distinct_programs_ties_half_and_masks_infra_errors():
    p, ss, ok = _group("a", [("good", True, None), ("bad", False, None), ("bad  ", False, None),
                             ("worse", False, None), ("host", False, None)])
    scores = {"a": [1.0, 1.0, 5.0, 0.0, 9.0]}
    # "bad  " is "bad" again (first kept, scored 1.0: a tie); "host" was an infra error: left out.
    got = pairwise_accuracy([(p, ss, ok)], scores, {"a#4": "infra_error"})
    assert got == {"accuracy": 0.75, "pairs": 2, "problems": 1}
    assert pairwise_accuracy([_group("b", [("x", True, None)])], {"b": [0.0]})["accuracy"] is None


# ------------------------------------------------------------------ the reranker's data (pure logic)
class ByLength:
    """A stand-in reranker for the data logic: the longer the completion, the higher the score."""

    def score_problems(self, items, progress=False):
        return [[float(len(c)) for c in cands] for _, cands in items]


def _judged(round_, rows):
    """(task, completion, status) rows -> samples and verdicts with the loop's round-unique ids."""
    from loops.rewardranker_pairs import with_round_ids

    samples = [Sample(t, c, sample_id=f"{t}#{i}") for i, (t, c, _) in enumerate(rows)]
    results = [{"sample_id": s.sample_id, "task_id": s.task_id, "status": st, "passed": st == "passed"}
               for s, (_, _, st) in zip(samples, rows)]
    return with_round_ids(samples, results, round_)


def test_reranker_pairs_round_one_then_hard_negatives_in_both_variants():
    from loops.rewardranker_pairs import reranker_pairs

    unlabeled = [_problem("u/a"), _problem("u/b")]
    first = _judged(1, [("u/a", "    return 1\n", "passed"), ("u/a", "    return 0\n", "failed"),
                        ("u/b", "    return xs\n", "passed"), ("u/b", "    return None\n", "failed")])
    # The RL policy's samples: on u/a a long failing program the length scorer ranks first (a hard negative) and a
    # new passing one; on u/b no pass at all: its hard negative pairs with round 1's passing program.
    second = _judged(2, [("u/a", "    return sorted(xs)[::-1]\n", "failed"), ("u/a", "    return 2 - 1\n", "passed"),
                         ("u/a", "    return 3\n", "failed"),
                         ("u/b", "    return list(reversed(xs))\n", "failed"), ("u/b", "    return 7\n", "infra_error")])
    cfg = RewardRankerConfig(negatives_per_problem=1, positives_per_negative=2)
    pairs1, new1, hard1 = reranker_pairs(cfg, 1, unlabeled, [first], [], None, [])
    assert hard1 == [] and pairs1 == new1 and {p.task_id for p in pairs1} == {"u/a", "u/b"}
    assert {p.chosen_id for p in pairs1} == {"round-1/u/a#0", "round-1/u/b#2"}

    only, fresh, hard = reranker_pairs(cfg.model_copy(update={"hard_negatives": "only"}), 2, unlabeled,
                                       [first, second], pairs1, ByLength(), [])
    assert fresh == [] and only[: len(pairs1)] == pairs1  # earlier pairs first, kept whole
    assert [(p.task_id, p.rejected_id) for p in hard] == [("u/a", "round-2/u/a#0"), ("u/a", "round-2/u/a#0"),
                                                          ("u/b", "round-2/u/b#3")]
    assert {p.chosen_id for p in hard if p.task_id == "u/a"} == {"round-2/u/a#1", "round-1/u/a#0"}
    assert [p.chosen_id for p in hard if p.task_id == "u/b"] == ["round-1/u/b#2"]  # from the earlier pool
    assert all(p.source == "hard_negative" for p in hard) and len(only) == len(pairs1) + len(hard)
    assert not any("u/b#4" in p.rejected_id for p in only)  # the infra error is no negative

    both, fresh, hard2 = reranker_pairs(cfg, 2, unlabeled, [first, second], pairs1, ByLength(), [])
    assert hard2 == hard and fresh and {p.task_id for p in fresh} == {"u/a"}  # u/b had no new pass to pair
    assert len(both) == len({(p.task_id, p.chosen, p.rejected) for p in pairs1 + fresh + hard})  # merged once


def test_no_evaluation_problem_enters_the_rerankers_pairs():
    """Point 7 at the data layer: the samples of a validation problem are refused before any pair is
    built, and the pairs are checked again against every evaluation split before training."""
    from loops.rewardranker_pairs import check_reranker_pairs, reranker_pairs

    unlabeled, validation = [_problem("u/a")], [_problem("v/a")]
    leaked = _judged(1, [("v/a", "    return 1\n", "passed"), ("v/a", "    return 0\n", "failed")])
    with pytest.raises(HeldOutLeakError, match="v/a"):
        reranker_pairs(RewardRankerConfig(), 1, unlabeled + validation, [leaked], [], None, ["v/a"])
    splits = {"unlabeled": unlabeled, "validation": validation, "test": {"heldout": [_problem("h/a")]}}
    check_reranker_pairs([Pair("u/a", "p", "c", "r")], splits)
    with pytest.raises(HeldOutLeakError, match="'h/a', a problem of the test split heldout"):
        check_reranker_pairs([Pair("u/a", "p", "c", "r"), Pair("h/a", "p", "c", "r", source="hard_negative")], splits)
    with pytest.raises(HeldOutLeakError, match="validation"):
        check_reranker_pairs([Pair("v/a", "p", "c", "r")], splits)
    with pytest.raises(UserError, match="'r/a', which is not an unlabeled problem"):
        check_reranker_pairs([Pair("r/a", "p", "c", "r")], splits)


# ------------------------------------------------------------------ tables
def test_the_table_shows_the_reranker_and_each_splits_picks():
    from loops.table import format_points, format_table

    rows = [{"round": 0, "validation_pass@1": 0.3, "validation_pick_rule": 0.5, "validation_pick_logprob": 0.4,
             "validation_oracle_pass@n": 0.7},
            {"round": 1, "iteration": 1, "validation_pass@1": 0.4, "validation_pick_reranker": 0.55,
             "validation_pick_reranker_logprob": 0.6, "validation_pick_rule": 0.5, "validation_oracle_pass@n": 0.8,
             "heldout_pass@1": 0.2, "heldout_pick_reranker": 0.3, "heldout_pick_rule": 0.25,
             "reranker_pairs": 40, "hard_negatives": 0, "validation_pairwise_accuracy": 0.71, "logprob_weight": 0.5}]
    table = format_table(rows)
    assert "preference pairs" not in table  # the reranker's pairs are not DPO's
    block = table.split("the reranker of each iteration")[1].split("\n\n")[0].splitlines()
    assert "pairwise accuracy (validation candidates)" in block[1] and block[2].split()[:2] == ["1", "40"]
    assert len(block) == 3  # round 0 trained no reranker
    val = table.split("reranked pass@1 on validation")[1].split("\n\n")[0].splitlines()
    assert "reranker + w*log-prob" in val[1] and "rule: examples, then log-prob" in val[1]
    assert val[3].split()[:5] == ["1", "40.0", "55.0", "60.0", "50.0"]
    assert "reranked pass@1 on heldout" in table and "heldout" not in table.split("test splits")[0]
    points = format_points([{"iteration": 1, "step": 0, "train_reward": None, "validation_pass@1": 0.5},
                            {"iteration": 2, "step": 0, "train_reward": None, "validation_pass@1": 0.25}])
    assert points.splitlines()[1].split()[:2] == ["iteration", "step"] and points.splitlines()[3].split()[0] == "2"
    assert "iteration" not in format_points([{"step": 0, "train_reward": None, "validation_pass@1": 0.5}])


def test_loop_cli_rejects_a_bad_rewardranker_config_and_lists_the_loop():
    proc = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "rewardranker", "iterations=0",
                           "hard_negatives=all"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert "iterations must be >= 1" in proc.stderr and "hard_negatives must be one of" in proc.stderr
    helped = subprocess.run([sys.executable, "-m", "codegen.app.cli", "loop", "rewardranker", "--help"], cwd=REPO,
                            capture_output=True, text=True)
    assert helped.returncode == 0 and "configs/rewardranker.yaml" in helped.stdout


# ------------------------------------------------------------------ a real run, killed in every stage
def rr_overrides(runs_dir: Path, problem_files: Path, starter_model, **extra) -> list[str]:  # noqa: F811
    values = dict(name="r", runs_dir=str(runs_dir), base_model=str(starter_model),
                  reference=str(problem_files / "reference.jsonl"), unlabeled=str(problem_files / "unlabeled.jsonl"),
                  validation=str(problem_files / "validation.jsonl"), test=f"[{problem_files / 'heldout.jsonl'}]",
                  sampler="hf", n_samples=4, eval_n=3, eval_ks="[1,2]", probe_problems=4, max_tokens=64,
                  max_completion_length=64, num_generations=4, prompts_per_step=2, steps=4, validate_every=2,
                  learning_rate=1e-3, reranker_epochs=1, reranker_min_steps=0, reranker_batch_size=8, reranker_learning_rate=1e-3,
                  reranker_max_length=256, workers=2, progress="false")
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def rr_command(overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "codegen.app.cli", "loop", "rewardranker", *overrides]




KILL_AT = ["round-1/sample", "round-1/execute", "round-1/reranker", "round-1/rl", "round-1/evaluate", "round-1/test",
           "round-1/rerank", "round-2/reranker"]  # every stage of an iteration, and a hard-negative round


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, problem_files, starter_model):  # noqa: F811
    """The real loop (2 iterations) killed with SIGKILL inside each stage of `KILL_AT` in turn, then run to
    the end. Returns the run's root, the problem files, what each kill saw, and the last run's stdout."""
    tmp = tmp_path_factory.mktemp("rewardranker")
    # A slow execute stage and a verdict cache of its own: killable inside execute whatever ran before.
    unlabeled = slow_unlabeled_copy(problem_files / "unlabeled.jsonl", tmp / "unlabeled.jsonl")
    overrides = rr_overrides(tmp / "runs", problem_files, starter_model, unlabeled=str(unlabeled))
    root = tmp / "runs" / "r"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ITERCODE_CACHE": str(tmp / "verdicts")}
    # Checkpoint directories as each kill left them (read before the next start).
    kills = [{"target": kill.target, "before": kill.before, "after": kill.after, "output": kill.output,
              "model_dirs": sorted(str(p.relative_to(root)) for p in root.rglob("model.safetensors"))}
             for kill in kill_inside_stages(rr_command(overrides), root, KILL_AT, env, settle=lambda target: 0.1)]
    done, _ = resume_to_the_end(rr_command(overrides), root, env, timeout=1200)  # nothing finished redone
    return {"root": root, "problems": problem_files, "unlabeled": unlabeled, "kills": kills, "stdout": done.stdout}


@pytest.mark.slow
def test_rewardranker_resumes_after_sigkill_in_every_stage(killed_run):
    root, kills = killed_run["root"], killed_run["kills"]
    # kill_inside_stages checked each kill (inside its target, nothing finished redone), resume_to_the_end
    # the last run (nothing finished redone, every stage done).
    for kill in kills:
        target = kill["target"]
        if target.endswith(("/reranker", "/rl")):  # a checkpoint appears whole or not at all
            assert not any(d.startswith(target) for d in kill["model_dirs"]), target
    state = read_state(root)
    for target in KILL_AT:  # killed once, finished on the next attempt
        assert state["stages"][target]["attempts"] == 2, target
    assert "round 1 rerank: done already, skipped" in killed_run["stdout"]
    expected = {f"round-0/{s}" for s in ("evaluate", "test", "rerank")}
    expected |= {f"round-{k}/{s}" for k in (1, 2)
                 for s in ("sample", "execute", "reranker", "rl", "evaluate", "test", "rerank")}
    assert set(state["stages"]) == expected
    assert not [p for p in root.rglob("*") if p.name.startswith(".tmp")]  # no scratch or half-written dir left


@pytest.mark.slow
def test_rewardranker_reports_each_iteration(killed_run):
    root = killed_run["root"]
    rows = read_jsonl(root / "metrics.jsonl")
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in rows:
        assert 0 <= r["validation_pass@1"] <= r["validation_pass@2"] <= 1 and "heldout_pass@1" in r
        for split in ("validation", "heldout"):  # the no-learning pickers on the policy's own candidates
            assert 0 <= r[f"{split}_pick_rule"] <= r[f"{split}_oracle_pass@n"] <= 1
    for r in rows[1:]:
        for split in ("validation", "heldout"):
            assert 0 <= r[f"{split}_pick_reranker"] <= 1 and 0 <= r[f"{split}_pick_reranker_logprob"] <= 1
        assert r["validation_pairwise_pairs"] >= 0 and r["logprob_weight"] in RewardRankerConfig().logprob_weights
        assert r["algo"] == "grpo" and r["completions"] == 4 // 2 * 2 * 4  # a generation every num_iterations steps
        assert r["canary_fired"] in (True, False) and r["reranker_pairs"] > 0
    assert rows[1]["hard_negatives"] == 0 and rows[2]["hard_negative_pairs"] >= rows[2]["hard_negatives"] >= 0
    assert rows[2]["reranker_pairs"] >= rows[1]["reranker_pairs"]  # earlier pairs are kept
    assert rows[2]["completions_so_far"] == 2 * (16 * 4 + 16)
    # RL starts again from the base policy in every iteration; the sampler of iteration 2 was RL policy 1.
    lineage = json.loads((root / "lineage.json").read_text())
    assert [e["parent"] for e in lineage[1:]] == [lineage[0]["model"]] * 2
    assert read_state(root)["stages"]["round-2/sample"]["info"]["model"] == lineage[1]["model"]
    # The weight the rerank stage chose sits in the reranker's own reranker.json.
    meta = json.loads((root / "round-2" / "reranker" / "reranker" / "reranker.json").read_text())
    assert meta["logprob_weight"] == rows[2]["logprob_weight"] and meta["iteration"] == 2
    assert meta["logprob_weight_chosen_on"]["candidates"] == "round-2/evaluate/samples.jsonl"
    points = read_jsonl(root / "steps.jsonl")
    assert [(p["iteration"], p["step"]) for p in points] == [(k, s) for k in (1, 2) for s in (0, 2, 4)]
    show = subprocess.run([sys.executable, "-m", "codegen.app.cli", "runs", "show", str(root)], cwd=REPO,
                          capture_output=True, text=True)
    assert show.returncode == 0, show.stderr
    for fragment in ("the reranker of each iteration", "reranked pass@1 on heldout", "rule: examples, then log-prob",
                     "hard negatives mined", "reward-hacking canary", "iteration  step"):
        assert fragment in show.stdout, fragment
    from loops.rewardranker import load_summary

    summary = load_summary(root)["rounds"]
    assert summary[2]["heldout_reranked_pass@1"] == rows[2]["heldout_pick_reranker"]
    assert summary[0]["heldout_no_learning_rule_pass@1"] == rows[0]["heldout_pick_rule"]


def _ids(path: Path) -> set[str]:
    return {json.loads(line)["task_id"] for line in path.read_text().splitlines()}


@pytest.mark.slow
def test_no_evaluation_problem_enters_any_pair_hard_negative_or_rl_row(killed_run):
    """Point 7 on a real run: the reranker's pairs, its hard negatives, the samples they came from and the RL
    rows are all of unlabeled problems; no validation, test or reference problem is in any of them."""
    root, files = killed_run["root"], killed_run["problems"]
    unlabeled = _ids(killed_run["unlabeled"])
    held = {split: _ids(files / f"{split}.jsonl") for split in ("validation", "heldout", "reference")}
    for k in (1, 2):
        trained = {
            "pairs": _ids(root / f"round-{k}" / "reranker" / "pairs.jsonl"),
            "samples": _ids(root / f"round-{k}" / "sample" / "samples.jsonl"),
            "rl rows": _ids(root / f"round-{k}" / "rl" / "train.jsonl"),
            "reranker.json": set(json.loads((root / f"round-{k}" / "reranker" / "reranker" / "reranker.json")
                                            .read_text())["trained_task_ids"]),
        }
        hard = root / f"round-{k}" / "reranker" / "hard_negatives.jsonl"
        trained["hard negatives"] = _ids(hard) if hard.read_text() else set()
        assert trained["pairs"] and trained["rl rows"] == unlabeled
        for what, ids in trained.items():
            assert ids <= unlabeled, (k, what)
            for split, evaluation in held.items():
                assert not ids & evaluation, (k, what, split)
    # The candidates every pick and accuracy was measured on are evaluation problems alone.
    assert _ids(root / "round-2" / "test" / "results.jsonl") == held["heldout"]


@pytest.mark.slow
def test_eval_rerank_ranks_with_the_weight_the_loop_chose(killed_run):
    root, files = killed_run["root"], killed_run["problems"]
    reranker = root / "round-2" / "reranker" / "reranker"
    weight = json.loads((reranker / "reranker.json").read_text())["logprob_weight"]
    cmd = [sys.executable, "-m", "codegen.app.cli", "eval", "--problems", str(files / "heldout.jsonl"), "--samples",
           str(root / "round-2" / "test" / "samples.jsonl"), "--out", str(root.parent / "eval.jsonl"), "--k", "1",
           "--rerank", str(reranker), "--json"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)["rerank"]
    assert report["logprob_weight"] == weight and 0 <= report["reranked_logprob_pass@1"] <= 1
    rows = read_jsonl(root / "metrics.jsonl")
    assert report["reranked_pass@1"] == rows[2]["heldout_pick_reranker"]  # the loop's figure, measured again
    assert report["reranked_logprob_pass@1"] == rows[2]["heldout_pick_reranker_logprob"]
    assert report["examples_logprob_pick"] == rows[2]["heldout_pick_rule"]
    override = subprocess.run(cmd[:-1] + ["--rerank-logprob-weight", "4"], cwd=REPO, capture_output=True, text=True,
                              timeout=300)
    assert override.returncode == 0 and "score + 4 x mean log-prob" in override.stdout
    bad = subprocess.run(cmd[:-3] + ["--rerank-logprob-weight", "1"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode == 2 and "give it with --rerank DIR" in bad.stderr
