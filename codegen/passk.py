"""pass@k: the unbiased estimator of Chen et al. (2021), "Evaluating Large
Language Models Trained on Code".

For one problem with ``n`` samples of which ``c`` pass, pass@k is the chance
that at least one of ``k`` samples drawn without replacement passes:
``1 - C(n-c, k) / C(n, k)``. The binomials overflow floats for large ``n``, so
we use the product form ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which is exact
algebra and stays in [0, 1] in floating point. The score of a set of problems
is the mean over problems.
"""
from __future__ import annotations

import operator
from collections import defaultdict
from typing import Iterable, Mapping


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``n`` samples, ``c`` of them correct.

    >>> round(pass_at_k(10, 1, 1), 6)
    0.1
    >>> round(pass_at_k(10, 3, 5), 6)  # 1 - C(7,5)/C(10,5) = 1 - 21/252
    0.916667
    """
    # operator.index accepts numpy integers too, and refuses floats such as 2.5.
    n, c, k = operator.index(n), operator.index(c), operator.index(k)
    if k < 1:
        raise ValueError(f"pass@k needs k >= 1, got k={k}")
    if n < 0 or c < 0 or c > n:
        raise ValueError(f"pass@k needs 0 <= c <= n, got n={n}, c={c}")
    if k > n:
        raise ValueError(
            f"pass@{k} needs at least {k} samples per problem, but a problem has only {n}; "
            f"draw more samples or ask for k <= {n}"
        )
    if n - c < k:
        # Every draw of k samples contains a correct one.
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def counts_by_problem(results: Iterable[Mapping]) -> dict[str, tuple[int, int]]:
    """``task_id -> (n, c)``: samples and passing samples per problem."""
    n: dict[str, int] = defaultdict(int)
    c: dict[str, int] = defaultdict(int)
    for r in results:
        n[r["task_id"]] += 1
        c[r["task_id"]] += bool(r["passed"])
    return {t: (n[t], c[t]) for t in n}


def pass_at_k_table(results: Iterable[Mapping], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over problems, for each k: ``{"pass@1": 0.42, ...}``.

    ``results`` are per-sample dicts with ``task_id`` and ``passed``. A k above
    the number of samples of any problem is a ValueError naming that problem,
    never a silently dropped key.
    """
    counts = counts_by_problem(results)
    if not counts:
        raise ValueError("pass@k of no results: there are no samples to score")
    table: dict[str, float] = {}
    for k in ks:
        smallest = min(counts.items(), key=lambda item: item[1][0])
        if k > smallest[1][0]:
            raise ValueError(
                f"pass@{k} needs at least {k} samples per problem, but {smallest[0]} has only "
                f"{smallest[1][0]}; draw more samples or ask for k <= {smallest[1][0]}"
            )
        table[f"pass@{k}"] = sum(pass_at_k(n, c, k) for n, c in counts.values()) / len(counts)
    return table
