"""The RewardRanker loop's configuration (`itercode loop rewardranker`).

    cfg = load_rewardranker_config("configs/rewardranker.yaml", ["iterations=1", "hard_negatives=only"])

`RewardRankerConfig` is the GRPO loop's config (`loops.grpo_config`: the run,
the protocol's splits, evaluation, the sandbox, the RL step and its canary,
each with the same defaults) plus the keys of the other two parts of the
loop: sampling the unlabeled problems, and the reranker (training, hard
negatives, the LEVER-style combination with the policy's log-prob). The RL
reward is the reranker (``reward: reranker``), alone or mixed with execution
kinds (``{reranker: 1.0, examples: 0.5}``). Read, overridden and checked like
every loop config: strict types, every mistake at once, each naming the key
and the fix; a test split is refused where validation or training data is
expected.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from pydantic import StrictBool

from codegen.execution_rewards import EXECUTION_KINDS
from codegen.samplers import SamplingParams
from loops.grpo_config import GRPO_RESUMABLE_KEYS, GRPOConfig, grpo_rules
from loops.yaml_config import Float, Int, Schema, Text, load_with, parse_overrides_with
from rerankers.combined import DEFAULT_LOGPROB_WEIGHTS
from rerankers.feedback import FEEDBACK_KINDS
from rerankers.train import TrainConfig

RERANKER = "reranker"  # the reward kind that is the reranker's score
HARD_NEGATIVE_VARIANTS = ("only", "with_positives")
# Keys a resumed run may change: they do not alter work already finished (more iterations extend the run).
REWARDRANKER_RESUMABLE_KEYS = GRPO_RESUMABLE_KEYS | {"iterations"}


class RewardRankerConfig(GRPOConfig):
    """One RewardRanker run. See configs/rewardranker.yaml for a commented example."""

    name: Text = "rewardranker"
    iterations: Int = 2  # reranker -> RL -> hard negatives, this many times (the paper's second iteration helped)
    reward: Text | dict[Text, Float] = RERANKER  # the RL reward: the reranker, or weights {reranker: 1, examples: 0.5}
    test_every_iteration: StrictBool = True  # score the test splits after every iteration (else round 0 and the last)

    # --- sampling the unlabeled problems: the reranker's data (iteration 1: the base policy's samples;
    # iteration k >= 2: the RL policy of iteration k-1's, where its hard negatives are mined)
    n_samples: Int = 8
    sample_temperature: Float = SamplingParams.temperature

    # --- the reranker (TRL RewardTrainer on (passing, failing) pairs, `rerankers.train`)
    reranker_base: Text = "policy"  # "policy": start from the base policy's weights (a new score head); or a path
    reranker_feedback: Text = "examples"  # the "# examples: k/n passed" line it reads beside the code; or none
    reranker_epochs: Float = TrainConfig.epochs
    reranker_min_steps: Int = TrainConfig.min_steps  # optimizer steps at least (few pairs: more passes)
    reranker_learning_rate: Float = TrainConfig.learning_rate
    reranker_batch_size: Int = TrainConfig.batch_size
    reranker_max_length: Int = TrainConfig.max_length
    max_pairs_per_problem: Int = 16  # pairs per problem from one set of samples

    # --- hard negatives (iteration k >= 2): failing samples of the RL policy that reranker k-1 scores high
    hard_negatives: Text = "with_positives"  # only: earlier pairs + hard negatives; with_positives: + the new samples' pairs
    negatives_per_problem: Int = 4
    positives_per_negative: Int = 2

    # --- LEVER: rank by reranker score + w * the policy's mean log-prob, w chosen on validation candidates
    logprob_weights: list[Float] = list(DEFAULT_LOGPROB_WEIGHTS)

    @property
    def reward_weights(self) -> dict[str, float]:
        return {self.reward: 1.0} if isinstance(self.reward, str) else dict(self.reward)

    @property
    def reward_name(self) -> str:
        """``reranker``, ``reranker+0.5examples``: the name TRL logs the reward under."""
        return "+".join(k if w == 1 else f"{w:g}{k}" for k, w in self.reward_weights.items())

    @property
    def train_config(self) -> TrainConfig:
        """The reranker's `rerankers.train.TrainConfig` (its seed is set per iteration by the loop)."""
        return TrainConfig(epochs=self.reranker_epochs, min_steps=self.reranker_min_steps,
                           learning_rate=self.reranker_learning_rate,
                           batch_size=self.reranker_batch_size, max_length=self.reranker_max_length,
                           threads=self.train_threads, progress=self.progress, feedback=self.reranker_feedback,
                           sandbox=self.executor, sandbox_options=self.executor_options)


