"""The reward layer (verdict -> reward, TRL's signature) and the decoding layer (best-of-n)."""
import math

import pytest

from codegen.decoding import best_first, best_index, ranking, verdict_key
from codegen.errors import UserError
from codegen.rewards import REWARD_FUNCS, fraction_reward, pass_reward, reward
from sandbox.base import Verdict

PASS = {"status": "passed", "passed": True, "tests_passed": 4, "tests_total": 4}
HALF = {"status": "failed", "passed": False, "tests_passed": 2, "tests_total": 4}
SYNTAX = {"status": "error", "passed": False, "tests_passed": 0, "tests_total": 0}
INFRA = {"status": "infra_error", "passed": False, "tests_passed": 0, "tests_total": 0}


def test_pass_and_fraction_rewards_in_trl_signature():
    verdicts = [PASS, HALF, SYNTAX, INFRA]
    # TRL adds columns of its own (completion_ids, trainer_state, ...): they are ignored.
    extra = {"completion_ids": [[1]] * 4, "trainer_state": None, "task_id": ["t"] * 4}
    assert pass_reward(["p"] * 4, ["c"] * 4, verdict=verdicts, **extra) == [1.0, 0.0, 0.0, None]
    assert fraction_reward(["p"] * 4, ["c"] * 4, verdict=verdicts, **extra) == [1.0, 0.5, 0.0, None]
    assert set(REWARD_FUNCS) == {"pass", "fraction"}


def test_sandbox_verdicts_work_as_dicts_do():
    verdicts = [Verdict("a", "passed", 3, 3), Verdict("b", "timeout", 1, 3), Verdict("c", "infra_error")]
    assert pass_reward([""] * 3, [""] * 3, verdict=verdicts) == [1.0, 0.0, None]
    assert fraction_reward([""] * 3, [""] * 3, verdict=verdicts) == [1.0, pytest.approx(1 / 3), None]


def test_reward_refuses_what_it_cannot_judge():
    with pytest.raises(UserError, match="verdict"):
        pass_reward(["p"], ["c"])
    with pytest.raises(ValueError, match="one verdict per completion"):
        pass_reward(["p", "p"], ["a", "b"], verdict=[PASS])
    with pytest.raises(UserError, match="unknown reward kind"):
        reward(PASS, "length")


def test_best_of_n_picks_the_top_score_and_the_first_of_a_tie():
    assert best_index([0.1, 0.7, 0.7, 0.2]) == 1
    assert best_index([float("nan"), -5.0]) == 1  # a NaN score never wins
    assert best_index([None, -math.inf]) == 0  # ... and ties with -inf, where the earlier one wins
    assert ranking([(0.5, -1.0), (0.5, -0.2), (1.0, -9.0)]) == [2, 1, 0]  # tuples compare in order
    with pytest.raises(ValueError):
        best_index([])


def test_verdict_key_puts_passing_candidates_first():
    keys = [verdict_key(-0.1, HALF), verdict_key(-9.0, PASS), verdict_key(-0.5, SYNTAX), verdict_key(None), verdict_key(-3.0, INFRA)]
    assert best_first(list("abcde"), keys) == ["b", "a", "c", "e", "d"]
    with pytest.raises(ValueError, match="one key per candidate"):
        best_first(["a"], [])
