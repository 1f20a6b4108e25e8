"""The HF transformers sampler: the synchronous face of the shared HF engine.

Prompts are batched ``batch_size // n`` at a time with left padding
(`codegen.samplers.hf_engine`). The engine (the loaded model) is shared with
every other user of the same model and options in this process. Reproducible:
the same seed, prompts and batch size give the same samples.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams
from codegen.samplers.engine import open_engine, run_sync


class HFSampler:
    """Sample with transformers. ``batch_size`` bounds the sequences (prompts x n) per generate call."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        dtype: str = "auto",  # float32; "bfloat16" on a capable GPU
        device: str | None = None,
        seed: int = 0,
        progress: bool = False,
        trust_remote_code: bool = False,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1 (got {batch_size})")
        self.model_name = model
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.engine = open_engine("hf", model, dtype=dtype, device=device, trust_remote_code=trust_remote_code)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def model(self):
        return self.engine.hf_model

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def context_length(self) -> int:
        """The model's maximum sequence length (prompt + completion), as vLLM derives it."""
        return self.engine.context_length

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    def apply_chat_template(self, prompt: str) -> str:
        return self.engine.apply_chat_template(prompt)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions; rows are batched ``batch_size // n`` prompts at a time."""
        params.check()
        if params.seed is None:
            params = dataclasses.replace(params, seed=self.seed)
        return run_sync(self.engine.generate_many(list(prompts), params, batch_size=self.batch_size,
                                                  progress=self.progress))

    def close(self) -> None:
        """Give the engine back; the last user's close frees the model."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.release()