def _reward_rules(cfg: RewardRankerConfig) -> list[str]:
    example = "e.g. reward=reranker or reward={reranker: 1.0, examples: 0.5}"
    weights = cfg.reward_weights
    known = (RERANKER, *EXECUTION_KINDS)
    unknown = [k for k in weights if k not in known]
    if unknown:
        return [f"reward kind(s) {', '.join(map(repr, unknown))} unknown: use {', '.join(known)}; {example}"]
    if weights.get(RERANKER, 0) <= 0:
        return [f"reward must give the reranker a weight > 0, got {weights}: the RewardRanker loop trains the policy "
                f"against its reranker (for execution rewards alone use `itercode loop grpo`); {example}"]
    return []


def rewardranker_rules(cfg: RewardRankerConfig) -> list[str]:
    """Every rule ``cfg`` breaks: the GRPO loop's (the protocol's included) and RewardRanker's own, with fixes."""
    errors = [e for e in grpo_rules(cfg) if not e.startswith("reward ")]  # the reward's rules are below

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    errors.extend(_reward_rules(cfg))
    rule(cfg.iterations >= 1, f"iterations must be >= 1 (reranker, then RL: one iteration), got {cfg.iterations}")
    rule(cfg.n_samples >= 2,
         f"n_samples must be >= 2: a reranker pair needs a passing and a failing sample of one problem, got {cfg.n_samples}")
    rule(cfg.sample_temperature > 0,
         f"sample_temperature must be > 0, got {cfg.sample_temperature}: greedy samples of a problem are one program")
    rule(bool(cfg.reranker_base), "reranker_base must be 'policy' (the base policy's weights) or a model path / hub id")
    rule(cfg.reranker_feedback in FEEDBACK_KINDS,
         f"reranker_feedback must be one of {', '.join(FEEDBACK_KINDS)}, got {cfg.reranker_feedback!r}")
    rule(cfg.reranker_epochs > 0, f"reranker_epochs must be > 0, got {cfg.reranker_epochs}")
    rule(cfg.reranker_min_steps >= 0, f"reranker_min_steps must be >= 0, got {cfg.reranker_min_steps}")
    rule(cfg.reranker_learning_rate > 0, f"reranker_learning_rate must be > 0, got {cfg.reranker_learning_rate}")
    rule(cfg.reranker_batch_size >= 1, f"reranker_batch_size must be >= 1, got {cfg.reranker_batch_size}")
    rule(cfg.reranker_max_length >= 16, f"reranker_max_length must be >= 16 tokens, got {cfg.reranker_max_length}")
    rule(cfg.max_pairs_per_problem >= 1, f"max_pairs_per_problem must be >= 1, got {cfg.max_pairs_per_problem}")
    rule(cfg.hard_negatives in HARD_NEGATIVE_VARIANTS,
         f"hard_negatives must be one of {', '.join(HARD_NEGATIVE_VARIANTS)} (only: earlier pairs plus the hard "
         f"negatives; with_positives: also the new samples' own pairs), got {cfg.hard_negatives!r}")
    rule(cfg.negatives_per_problem >= 1, f"negatives_per_problem must be >= 1, got {cfg.negatives_per_problem}")
    rule(cfg.positives_per_negative >= 1, f"positives_per_negative must be >= 1, got {cfg.positives_per_negative}")
    rule(bool(cfg.logprob_weights) and all(w >= 0 for w in cfg.logprob_weights),
         f"logprob_weights must be a non-empty list of numbers >= 0, got {cfg.logprob_weights}; "
         "e.g. logprob_weights=[0,0.5,1,2] (0 keeps the reranker alone in the running)")
    return errors


REWARDRANKER = Schema(RewardRankerConfig, rewardranker_rules, label="RewardRanker",
                      example_file="configs/rewardranker.yaml", example_override="iterations=1")


def load_rewardranker_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RewardRankerConfig:
    """Read ``path`` (YAML; None = all defaults), apply ``key=value`` overrides, validate.

    Raises one `UserError` listing every mistake.
    """
    return load_with(REWARDRANKER, path, overrides)


def parse_rewardranker_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["iterations=1"]`` -> ``{"iterations": 1}``, keys checked."""
    return parse_overrides_with(REWARDRANKER, overrides)
