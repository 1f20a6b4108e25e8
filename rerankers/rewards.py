"""A trained reranker's score as an RL reward, in TRL's signature.

RewardRanker's policy step optimises the generator against the reranker: the
reward of a completion is the score `rerankers.model.Reranker` gives
``prompt + completion``, read exactly as in training (a reranker trained with
example feedback runs each completion on its docstring examples and reads
the ``# examples: ...`` line; never the hidden tests). It lives here, not in
`codegen.execution_rewards`, because core codegen does not import rerankers;
to mix it with execution rewards, pass it as a scorer::

    rr = reranker_reward("runs/x/reranker", judge=judge, stop=HUMANEVAL_STOP)
    fn = execution_reward({"pass": 1.0, "reranker": 0.5}, judge, problems, scorers={"reranker": rr})

A score is never ``None``: a sandbox hiccup on the examples gives the
"no examples" line (as in scoring), not a masked reward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codegen.execution_rewards import cut_at_stop, plain_text
from codegen.judging import Judge
from rerankers.model import Reranker


class RerankerReward:
    """``f(prompts, completions, **columns) -> scores``; ``close`` frees what `reranker_reward` loaded."""

    def __init__(self, reranker: Reranker, *, stop: Sequence[str] = (), name: str = "reranker", owns: bool = False):
        self.reranker, self.stop, self.owns = reranker, list(stop), owns
        self.__name__ = name  # TRL logs rewards under the function's name
        self.last_stats: dict[str, float] = {}  # no sandbox statuses of its own (the examples are feedback)

    def __call__(self, prompts: Sequence[str], completions: Sequence[Any], **columns: Any) -> list[float]:
        texts = [cut_at_stop(c, self.stop) for c in plain_text(completions)]
        return self.reranker.score_texts(list(prompts), texts)

    def drain(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        if self.owns:
            self.reranker.close()


def reranker_reward(reranker: Reranker | str | Path, *, judge: Judge | None = None, stop: Sequence[str] = (),
                    name: str = "reranker", batch_size: int = 16) -> RerankerReward:
    """The reranker at ``reranker`` (a directory, or one already loaded) as a reward function.

    ``judge``: the sandbox its example feedback runs in, shared with the run's
    execution rewards (a reranker loaded here otherwise starts its own).
    ``stop``: cut completions as evaluation does before scoring them.
    """
    if isinstance(reranker, Reranker):
        return RerankerReward(reranker, stop=stop, name=name)
    return RerankerReward(Reranker.load(reranker, batch_size=batch_size, judge=judge), stop=stop, name=name, owns=True)
