"""Training steps the loops share: supervised fine-tuning and policy RL (TRL's trainers).

ITERTL trains each round's model with `train_sft`, and the reference
baseline (`loops.baseline`) trains its single model with the same step, so
the two differ only in their data.

`train_grpo` is the policy step of the RL loops (GRPO, RLOO, RewardRanker):
TRL's GRPOTrainer or RLOOTrainer on prompts with a ``task_id`` column, with
reward functions in TRL's signature (`codegen.execution_rewards`,
`rerankers.rewards`). TRL 1.16 has no PPOTrainer; these two are its PPO
family, and their clipped surrogate acts only when the old log-probs are
recomputed, i.e. ``num_iterations >= 2`` (each generation batch is trained
on that many times), which is the default here. `RLMonitor` keeps per-step
records (reward, status rates, KL, clip ratio) and, every ``validate_every``
steps, validation pass@1 beside the training reward: the reward-hacking
canary's input (`loops.canary`). `train_dpo` is iterative DPO's step
(`loops.dpo`): TRL's DPOTrainer on (passing, failing) pairs against the
round's parent.
"""
from __future__ import annotations

from loops.trainers.dpo import train_dpo
from loops.trainers.rl import ALGOS, RLMonitor, greedy_pass_at_1, train_grpo
from loops.trainers.sft import train_sft

__all__ = ["ALGOS", "RLMonitor", "greedy_pass_at_1", "train_dpo", "train_grpo", "train_sft"]
