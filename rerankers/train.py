"""Train a reward model on preference pairs with TRL's RewardTrainer.

The model is `AutoModelForSequenceClassification` with one output, started
from any Hugging Face causal LM or classifier (the starter model knows the
domain, so it is a good start); the loss is TRL's Bradley-Terry loss
``-log sigmoid(r_chosen - r_rejected)``. With ``lora=True`` only LoRA adapters
and the score head train (peft); the adapters are merged before saving so the
result loads like any checkpoint.

The output directory is written to a temporary sibling and renamed into
place, so a crash never leaves a half-written reranker behind.
"""
from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from codegen.errors import UserError
from codegen.hardware import trainer_precision
from codegen.io import TMP_PREFIX, replace_dir
from rerankers.data import Pair, pair_stats
from rerankers.feedback import ExampleRunner, check_kind, with_feedback
from rerankers.model import FORMAT_VERSION, META_FILE, encode_candidate
from sandbox import DEFAULT_BACKEND


@dataclass
class TrainConfig:
    """How to train; every field is a CLI option of `itercode reranker train`."""

    epochs: float = 2.0
    # Few pairs make few steps: 141 pairs x 2 epochs is 18 steps, and such a reranker ranked below a random
    # pick on validation (25.0% against 26.5%); 50 / 100 / 200 steps ranked 34.0 / 42.0 / 43.5%
    # (README, "Rerankers"). With more than min_steps x batch_size / epochs pairs the floor does not bind.
    min_steps: int = 200
    learning_rate: float = 1e-4
    batch_size: int = 16  # pairs per step (the model sees twice as many sequences)
    max_length: int = 512  # tokens of prompt + completion; the prompt is cut from the left
    lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    weight_decay: float = 0.0
    warmup_ratio: float = 0.05
    seed: int = 0
    threads: int | None = None  # torch intra-op threads; None keeps torch's default
    progress: bool = True
    # "examples": each candidate is read with how it did on the prompt's docstring examples
    # (rerankers.feedback); "none": the code alone.
    feedback: str = "examples"
    sandbox: str = DEFAULT_BACKEND  # the backend that runs the examples
    sandbox_options: dict = field(default_factory=dict)  # its options (sandbox.backend_options)

    def check(self) -> None:
        """Raise UserError naming the bad field and a valid range."""
        if self.epochs <= 0:
            raise UserError(f"--epochs must be positive, got {self.epochs}")
        if self.min_steps < 0:
            raise UserError(f"--min-steps must be 0 or more, got {self.min_steps}")
        if self.learning_rate <= 0:
            raise UserError(f"--lr must be positive, got {self.learning_rate}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_length < 16:
            raise UserError(f"--max-length must be at least 16 tokens, got {self.max_length}")
        if self.lora and self.lora_r < 1:
            raise UserError(f"--lora-r must be at least 1, got {self.lora_r}")
        check_kind(self.feedback)


def optimizer_steps(config: TrainConfig, n_pairs: int) -> int:
    """Steps of ``config.epochs`` passes over ``n_pairs`` pairs (as transformers counts them), at least ``config.min_steps``."""
    steps_per_epoch = math.ceil(n_pairs / config.batch_size)
    return max(config.min_steps, math.ceil(config.epochs * steps_per_epoch))


@dataclass
class TrainResult:
    path: Path
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)


def load_base(base: str, lora: bool = False):
    """(model, tokenizer) for ``base``: a one-output classifier with its pad token set."""
    # heavy: torch and transformers load only when a reranker is trained
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Its load report would list the new score head as "MISSING": expected, since a causal LM has none.
    hf_logging.set_verbosity_error()
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, dtype=torch.float32)
    except Exception as e:  # OSError for a missing path, ValueError for an unknown architecture, ...
        raise UserError(
            f"--base {base} does not load as a Hugging Face model ({type(e).__name__}: {e}); pass a local "
            "model directory (e.g. one built by `itercode starter --out DIR`) or a hub id"
        ) from e
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(f"the tokenizer of {base} has neither a pad nor an eos token; add one and save it")
        # Reward models score the last non-pad token, so any fixed pad token works.
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _with_feedback(pairs: Sequence[Pair], config: TrainConfig) -> list[tuple[str, str, str]]:
    """(prompt, chosen text, rejected text) per pair, feedback lines appended when configured."""
    if config.feedback == "none":
        return [(p.prompt, p.chosen, p.rejected) for p in pairs]
    texts = sorted({(p.prompt, c) for p in pairs for c in (p.chosen, p.rejected)})
    with ExampleRunner(config.sandbox, options=config.sandbox_options) as runner:
        lines = dict(zip(texts, runner.lines([t[0] for t in texts], [t[1] for t in texts])))
    return [(p.prompt, with_feedback(p.chosen, lines[p.prompt, p.chosen]),
             with_feedback(p.rejected, lines[p.prompt, p.rejected])) for p in pairs]


