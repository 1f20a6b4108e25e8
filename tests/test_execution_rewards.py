"""Rewards that execute (codegen.execution_rewards, rerankers.rewards) on the real process sandbox.

Where a test needs a host failure or a provoked error on demand, a thin
wrapper around the real executor rewrites the verdict of the jobs it marks;
everything else runs for real. The docker test provokes a real one.
"""
import pytest

from codegen.errors import UserError
from codegen.execution_rewards import execution_reward
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.synthetic import load_split
from sandbox import make_executor
from sandbox.base import INFRA_ERROR, Limits, Verdict

LIMITS = Limits(timeout_s=1.0)
PROMPT = 'def inc(x):\n    """Add one.\n\n    >>> inc(1)\n    2\n    """\n'
# Bare asserts: the sandbox counts each, so `fraction` has something to measure.
INC = Problem("toy/inc", PROMPT, "assert inc(1) == 2\nassert inc(5) == 6\nassert inc(-3) == -2\nassert inc(10) == 11\n",
              "inc", code_prefix=PROMPT)
RIGHT = "    return x + 1\n"
EXAMPLE_ONLY = "    return 2\n"  # right on the docstring's example, wrong elsewhere
HALF = "    return x + 1 if x > 0 else x\n"  # 3 of 4 hidden tests
SYNTAX = "    return (\n"
LOOP = "    while True:\n        pass\n"


@pytest.fixture(scope="module")
def executor():
    ex = make_executor("process", workers=2)
    yield ex
    ex.close()


@pytest.fixture
def judge(executor):
    with Judge(executor=executor, cache=False) as j:
        yield j


def call(fn, completions, problem=INC, **columns):
    n = len(completions)
    return fn([problem.prompt] * n, completions, task_id=[problem.task_id] * n, trainer_state=None,
              completion_ids=[[1]] * n, **columns)


class Marking:
    """The real executor, except that a job whose program holds a marker gets the verdict the marker names."""

    def __init__(self, real):
        self.real, self.name, self.version = real, "process", real.version
        self.jobs = []

    def run(self, jobs, limits, on_verdict=None):
        self.jobs += list(jobs)
        out = []
        for v, job in zip(self.real.run(jobs, limits), jobs):
            if "HOST_BREAKS" in job.program:  # the host fails on every attempt (the judge retries once)
                v = Verdict(v.job_id, INFRA_ERROR, stderr="worker lost")
            elif "PROVOKES" in job.program:  # broke the sandbox twice, on two fresh workers
                v = Verdict(v.job_id, "error", provoked=True, stderr="broke the judge")
            if on_verdict:
                on_verdict(v)
            out.append(v)
        return out

    def close(self):
        pass


def test_pass_fraction_and_examples_rewards_run_the_programs(judge):
    completions = [RIGHT, HALF, EXAMPLE_ONLY, SYNTAX, LOOP]
    assert call(execution_reward("pass", judge, [INC], LIMITS), completions) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert call(execution_reward("fraction", judge, [INC], LIMITS), completions) == [1.0, 0.75, 0.25, 0.0, 0.0]  # `return 2` is right on inc(1) alone
    examples = execution_reward("examples", judge, {INC.task_id: INC}, LIMITS)
    assert call(examples, completions) == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert examples.last_stats["examples/passed"] == 0.6
    assert examples.last_stats["examples/timeout"] == 0.2 and examples.last_stats["examples/error"] == 0.2


def test_examples_reward_never_runs_the_hidden_tests(executor):
    """On a synthetic problem: a constant that matches the docstring's example gets the examples
    reward 1 and the pass reward 0, and no job of the examples reward holds the hidden tests."""
    problem = load_split("reference")[0]
    wrong = "    return 2\n"
    assert "2\n" in problem.prompt.split(">>>")[1]  # the example's expected value
    marking = Marking(executor)
    with Judge(executor=marking, cache=False) as judge:
        examples = call(execution_reward("examples", judge, [problem], LIMITS), [wrong, problem.canonical_solution],
                        problem)
        assert marking.jobs and all(problem.tests not in j.tests and "check(" not in j.tests for j in marking.jobs)
        passes = call(execution_reward("pass", judge, [problem], LIMITS), [wrong, problem.canonical_solution], problem)
    assert examples == [1.0, 1.0] and passes == [0.0, 1.0]


def test_a_prompt_without_examples_gives_zero_and_is_counted(judge):
    bare = Problem("toy/bare", "def inc(x):\n", INC.tests, "inc", code_prefix="def inc(x):\n")
    fn = execution_reward({"pass": 1.0, "examples": 1.0}, judge, [bare], LIMITS)
    assert call(fn, [RIGHT], bare) == [1.0]
    assert fn.last_stats["examples/none"] == 1.0 and fn.last_stats["tests/passed"] == 1.0


def test_a_weighted_combination_runs_one_batch_and_mixes_in_other_scorers(executor):
    marking = Marking(executor)
    length = lambda prompts, completions, **kw: [len(c) / 100 for c in completions]  # noqa: E731
    with Judge(executor=marking, cache=False) as judge:
        fn = execution_reward({"pass": 1.0, "examples": 0.5, "length": 2.0}, judge, [INC], LIMITS,
                              scorers={"length": length})
        rewards = call(fn, [RIGHT, EXAMPLE_ONLY, SYNTAX])
    assert rewards == pytest.approx([1.5 + 2 * len(RIGHT) / 100, 0.5 + 2 * len(EXAMPLE_ONLY) / 100,
                                     2 * len(SYNTAX) / 100])
    assert fn.__name__ == "exec_pass+0.5examples+2length"
    assert len(marking.jobs) == 6  # hidden tests and examples of three completions, in one sandbox batch


