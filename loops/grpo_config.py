"""The policy RL loop's configuration (`itercode loop grpo`): GRPO or RLOO on execution rewards.

    cfg = load_grpo_config("configs/grpo.yaml", ["algo=rloo", "steps=20"])

`GRPOConfig` is `loops.config.LoopConfig` (the run, the protocol's splits,
evaluation, the sandbox: the same keys, defaults and checks as ITERTL, so the
two loops' figures are comparable) plus the RL keys below. Read, overridden
and checked exactly like ITERTL's config: strict types, every mistake at
once, each naming the key and the fix. The protocol's rules hold here too: a
test split is refused where validation or training data is expected.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from pydantic import field_validator

from codegen.execution_rewards import EXECUTION_KINDS, reward_name
from loops.canary import CanaryRule
from loops.config import LoopConfig, common_rules
from loops.trainers import ALGOS
from loops.yaml_config import Float, Int, Schema, Text, load_with, parse_overrides_with

# Keys a resumed run may change: they do not alter work already finished (a run may gain a test split,
# as ITERTL's may: see loops.config.RESUMABLE_KEYS).
GRPO_RESUMABLE_KEYS = frozenset({"workers", "ray_address", "progress", "train_threads", "starter_threads", "test"})
# TRL config fields the loop sets from its own keys (field: the key to set instead): trl_args may not
# set them behind the config's back.
OWN_TRL_FIELDS = {"num_generations": "num_generations", "num_iterations": "num_iterations", "beta": "beta",
                  "learning_rate": "learning_rate", "temperature": "temperature",
                  "max_completion_length": "max_completion_length", "max_steps": "steps", "seed": "seed",
                  "data_seed": "seed", "per_device_train_batch_size": "prompts_per_step",
                  "reward_weights": "reward", "output_dir": "name"}


class GRPOConfig(LoopConfig):
    """Everything one GRPO / RLOO run needs. See configs/grpo.yaml for a commented example."""

    name: Text = "grpo"

    # --- the RL step (TRL's GRPOTrainer / RLOOTrainer, `loops.trainers.train_grpo`)
    algo: Text = "grpo"  # grpo or rloo (TRL's two PPO-family trainers; TRL 1.16 has no PPOTrainer)
    reward: Text | dict[Text, Float] = "pass"  # pass, fraction or examples, or weights: {pass: 1.0, examples: 0.5}
    steps: Int = 100  # optimizer steps
    # Completions per prompt: the group whose mean (GRPO) or leave-one-out mean (RLOO) is the baseline.
    num_generations: Int = 8
    prompts_per_step: Int = 4  # prompts per optimizer step (a step trains on prompts_per_step x num_generations)
    # Each generation batch is trained on this many times. With 1 the policy never moves between
    # generating and training, so the probability ratio is always 1 and the PPO clip does nothing;
    # 2 is the least that makes the clipped surrogate real (and halves the sampling per step).
    num_iterations: Int = 2
    beta: Float | None = None  # KL coefficient to the starting policy; null = TRL's default (GRPO 0.0, RLOO 0.05)
    learning_rate: Float = 1e-4
    temperature: Float = 1.0  # of the training generations: the policy's own distribution, as the ratio assumes
    max_completion_length: Int = 128  # tokens per training generation
    trl_args: dict[Text, Any] = {}  # any other field of TRL's GRPOConfig / RLOOConfig, e.g. {use_vllm: true}

    # --- the reward-hacking canary (`loops.canary`): validation pass@1 beside the training reward
    validate_every: Int = 10  # steps between validation points (greedy pass@1 on the validation split)
    validate_problems: Int | None = 100  # the first this many validation problems; null = all
    canary_window: Int = CanaryRule.window  # points the trend lines are fitted through
    canary_min_reward_rise: Float = CanaryRule.min_reward_rise  # in reward units, across the window
    canary_min_val_drop: Float = CanaryRule.min_val_drop  # pass@1 as a share (0.05 = 5 points)

    @field_validator("reward", mode="before")
    @classmethod
    def _kind_text(cls, v: Any) -> Any:
        return v.strip() if isinstance(v, str) else v

    @property
    def reward_weights(self) -> dict[str, float]:
        """The reward as weights of `codegen.execution_rewards` kinds: ``pass`` -> ``{"pass": 1.0}``."""
        return {self.reward: 1.0} if isinstance(self.reward, str) else dict(self.reward)

    @property
    def reward_name(self) -> str:
        """The name TRL logs the reward under (``exec_pass``, ``exec_pass+0.5examples``)."""
        return reward_name(self.reward_weights)

    @property
    def canary_rule(self) -> CanaryRule:
        return CanaryRule(window=self.canary_window, min_reward_rise=self.canary_min_reward_rise,
                          min_val_drop=self.canary_min_val_drop)


def _reward_rules(cfg: GRPOConfig) -> list[str]:
    example = "e.g. reward=pass or reward={pass: 1.0, examples: 0.5}"
    weights = cfg.reward_weights
    unknown = [k for k in weights if k not in EXECUTION_KINDS]
    if not weights:
        return [f"reward must name at least one kind; {example}"]
    if unknown:
        return [f"reward kind(s) {', '.join(map(repr, unknown))} unknown: use {', '.join(EXECUTION_KINDS)} "
                "(pass: the hidden tests pass, fraction: the share of them passed, examples: the docstring's own); "
                f"{example}"]
    if not any(weights.values()):
        return [f"reward weights are all 0: nothing would be learned; {example}"]
    return []


def _trl_args_rules(cfg: GRPOConfig) -> list[str]:
    errors = [f"trl_args sets {k}, which the config owns: set the config key instead ({OWN_TRL_FIELDS[k]}=...)"
              for k in cfg.trl_args if k in OWN_TRL_FIELDS]
    if cfg.trl_args and cfg.algo in ALGOS and not errors:
        # heavy: TRL loads only when trl_args is given, to name a misspelt field before anything runs
        from trl import GRPOConfig as TRLGRPOConfig, RLOOConfig as TRLRLOOConfig

        trl_cls = TRLGRPOConfig if cfg.algo == "grpo" else TRLRLOOConfig
        unknown = sorted(set(cfg.trl_args) - {f.name for f in dataclasses.fields(trl_cls)})
        if unknown:
            errors.append(f"trl_args {', '.join(unknown)} are not fields of TRL's {trl_cls.__name__}; "
                          "check the spelling against TRL's config docs")
    return errors


def grpo_rules(cfg: GRPOConfig) -> list[str]:
    """Every rule between values that ``cfg`` breaks, each with its fix."""
    errors: list[str] = common_rules(cfg)

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    rule(cfg.algo in ALGOS, f"algo must be one of {', '.join(ALGOS)}, got {cfg.algo!r}")
    errors.extend(_reward_rules(cfg))
    rule(cfg.steps >= 1, f"steps must be >= 1, got {cfg.steps}")
    rule(cfg.num_generations >= 2,
         f"num_generations must be >= 2 (the group is the baseline: one completion has nothing to beat), "
         f"got {cfg.num_generations}")
    rule(cfg.prompts_per_step >= 1, f"prompts_per_step must be >= 1, got {cfg.prompts_per_step}")
    rule(cfg.num_iterations >= 1,
         f"num_iterations must be >= 1 (2 or more makes the PPO clip act), got {cfg.num_iterations}")
    rule(cfg.beta is None or cfg.beta >= 0, f"beta must be >= 0 or null (TRL's default), got {cfg.beta}")
    rule(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    rule(cfg.temperature > 0,
         f"temperature must be > 0, got {cfg.temperature}: a group of greedy completions is one completion n times "
         "(no advantage to learn from)")
    rule(cfg.max_completion_length >= 1, f"max_completion_length must be >= 1, got {cfg.max_completion_length}")
    rule(cfg.validate_every >= 1,
         f"validate_every must be >= 1 step, got {cfg.validate_every}: the canary needs validation points")
    rule(cfg.validate_problems is None or cfg.validate_problems >= 1,
         f"validate_problems must be >= 1 or null (every validation problem), got {cfg.validate_problems}")
    rule(cfg.canary_window >= 2, f"canary_window must be >= 2 points (a trend needs two), got {cfg.canary_window}")
    for key in ("canary_min_reward_rise", "canary_min_val_drop"):
        rule(getattr(cfg, key) >= 0, f"{key} must be >= 0 (0: any rise or drop counts), got {getattr(cfg, key)}")
    errors.extend(_trl_args_rules(cfg))
    return errors


GRPO = Schema(GRPOConfig, grpo_rules, label="GRPO", example_file="configs/grpo.yaml", example_override="steps=40")


def load_grpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> GRPOConfig:
    """Read ``path`` (YAML; None = all defaults), apply ``key=value`` overrides, validate.

    Raises one `UserError` listing every mistake.
    """
    return load_with(GRPO, path, overrides)


def parse_grpo_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["algo=rloo", "steps=20"]`` -> ``{"algo": "rloo", "steps": 20}``."""
    return parse_overrides_with(GRPO, overrides)
