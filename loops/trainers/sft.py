"""Supervised fine-tuning: TRL's SFTTrainer (ITERTL's rounds and the reference baseline)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codegen.hardware import torch_threads
from loops.config import ITERTLConfig
from loops.trainers.common import fixed_args, load_policy, release, train_and_save


def train_sft(parent: str, rows: Sequence[dict], out_model: Path, *, steps: int, cfg: ITERTLConfig,
              learning_rate: float, seed: int, scratch: Path) -> dict[str, Any]:
    """Fine-tune ``parent`` on prompt/completion ``rows`` for ``steps`` optimizer steps with TRL's SFTTrainer.

    Loss is on the completion only. The schedule starts afresh (warmup then
    decay, new optimizer state): each round is a new fine-tuning run from the
    last checkpoint, which is how continual training re-warms the learning rate.
    The model is saved (with its tokenizer) into ``out_model`` atomically.
    """
    from transformers.utils import logging as hf_logging  # heavy: transformers loads only when training

    hf_logging.set_verbosity_error()
    # One thread by default: a tiny model's matrices gain nothing from more, and
    # OpenMP threads spinning on shared cores made a step 15x slower here.
    with torch_threads(cfg.train_threads):
        return _train(parent, rows, out_model, steps=steps, cfg=cfg, learning_rate=learning_rate, seed=seed,
                      scratch=scratch)


def _train(parent: str, rows: Sequence[dict], out_model: Path, *, steps: int, cfg: ITERTLConfig,
           learning_rate: float, seed: int, scratch: Path) -> dict[str, Any]:
    # heavy: datasets and TRL load only when training
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model, tokenizer = load_policy(parent, seed)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in rows])
    args = SFTConfig(
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=cfg.warmup_ratio,  # a float < 1 is a share of the steps
        weight_decay=cfg.weight_decay,
        max_length=cfg.max_length,
        completion_only_loss=True,
        logging_steps=max(1, steps // 10),
        **fixed_args(scratch, seed, cfg.progress),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    output, seconds = train_and_save(trainer, tokenizer, out_model)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    del trainer, model
    release(scratch)
    return {"train_loss": output.training_loss, "final_loss": losses[-1] if losses else None,
            "steps": steps, "learning_rate": learning_rate, "examples": len(rows), "seconds": round(seconds, 2)}


