"""Preference training: TRL's DPOTrainer on (passing, failing) pairs (iterative DPO)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Sequence

from codegen.errors import UserError
from codegen.hardware import torch_threads
from loops.trainers.common import fixed_args, load_policy, release, train_and_save


def train_dpo(parent: str, pairs: Sequence[Mapping[str, Any]], out_model: Path, *, ref_model: str, steps: int,
              beta: float, learning_rate: float, seed: int, scratch: Path, batch_size: int = 8,
              sft_weight: float = 0.0, warmup_ratio: float = 0.1, lr_scheduler: str = "cosine",
              weight_decay: float = 0.0, max_length: int = 512, threads: int | None = 1, progress: bool = False,
              trl_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``parent`` on preference ``pairs`` with TRL's DPOTrainer for ``steps`` optimizer steps; save it atomically.

    ``pairs``: dicts with ``prompt``, ``chosen`` and ``rejected`` text (other
    keys are ignored). ``ref_model``: the checkpoint the DPO loss measures the
    policy against (iterative DPO passes the round's parent, so each round
    moves away from the model that sampled its pairs, not from the starter).
    ``sft_weight`` > 0 adds TRL's ``"sft"`` loss (negative log-likelihood of
    the chosen completion) with that weight beside the sigmoid DPO loss: the
    RPO objective, which TRL 1.16 spells as ``loss_type=["sigmoid", "sft"]``
    with ``loss_weights`` (it has no ``rpo_alpha``). ``trl_args``: any other
    field of TRL's DPOConfig (e.g. ``{"precompute_ref_log_probs": True}``),
    which wins over the values set here. The model and tokenizer go to
    ``out_model`` atomically; ``scratch`` (the trainer's output_dir) is removed.

    Returns the run's summary, with the mean over logged steps of TRL's reward
    logs: ``reward_margin`` (beta times the chosen minus the rejected log-ratio
    to the reference), ``reward_chosen``, ``reward_rejected`` and
    ``reward_accuracy`` (share of pairs whose chosen reward is higher), and
    ``final_margin`` (the last step's).

    >>> # train_dpo(parent, [{"prompt": p, "chosen": good, "rejected": bad}], out, ref_model=parent,
    >>> #           steps=20, beta=0.1, learning_rate=5e-5, seed=0, scratch=tmp)
    """
    from transformers.utils import logging as hf_logging  # heavy: transformers loads only when training

    broken = []
    if steps < 1:
        broken.append(f"steps must be at least 1 (got {steps})")
    if beta <= 0:
        broken.append(f"beta must be > 0 (got {beta})")
    if sft_weight < 0:
        broken.append(f"sft_weight must be >= 0 (got {sft_weight})")
    if not pairs or any(not all(isinstance(p.get(k), str) for k in ("prompt", "chosen", "rejected")) for p in pairs):
        broken.append("give at least one pair, each with `prompt`, `chosen` and `rejected` text")
    if broken:
        raise UserError("; ".join(broken))
    hf_logging.set_verbosity_error()
    with torch_threads(threads):
        return _train_dpo(parent, pairs, out_model, ref_model=ref_model, steps=steps, beta=beta,
                          learning_rate=learning_rate, seed=seed, scratch=scratch, batch_size=batch_size,
                          sft_weight=sft_weight, warmup_ratio=warmup_ratio, lr_scheduler=lr_scheduler,
                          weight_decay=weight_decay, max_length=max_length, progress=progress,
                          trl_args=dict(trl_args or {}))


def _train_dpo(parent, pairs, out_model, *, ref_model, steps, beta, learning_rate, seed, scratch, batch_size,
               sft_weight, warmup_ratio, lr_scheduler, weight_decay, max_length, progress, trl_args) -> dict[str, Any]:
    # heavy: datasets, transformers and TRL load only when training
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    unknown = sorted(set(trl_args) - {f.name for f in dataclasses.fields(DPOConfig)})
    if unknown:
        raise UserError(f"trl_args {', '.join(unknown)} are not fields of TRL's DPOConfig; "
                        "check the spelling against trl's config docs")
    model, tokenizer = load_policy(parent, seed)
    reference, _ = load_policy(ref_model, seed)  # its own copy: frozen by TRL
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, sft_weight]} if sft_weight > 0 else {
        "loss_type": ["sigmoid"]}
    fields = dict(
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=1,
        learning_rate=learning_rate,
        lr_scheduler_type=lr_scheduler,
        warmup_steps=warmup_ratio,  # a float < 1 is a share of the steps
        weight_decay=weight_decay,
        max_length=max_length,
        beta=beta,
        **losses,
        gradient_checkpointing=False,  # TRL's default is on: it saves memory on big models and costs time on small ones
        logging_steps=1,  # every step's reward margins reach the summary
        **fixed_args(scratch, seed, progress),
    )
    args = DPOConfig(**{**fields, **trl_args})
    dataset = Dataset.from_list([{"prompt": p["prompt"], "chosen": p["chosen"], "rejected": p["rejected"]}
                                 for p in pairs])
    trainer = DPOTrainer(model=model, ref_model=reference, args=args, train_dataset=dataset,
                         processing_class=tokenizer)
    if not progress:  # without a progress bar transformers prints every step's logs; the summary has them
        trainer.remove_callback(PrinterCallback)
    output, seconds = train_and_save(trainer, tokenizer, out_model)
    logs = [h for h in trainer.state.log_history if "rewards/margins" in h]

    def mean(key: str) -> float | None:
        values = [h[key] for h in logs if key in h]
        return sum(values) / len(values) if values else None

    summary = {"steps": steps, "pairs": len(pairs), "beta": args.beta, "loss_type": list(args.loss_type),
               "sft_weight": sft_weight, "learning_rate": learning_rate, "train_loss": output.training_loss,
               "reward_margin": mean("rewards/margins"), "reward_chosen": mean("rewards/chosen"),
               "reward_rejected": mean("rewards/rejected"), "reward_accuracy": mean("rewards/accuracies"),
               "final_margin": logs[-1]["rewards/margins"] if logs else None,
               "margins": [h["rewards/margins"] for h in logs], "seconds": round(seconds, 2)}
    del trainer, model, reference
    release(scratch)
    return summary