def test_host_infra_error_is_masked_as_none_and_counted(executor):
    with Judge(executor=Marking(executor), cache=False) as judge:
        fn = execution_reward({"pass": 1.0, "examples": 0.5}, judge, [INC], LIMITS)
        rewards = call(fn, [RIGHT, RIGHT + "# HOST_BREAKS\n", SYNTAX, EXAMPLE_ONLY])
    assert rewards == [1.5, None, 0.0, 0.5]  # a host failure in any part masks the whole reward
    assert fn.last_stats["reward_none"] == 0.25
    assert fn.last_stats["tests/infra_error"] == 0.25 and fn.last_stats["examples/infra_error"] == 0.25


def test_a_provoked_error_is_a_failure_not_a_mask(executor):
    with Judge(executor=Marking(executor), cache=False) as judge:
        fn = execution_reward("fraction", judge, [INC], LIMITS)
        assert call(fn, [RIGHT + "# PROVOKES\n", RIGHT]) == [0.0, 1.0]
    assert fn.last_stats["tests/provoked"] == 0.5 and fn.last_stats["tests/error"] == 0.5
    assert fn.last_stats["reward_none"] == 0.0


@pytest.mark.docker
def test_a_run_that_kills_its_judge_in_a_container_gets_zero():
    """For real: in a container the candidate can kill its judge; that is its own error, reward 0."""
    from conftest import require_docker

    require_docker()
    killer = "    import os, signal\n    os.kill(-1, signal.SIGKILL)\n    return x + 1\n"
    fn = execution_reward("pass", "docker", [INC], LIMITS, workers=1)
    try:
        assert call(fn, [killer, RIGHT]) == [0.0, 1.0]
    finally:
        fn.close()
    assert fn.last_stats["tests/provoked"] == 0.5


def test_stats_accumulate_until_drained_and_reach_trls_log_metric(judge):
    fn = execution_reward("pass", judge, [INC], LIMITS)
    logged = {}
    call(fn, [RIGHT, SYNTAX], log_metric=lambda name, value: logged.__setitem__(name, value))
    call(fn, [RIGHT, RIGHT])
    assert logged["status/exec_pass/tests/passed"] == 0.5 and logged["status/exec_pass/tests/error"] == 0.5
    assert set(logged) == {f"status/exec_pass/{k}" for k in fn.last_stats}
    assert fn.last_stats["tests/passed"] == 1.0
    drained = fn.drain()
    assert drained["tests/passed"] == 0.75 and drained["tests/error"] == 0.25
    assert fn.drain() == {}


def test_completions_are_cut_at_stop_strings_as_evaluation_cuts_them(judge):
    trailing = RIGHT + "def broken(:\n"
    assert call(execution_reward("pass", judge, [INC], LIMITS), [trailing]) == [0.0]
    assert call(execution_reward("pass", judge, [INC], LIMITS, stop=["\ndef "]), [trailing]) == [1.0]


def test_a_reward_that_cannot_judge_says_why(judge):
    fn = execution_reward("pass", judge, [INC], LIMITS)
    with pytest.raises(UserError, match="task_id"):
        fn([PROMPT], [RIGHT])
    with pytest.raises(UserError, match="not among"):
        fn([PROMPT], [RIGHT], task_id=["other/0"])
    with pytest.raises(UserError, match="plain-text"):
        fn([PROMPT], [[{"role": "assistant", "content": RIGHT}]], task_id=[INC.task_id])
    with pytest.raises(UserError, match="unknown reward kind"):
        execution_reward("length", judge, [INC])
    with pytest.raises(UserError, match="must be numbers"):
        execution_reward({"pass": "1"}, judge, [INC])


def test_a_reward_made_from_a_backend_name_owns_and_closes_its_sandbox():
    fn = execution_reward("pass", "process", [INC], LIMITS, workers=1)
    assert call(fn, [RIGHT]) == [1.0] and fn.judge.running
    fn.close()
    assert not fn.judge.running


@pytest.mark.slow
def test_reranker_reward_scores_like_the_reranker_and_shares_the_judge(feedback_reranker):
    from rerankers.model import Reranker
    from rerankers.rewards import reranker_reward

    path, unseen = feedback_reranker
    prompts = [p.prompt for p, _, _ in unseen for _ in (0, 1)]
    texts = [t for _, right, wrong in unseen for t in (right, wrong)]
    with Judge("process", 1) as judge:
        fn = reranker_reward(path, judge=judge, stop=["\ndef "])
        assert fn.reranker.examples.judge is judge  # its example feedback runs in the run's sandbox
        scores = fn(prompts, [t + "\ndef junk(:\n" for t in texts], task_id=["x"] * len(texts))
        fn.close()
        assert judge.running  # closing the reward leaves the shared sandbox to its owner
    direct = Reranker.load(path)
    try:
        assert scores == pytest.approx(direct.score_texts(prompts, texts), abs=1e-5)
    finally:
        direct.close()
    assert fn.__name__ == "reranker"
    assert sum(right > wrong for right, wrong in zip(scores[::2], scores[1::2])) >= 9, scores
