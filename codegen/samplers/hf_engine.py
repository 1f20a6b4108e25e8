"""The HF transformers engine: batched ``model.generate`` with left padding.

Slower than vLLM (no paged attention or continuous batching) but it needs
nothing beyond transformers, starts in seconds, and it is the reference that
the vLLM engine is checked against (tests/test_samplers.py: greedy outputs
agree). One ``generate`` call runs at a time, in a worker thread: a second
thread would only fight the first for the same cores, and transformers'
generate is not meant to be re-entered. Reproducible: the same seed, prompts
and batch size give the same samples.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Sequence

from tqdm.auto import tqdm

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams, mean_logprob
from codegen.samplers._stops import cut_completion
from codegen.samplers.engine import EngineUnavailable, GenerationEngine


class HFEngine(GenerationEngine):
    backend = "hf"

    def __init__(self, model: str, *, seed: int = 0, max_model_len: int | None = None, dtype: str = "auto",
                 device: str | None = None, trust_remote_code: bool = False):
        super().__init__(model, seed=seed, max_model_len=max_model_len)
        self.dtype = dtype  # "auto" = float32: small models sample best in full precision on the CPU
        self.device = device
        self.trust_remote_code = trust_remote_code
        self.hf_model = None
        self.eos_ids: set[int] = set()
        self._lock = asyncio.Lock()

    async def _start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        # heavy: torch and transformers load only when an HF engine starts
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float32 if self.dtype == "auto" else getattr(torch, self.dtype)
        bars = hf_logging.is_progress_bar_enabled()
        if os.environ.get("ITERCODE_VERBOSE") != "1":
            hf_logging.disable_progress_bar()  # "Loading weights" bars, as vLLM's lines, only with --verbose
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model, trust_remote_code=self.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype, trust_remote_code=self.trust_remote_code)
        except OSError as e:
            raise UserError(f"could not load model {self.model!r} with transformers: {e}") from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        model.to(device).eval()
        # Left padding keeps every prompt's last token at the end of the row,
        # where generation continues from.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.tokenizer, self.hf_model, self.device = tokenizer, model, device
        self.eos_ids = _eos_ids(model, tokenizer)
        if self.max_model_len is None:
            # The longest sequence the model takes, as vLLM derives it.
            self.max_model_len = int(getattr(model.config, "max_position_embeddings", 0) or 2048)

    def _stop(self) -> None:
        self.hf_model = None

    @property
    def alive(self) -> bool:
        return self.hf_model is not None

    # -- generation ------------------------------------------------------
    async def _generate(self, prompt: str, params: SamplingParams, deadline: float | None, *,
                        prompt_ids: Sequence[int] | None = None) -> list[Completion]:
        # prompt_ids unused: a batch row is tokenized with its padding in _generate_rows.
        seed = params.seed if params.seed is not None else self.seed + next(self._ids)
        max_time = None if deadline is None else max(0.01, deadline - time.monotonic())
        [row] = await self._serialised(self._generate_rows, [prompt], params, seed, max_time)
        return row

    async def _generate_many(self, prompts: list[str], params: SamplingParams, batch_size: int,
                             progress: bool) -> list[list[Completion]]:
        return await self._serialised(self._generate_all, prompts, params, max(1, batch_size // params.n), progress)

    async def _serialised(self, fn, *args):
        """Run ``fn(*args)`` in a worker thread, one call at a time."""
        if not self.alive:
            raise EngineUnavailable("the HF model is not loaded")
        async with self._lock:
            with self._in_engine():
                work = asyncio.get_running_loop().run_in_executor(None, fn, *args)
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    # A thread cannot be stopped: keep the lock until it ends (a request's
                    # max_time bounds it), so calls stay serialised even after a time-out.
                    await asyncio.wait([work])
                    raise

    def _generate_all(self, prompts: list[str], params: SamplingParams, per_batch: int,
                      progress: bool) -> list[list[Completion]]:
        import torch  # heavy: loaded by _load() already

        batches = [prompts[i : i + per_batch] for i in range(0, len(prompts), per_batch)]
        # One seed per call: reruns with the same prompts and batch size repeat exactly.
        torch.manual_seed(params.seed)
        out: list[list[Completion]] = []
        for batch in tqdm(batches, desc="hf generate", unit="batch", disable=not progress):
            out.extend(self._generate_rows(batch, params, None, None))
        return out

    def _generate_rows(self, prompts: Sequence[str], params: SamplingParams, seed: int | None,
                       max_time: float | None) -> list[list[Completion]]:
        """``params.n`` completions for each of ``prompts``, in one ``generate`` call."""
        # heavy: loaded by _load() already
        import torch
        from transformers import GenerationConfig

        if seed is not None:
            torch.manual_seed(seed)
        tok = self.tokenizer
        enc = tok(list(prompts), return_tensors="pt", padding=True).to(self.device)
        greedy = params.temperature == 0
        # An explicit config so the model's own generation_config.json defaults
        # (top_k=50, repetition penalties...) do not creep in; vLLM uses none either.
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=not greedy,
            temperature=None if greedy else params.temperature,
            top_p=None if greedy else params.top_p,
            top_k=None,
            num_return_sequences=params.n,
            pad_token_id=tok.pad_token_id,
            eos_token_id=sorted(self.eos_ids) or None,
            stop_strings=list(params.stop) or None,
            max_time=max_time,
            output_logits=True,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            result = self.hf_model.generate(**enc, generation_config=config, tokenizer=tok)
        generated = result.sequences[:, enc["input_ids"].shape[1] :]
        # Raw log-probs of the chosen tokens (before temperature/top-p), as vLLM reports them.
        token_logprobs = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(1, generated[:, t : t + 1]).squeeze(1)
                for t, step in enumerate(result.logits)
            ],
            dim=1,
        ).double().cpu()
        decode = lambda ids: tok.decode(ids, skip_special_tokens=True)  # noqa: E731
        rows: list[Completion] = []
        for row, ids in enumerate(generated.cpu().tolist()):
            text, kept, reason = cut_completion(ids, decode, params.stop, self.eos_ids)
            rows.append(Completion(text=text, mean_logprob=mean_logprob(float(token_logprobs[row, :kept].sum()), kept),
                                   num_tokens=kept, finish_reason=reason))
        return [rows[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]


def _eos_ids(model, tokenizer) -> set[int]:
    """Every token id that ends generation: the tokenizer's EOS and the model's generation config's."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids
