"""The vLLM sampler: the synchronous face of the shared vLLM engine.

Every prompt of a call goes to the engine at once; vLLM's scheduler batches
them. The engine (`codegen.samplers.vllm_engine`) is shared with every other
user of the same model and options in this process, and stops when the last
one closes. vLLM starts worker processes with "spawn", so a script that builds
this sampler must do so under ``if __name__ == "__main__":``.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

from codegen.samplers import Completion, SamplingParams
from codegen.samplers.engine import open_engine, run_sync


class VLLMSampler:
    """Sample ``model`` (a local path or hub id) with the process's vLLM engine for it.

    ``seed`` seeds calls whose params carry none (see vllm_engine for the
    per-prompt rule); ``kv_cache_gib`` sizes the KV cache on the CPU; other
    options (``max_model_len``, ``dtype``, AsyncEngineArgs fields) go to the engine.
    """

    def __init__(self, model: str, *, seed: int = 0, progress: bool = False, **engine_options):
        self.model_name = model
        self.seed = seed
        self.progress = progress
        self.engine = open_engine("vllm", model, **engine_options)

    @property
    def tokenizer(self):
        return self.engine.tokenizer

    @property
    def context_length(self) -> int:
        """The engine's maximum sequence length (prompt + completion)."""
        return self.engine.context_length

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self.engine.count_tokens(prompts)

    def apply_chat_template(self, prompt: str) -> str:
        return self.engine.apply_chat_template(prompt)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions, all prompts in one engine call."""
        params.check()
        if params.seed is None:
            params = dataclasses.replace(params, seed=self.seed)
        return run_sync(self.engine.generate_many(list(prompts), params, progress=self.progress))

    def close(self) -> None:
        """Give the engine back; the last user's close stops it and its processes."""
        engine, self.engine = getattr(self, "engine", None), None
        if engine is not None:
            engine.release()
