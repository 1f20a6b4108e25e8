"""What every trainer of the loops does the same way: load the policy, the
arguments no loop varies, train, save atomically, and free the memory."""
from __future__ import annotations

import gc
import shutil
import time
from pathlib import Path
from typing import Any

from codegen.hardware import trainer_precision
from codegen.io import atomic_dir


def load_policy(path: str, seed: int) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal LM in fp32 (the trainer casts for bf16 on a GPU), with a pad token,
    torch seeded first so that any fresh weights are the seed's."""
    # heavy: torch and transformers load only when training
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), tokenizer


def fixed_args(scratch: Path, seed: int, progress: bool) -> dict[str, Any]:
    """TrainingArguments fields the loops never vary: nothing saved mid-run, seeded data order,
    fp32 on the CPU and bf16 on a CUDA GPU, no reporting, data loaded in the training process."""
    return dict(output_dir=str(scratch), save_strategy="no", seed=seed, data_seed=seed, **trainer_precision(),
                report_to=[], disable_tqdm=not progress, dataloader_num_workers=0)


def train_and_save(trainer: Any, tokenizer: Any, out_model: Path) -> tuple[Any, float]:
    """``trainer.train()``, then the model and its tokenizer into ``out_model`` atomically;
    returns the train output and the training seconds."""
    t0 = time.monotonic()
    output = trainer.train()
    seconds = time.monotonic() - t0
    with atomic_dir(out_model) as tmp:
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    return output, seconds


def release(scratch: Path) -> None:
    """Remove the Trainer's output_dir (nothing is saved there) and collect what the caller dropped."""
    shutil.rmtree(scratch, ignore_errors=True)
    gc.collect()