def _dataset(pairs: Sequence[Pair], tokenizer: Any, config: TrainConfig):
    """A tokenized `datasets.Dataset` in TRL's ``chosen_ids``/``rejected_ids`` layout."""
    from datasets import Dataset  # heavy: only when a reranker is trained

    rows = [
        {
            "chosen_ids": encode_candidate(tokenizer, prompt, chosen, config.max_length),
            "rejected_ids": encode_candidate(tokenizer, prompt, rejected, config.max_length),
        }
        for prompt, chosen, rejected in _with_feedback(pairs, config)
    ]
    return Dataset.from_list(rows)


def train_reranker(
    pairs: Sequence[Pair],
    base: str,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    extra_meta: dict | None = None,
) -> TrainResult:
    """Train a reward model on ``pairs`` starting from ``base`` and save it to ``out_dir``.

    Returns the path, the wall-clock training time and the trainer's last
    logged metrics (loss, accuracy on the training pairs).

    >>> # train_reranker(build_pairs(problems, samples, results), "runs/starter", "runs/rr")
    """
    config = config or TrainConfig()
    config.check()
    if not pairs:
        raise UserError(
            "no training pairs: no problem has both a passing and a failing candidate. Draw more samples "
            "per problem (e.g. n=16) or at a higher temperature, or include the reference split"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)

    # heavy: torch, transformers and TRL load only when a reranker is trained
    import torch
    from transformers import PrinterCallback, TrainerCallback, set_seed
    from trl import RewardConfig, RewardTrainer

    if config.threads:
        torch.set_num_threads(config.threads)
    start = time.perf_counter()
    set_seed(config.seed)  # the new score head is random: seed it, so a rerun gives the same reranker
    model, tokenizer = load_base(base)
    peft_config = None
    if config.lora:
        from peft import LoraConfig  # heavy, and optional: only for --lora

        # SEQ_CLS keeps the new score head trainable next to the adapters.
        peft_config = LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha,
                                 lora_dropout=0.0, target_modules="all-linear")
    dataset = _dataset(pairs, tokenizer, config)

    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}.", dir=out.parent))
    class KeepLogs(TrainerCallback):
        """Keeps the trainer's numeric logs (loss, accuracy, margin) for reranker.json."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                row = {k: v for k, v in logs.items() if isinstance(v, (int, float))}
                logs_seen.append({**row, "step": state.global_step})

    logs_seen: list[dict] = []
    args = RewardConfig(
        output_dir=str(tmp / "trainer"),
        **trainer_precision(),  # fp32 on the CPU, bf16 on a CUDA GPU
        report_to=[],
        per_device_train_batch_size=config.batch_size,
        max_steps=optimizer_steps(config, len(pairs)),  # takes the place of num_train_epochs
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # a float below 1 is a share of all steps
        lr_scheduler_type="cosine",
        gradient_checkpointing=False,  # the models here are small; recomputation only costs time
        max_length=None,  # encode_candidate already fits every sequence into config.max_length
        save_strategy="no",
        logging_steps=max(1, min(50, len(pairs) // config.batch_size // 10 or 1)),
        disable_tqdm=not config.progress,
        seed=config.seed,
        data_seed=config.seed,
        dataloader_num_workers=0,
    )
    try:
        trainer = RewardTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                                peft_config=peft_config, callbacks=[KeepLogs()])
        if not config.progress:  # without a progress bar transformers prints every log dict; KeepLogs has them
            trainer.remove_callback(PrinterCallback)
        trainer.train()
        model = trainer.model
        if config.lora:
            model = model.merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        save_dir = tmp / "model"
        model.save_pretrained(str(save_dir))
        tokenizer.save_pretrained(str(save_dir))
        seconds = time.perf_counter() - start
        train_logs = [l for l in logs_seen if "loss" in l]
        stats = {**pair_stats(pairs), "seconds": round(seconds, 2), "steps": trainer.state.global_step}
        if train_logs:
            stats["final_loss"] = train_logs[-1]["loss"]
            stats["final_accuracy"] = train_logs[-1].get("accuracy")
        meta = {
            "format_version": FORMAT_VERSION,
            "base": str(base),
            "max_length": config.max_length,
            "feedback": config.feedback,
            "config": asdict(config),
            "stats": stats,
            "trained_task_ids": sorted({p.task_id for p in pairs}),
            "logs": logs_seen,
            **(extra_meta or {}),
        }
        (save_dir / META_FILE).write_text(json.dumps(meta, indent=1))
        replace_dir(save_dir, out)  # built beside ``out``: one rename publishes it
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return TrainResult(out, seconds, stats)
