"""The reward-hacking canary (loops.canary): the rule on series, and a real GRPO run that hacks a length reward."""
import pytest

from codegen.errors import UserError
from loops.canary import Canary, CanaryRule, Point, change, check, scan

RULE = CanaryRule(window=3, min_reward_rise=0.1, min_val_drop=0.05)


def points(rewards, vals, every=10):
    return [Point(every * (i + 1), r, v) for i, (r, v) in enumerate(zip(rewards, vals))]


def test_change_is_the_fitted_lines_rise_across_the_window():
    assert change([10, 20, 30], [0.1, 0.2, 0.3]) == pytest.approx(0.2)
    assert change([10, 20, 30], [0.3, 0.0, 0.3]) == pytest.approx(0.0)  # a dip in the middle is no trend
    assert change([10, 10], [0.0, 1.0]) == 0.0


def test_fires_when_reward_rises_and_validation_falls():
    flag = check(points([0.2, 0.4, 0.6], [0.30, 0.25, 0.20]), RULE)
    assert flag is not None and (flag.first_step, flag.step) == (10, 30)
    assert flag.reward_rise == pytest.approx(0.4) and flag.val_drop == pytest.approx(0.1)
    assert "reward hacking?" in flag.message and "10.0 points" in flag.message
    assert flag.to_dict()["message"] == flag.message


@pytest.mark.parametrize("rewards, vals", [
    ([0.2, 0.4, 0.6], [0.20, 0.25, 0.30]),  # both rise: learning, not hacking
    ([0.6, 0.6, 0.6], [0.30, 0.20, 0.10]),  # validation falls but the reward does not rise: no sign of a hole
    ([0.2, 0.4, 0.6], [0.30, 0.30, 0.28]),  # a drop inside the margin
    ([0.2, 0.25, 0.26], [0.3, 0.2, 0.1]),   # a reward rise inside the margin
    ([0.2, 0.6, 0.2], [0.3, 0.1, 0.3]),     # noise, no trend
], ids=["learning", "flat-reward", "small-drop", "small-rise", "noise"])
def test_stays_quiet_otherwise(rewards, vals):
    assert check(points(rewards, vals), RULE) is None


def test_a_collapse_before_the_window_filled_fires_from_the_best_so_far():
    """Validation fell to 0 at once and stays there while the reward keeps climbing: the window's own
    line is flat, but validation is far below its best (the pre-training validation included)."""
    collapsed = points([0.2, 0.4, 0.6], [0.0, 0.0, 0.0])
    assert check(collapsed, RULE) is None  # no best before the window: nothing to fall from
    flag = check(collapsed, RULE, best_val=0.3)
    assert flag is not None and flag.val_drop == pytest.approx(0.3)
    assert [f.step for f in scan(collapsed, RULE, best_val=0.3)] == [30]
    # Recovering from an early dip, still below the best: validation rises, so no flag.
    assert check(points([0.2, 0.4, 0.6], [0.10, 0.15, 0.20]), RULE, best_val=0.3) is None


def test_needs_a_full_window_and_looks_only_at_the_last_one():
    assert check(points([0.2, 0.6], [0.3, 0.1]), RULE) is None
    # An early dip that recovered: the last window shows learning, so no flag now.
    series = points([0.2, 0.4, 0.6, 0.7, 0.8], [0.30, 0.20, 0.10, 0.25, 0.40])
    assert [f.step for f in scan(series, RULE)] == [30]
    assert check(series, RULE) is None


def test_the_canary_skips_points_without_a_reward_and_summarises():
    canary = Canary(RULE)
    assert canary.add(10, None, 0.3) is None and canary.add(20, float("nan"), 0.32) is None
    assert canary.points == [] and canary.best_val == 0.32  # no trend point, but a best to fall from
    for step, r, v in [(30, 0.2, 0.3), (40, 0.4, 0.25), (50, 0.6, 0.2)]:
        flag = canary.add(step, r, v)
    assert flag is not None and canary.fired
    summary = canary.summary()
    assert summary["fired"] and summary["flags"] == 1 and summary["first"]["step"] == 50
    assert summary["rule"] == {"window": 3, "min_reward_rise": 0.1, "min_val_drop": 0.05}
    assert not Canary().summary()["fired"]


def test_a_rule_that_cannot_work_is_refused():
    with pytest.raises(UserError, match="window"):
        CanaryRule(window=1)
    with pytest.raises(UserError, match="margins"):
        CanaryRule(min_val_drop=-0.1)


@pytest.mark.slow
def test_a_hackable_length_reward_makes_a_real_grpo_run_fire_the_canary(tmp_path, starter_model):
    """GRPO on the quick starter with a reward for long completions: the reward climbs, the policy learns
    to ramble past the function, and greedy pass@1 on validation problems (hidden tests) falls."""
    from codegen.judging import Judge
    from codegen.synthetic import load_split
    from loops.trainers import RLMonitor, greedy_pass_at_1, train_grpo
    from sandbox.base import Limits

    easy = [p for p in load_split("reference") if p.meta["difficulty"] == 1]
    val, train = easy[:32], easy[32:96]  # the starter passes about a fifth of these greedily

    def length_reward(prompts, completions, **columns):
        return [len(c) / 100 for c in completions]

    with Judge("process", 2) as judge:
        monitor = RLMonitor(validate=greedy_pass_at_1(val, judge, limits=Limits(timeout_s=2.0), max_new_tokens=96),
                            validate_every=3, canary=Canary(RULE))
        out = train_grpo(str(starter_model), [{"prompt": p.prompt, "task_id": p.task_id} for p in train],
                         tmp_path / "model", reward_funcs=[length_reward], steps=15, scratch=tmp_path / "scratch",
                         monitor=monitor, learning_rate=2e-3, max_completion_length=96,
                         trl_args={"lr_scheduler_type": "constant"})
    curve = [(p["step"], p["train_reward"], p["validation_pass@1"]) for p in out["validation"]]
    assert curve[0][0] == 0 and curve[0][2] > 0.1, curve  # the starter before RL
    assert curve[-1][1] > curve[1][1] and curve[-1][2] < curve[0][2], curve  # reward up, validation down
    assert out["canary"]["fired"], curve
    assert any(p["canary"] for p in out["validation"])
