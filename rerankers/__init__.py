"""Verdicts -> preference pairs -> TRL reward models -> scores (the RewardRanker half of itercode).

    >>> from rerankers import Reranker                      # doctest: +SKIP
    >>> Reranker.load("runs/reranker").score(problem, ["    return a + b\\n", "    return a - b\\n"])

Modules: `data` (pairs from samples + verdicts), `feedback` (how a candidate
did on the docstring's examples, which the reranker reads with the code),
`train` (TRL RewardTrainer), `hard_negatives` (rounds), `model` (Reranker),
`baselines` (random, mean log-prob), `report` (reranked pass@1 beside its
baselines). Importing
the package is light: torch and transformers load on first use.
"""
from rerankers.model import Reranker, RerankerLoadError

__all__ = ["Reranker", "RerankerLoadError"]
