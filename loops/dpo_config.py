"""The iterative DPO loop's configuration: ITERTL's, plus the preference keys.

    cfg = load_dpo_config("configs/dpo.yaml", ["rounds=2", "beta=0.2"])

`DPOConfig` subclasses `loops.config.ITERTLConfig`, so the run, data,
sampling, evaluation and sandbox keys (and the evaluation protocol's rules,
`protocol_errors`) are the same as ITERTL's and a DPO run is compared with an
ITERTL run on the same footing. It adds ``pairs_per_problem``, ``beta`` and
``sft_weight``, and gives the training keys DPO's defaults. Two ITERTL keys
mean nothing here and are refused when given: ``keep_per_problem`` (pairs are
capped by ``pairs_per_problem``) and a non-zero ``replay_share`` (a reference
solution has no failing partner to make a pair with).

Every error is reported at once, each naming the key and the fix, as
`loops.config.load_config` does for ITERTL.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from loops.config import REPLACED_KEYS, ITERTLConfig, broken_rules
from loops.yaml_config import Float, Int, Schema, Text, load_with


class DPOConfig(ITERTLConfig):
    """One iterative DPO run. See configs/dpo.yaml for a commented example."""

    name: Text = "dpo"

    # --- pairs (the select stage): (passing, failing) completions of one problem
    pairs_per_problem: Int = 4  # at most this many pairs per problem and round

    # --- training (TRL DPOTrainer; the reference model is the round's parent checkpoint)
    beta: Float = 0.1  # DPO's beta (TRL's default): higher keeps the policy closer to its parent
    sft_weight: Float = 0.0  # weight of TRL's "sft" loss on the chosen completion beside the DPO loss (RPO); 0 = off
    train_steps: Int = 30  # optimizer steps per round
    batch_size: Int = 8  # pairs per optimizer step
    learning_rate: Float = 5e-5
    replay_share: Float = 0.0  # ITERTL's; refused unless 0 (see the module docstring)


ITERTL_ONLY = {
    "keep_per_problem": "it is ITERTL's cap on kept programs; the DPO loop caps pairs with pairs_per_problem=N",
    "repair_share": "repair examples are SFT rows of ITERTL's select stage; run `itercode loop itertl` with it",
    "repair_reference": "it samples reference problems for ITERTL's repair rows; run `itercode loop itertl` with it",
}


def dpo_rules(cfg: DPOConfig) -> list[str]:
    """Every rule ``cfg`` breaks: ITERTL's (the protocol's included) and DPO's own, each with its fix."""
    errors = broken_rules(cfg)
    # replaced by the rules below (replay_share's own, and the ITERTL-only keys)
    errors = [e for e in errors if not e.startswith(("replay_share", "repair_reference"))]

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    rule(cfg.pairs_per_problem >= 1, f"pairs_per_problem must be >= 1, got {cfg.pairs_per_problem}")
    rule(cfg.beta > 0, f"beta must be > 0 (DPO's deviation penalty; TRL's default is 0.1), got {cfg.beta}")
    rule(cfg.sft_weight >= 0, f"sft_weight must be >= 0 (0 = no SFT term on the chosen completions), got {cfg.sft_weight}")
    rule(cfg.replay_share == 0,
         f"replay_share must be 0 in the DPO loop, got {cfg.replay_share}: a reference solution has no failing "
         "partner to make a pair with; drop replay_share (an SFT term on the chosen completions is sft_weight=W)")
    rule(cfg.n_samples >= 2, f"n_samples must be >= 2: a pair needs a passing and a failing sample of one problem, "
                             f"got {cfg.n_samples}")
    for key, why in ITERTL_ONLY.items():
        rule(key not in cfg.model_fields_set, f"config key {key!r} is not used by the DPO loop: {why}")
    return errors


DPO = Schema(DPOConfig, dpo_rules, label="DPO", example_file="configs/dpo.yaml", example_override="beta=0.2",
             replaced=REPLACED_KEYS)


def load_dpo_config(path: str | Path | None, overrides: Sequence[str] = ()) -> DPOConfig:
    """Read ``path`` (YAML mapping; None = all defaults), apply ``key=value`` overrides, validate.

    Raises one `UserError` listing every mistake: unknown keys, values of the
    wrong type, and broken rules.
    """
    return load_with(DPO, path, overrides)
