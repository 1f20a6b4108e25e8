"""The policy RL step (loops.trainers.train_grpo): TRL's real GRPO and RLOO trainers, a few steps on the quick
starter, with execution rewards from the real process sandbox; and the monitor's bookkeeping."""
import json

import pytest

from codegen.errors import UserError
from loops.canary import Canary, CanaryRule
from loops.trainers import RLMonitor, train_grpo

STATUS = "status/exec_pass+0.5examples/tests/"  # status/<reward name>/<source>/<status>


class ConfigSeen:
    """A TrainerCallback that keeps the config the trainer actually ran with."""

    def __init__(self):
        from transformers import TrainerCallback

        seen = self

        class _Seen(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                seen.args = args

        self.callback = _Seen()


@pytest.fixture(scope="module")
def problems():
    from codegen.synthetic import load_split

    return [p for p in load_split("reference") if p.meta["difficulty"] == 1][:24]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["grpo", "rloo"])
def test_a_few_real_steps_with_execution_rewards(tmp_path, starter_model, problems, algo):
    from transformers import AutoModelForCausalLM

    from codegen.execution_rewards import execution_reward
    from codegen.judging import Judge
    from loops.trainers import greedy_pass_at_1
    from sandbox.base import Limits

    limits = Limits(timeout_s=2.0)
    train, val = problems[:16], problems[16:]
    lines = []
    seen = ConfigSeen()
    with Judge("process", 2) as judge:
        reward = execution_reward({"pass": 1.0, "examples": 0.5}, judge, train, limits, stop=["\ndef "])
        monitor = RLMonitor(validate=greedy_pass_at_1(val, judge, limits=limits, max_new_tokens=96), validate_every=2,
                            on_record=lambda r: lines.append(json.dumps(r)))
        out = train_grpo(str(starter_model), [{"prompt": p.prompt, "task_id": p.task_id} for p in train],
                         tmp_path / "model", reward_funcs=[reward], steps=4, scratch=tmp_path / "scratch", algo=algo,
                         num_generations=4, prompts_per_step=2, learning_rate=1e-4, max_completion_length=96,
                         monitor=monitor, callbacks=[seen.callback])
    # The config the trainer held: the PPO clip is active (old log-probs recomputed), TRL's class for the algo.
    assert seen.args.num_iterations == 2 and out["num_iterations"] == 2
    assert type(seen.args).__name__ == {"grpo": "GRPOConfig", "rloo": "RLOOConfig"}[algo]
    assert out["beta"] == {"grpo": 0.0, "rloo": 0.05}[algo]  # TRL's default per algo when beta is not given
    # Rewards came back: one generation per num_iterations steps, 8 completions each.
    assert len(out["rewards"]) == 2 and out["completions"] == 16
    assert all(0.0 <= r <= 1.5 for r in out["rewards"])
    generated = [r for r in monitor.records if r["kind"] == "train" and "reward" in r]
    assert [r["step"] for r in generated] == [1, 3]
    for r in generated:  # the status rates of that step's batch, logged beside its reward
        rates = [r[STATUS + s] for s in ("passed", "failed", "error", "timeout", "oom", "infra_error")]
        assert sum(rates) == pytest.approx(1.0) and "rewards/exec_pass+0.5examples/mean" in r
    assert all("clip_ratio/region_mean" in r for r in monitor.records if r["kind"] == "train" and r["step"] > 0)
    # Validation at steps 0, 2, 4 beside the interval's training reward; every record went to the sink.
    assert [p["step"] for p in out["validation"]] == [0, 2, 4]
    assert all(0.0 <= p["validation_pass@1"] <= 1.0 for p in out["validation"])
    assert out["validation"][1]["train_reward"] == pytest.approx(out["rewards"][0])
    assert len(lines) == len(monitor.records)
    # The model was saved, whole, with its tokenizer, and nothing is left in scratch.
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "model") is not None
    assert (tmp_path / "model" / "tokenizer.json").exists() and not (tmp_path / "scratch").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir of atomic_dir left


def test_bad_arguments_are_refused_before_anything_loads(tmp_path):
    rows = [{"prompt": "def f():\n", "task_id": "t"}]
    common = dict(reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)], scratch=tmp_path / "s")
    with pytest.raises(UserError) as e:
        train_grpo("unused", rows, tmp_path / "m", steps=0, algo="ppo", num_generations=1, num_iterations=0, **common)
    for fragment in ("algo 'ppo'", "steps must", "num_generations must", "num_iterations must"):
        assert fragment in str(e.value)
    with pytest.raises(UserError, match="prompt"):
        train_grpo("unused", [{"task_id": "t"}], tmp_path / "m", steps=1, **common)
    with pytest.raises(UserError, match="reward function"):
        train_grpo("unused", rows, tmp_path / "m", steps=1, reward_funcs=[], scratch=tmp_path / "s")


@pytest.mark.slow
def test_unknown_trl_fields_are_named(tmp_path, starter_model):
    with pytest.raises(UserError, match="num_iteration .*GRPOConfig"):
        train_grpo(str(starter_model), [{"prompt": "def f():\n"}], tmp_path / "m", steps=1, scratch=tmp_path / "s",
                   reward_funcs=[lambda prompts, completions, **kw: [0.0] * len(prompts)],
                   trl_args={"num_iteration": 3})
    assert not (tmp_path / "m").exists()


def test_monitor_records_steps_and_validates_at_a_fixed_interval():
    vals = iter([0.40, 0.35, 0.30, 0.20, 0.10])
    seen = []
    monitor = RLMonitor(validate=lambda model, tok: next(vals), validate_every=2, on_record=seen.append,
                        canary=Canary(CanaryRule(window=3, min_reward_rise=0.1, min_val_drop=0.05)))
    monitor.train_begin(None, None)
    for step in range(1, 9):
        logs = {"loss": 0.1, "reward": 0.1 * step} if step % 2 else {"loss": 0.1}  # a reward on generating steps
        monitor.log(step, logs)
    monitor.log(8, {"train_runtime": 1.0})  # the end-of-run summary is not a step
    monitor.train_end(8, None, None)  # step 8 is validated already
    assert [p["step"] for p in monitor.points] == [0, 2, 4, 6, 8]
    assert [p["train_reward"] for p in monitor.points] == pytest.approx([None, 0.1, 0.3, 0.5, 0.7])
    assert [bool(p["canary"]) for p in monitor.points] == [False, False, False, True, True]
    assert monitor.canary.fired and len(monitor.canary.points) == 4  # step 0 has no reward: not a trend point
    assert len([r for r in seen if r["kind"] == "train"]) == 8 and seen == monitor.records


def test_monitor_validates_the_last_step_and_needs_an_interval():
    calls = []
    monitor = RLMonitor(validate=lambda model, tok: calls.append(1) or 0.5, validate_every=4, validate_at_start=False)
    for step in range(1, 6):
        monitor.log(step, {"reward": 1.0})
    monitor.train_end(5, None, None)
    assert [p["step"] for p in monitor.points] == [4, 5] and len(calls) == 2
    with pytest.raises(UserError, match="validate_every"):
        RLMonitor(validate=lambda model, tok: 0.0)


def test_monitor_validates_late_rather_than_never_when_a_due_step_logged_nothing():
    monitor = RLMonitor(validate=lambda model, tok: 0.5, validate_every=2, validate_at_start=False)
    for step in (1, 3, 5, 6):  # steps 2 and 4 logged nothing
        monitor.log(step, {"reward": 1.0})
    assert [p["step"] for p in monitor.points] == [3, 5, 6]
