"""The HF transformers sampler: batched ``model.generate`` with left padding.

Slower than vLLM (no paged attention or continuous batching) but needs nothing
beyond transformers, and it is the reference that the vLLM backend is checked
against (tests/test_samplers.py: greedy outputs agree). Reproducible: the same
seed, prompts and batch size give the same samples.
"""
from __future__ import annotations

import math
from typing import Sequence

from tqdm.auto import tqdm

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams
from codegen.samplers._stops import cut_completion
from codegen.samplers.chat import apply_chat_template


class HFSampler:
    """Sample with transformers. ``batch_size`` bounds the sequences (prompts x n) per generate call."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 64,
        dtype: str = "float32",
        device: str | None = None,
        seed: int = 0,
        progress: bool = False,
        trust_remote_code: bool = False,
    ):
        # heavy: torch and transformers load only when an HF sampler is made
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if batch_size < 1:
            raise UserError(f"batch_size must be at least 1 (got {batch_size})")
        self.model_name = model
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
            self.model = AutoModelForCausalLM.from_pretrained(
                model, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
            )
        except OSError as e:
            raise UserError(f"could not load model {model!r} with transformers: {e}") from None
        self.model.to(self.device).eval()
        # Left padding keeps every prompt's last token at the end of the row,
        # where generation continues from.
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = _eos_ids(self.model, self.tokenizer)

    @property
    def context_length(self) -> int:
        """The model's maximum sequence length (prompt + completion), as vLLM derives it."""
        return int(self.model.config.max_position_embeddings)

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def apply_chat_template(self, prompt: str) -> str:
        return apply_chat_template(self.tokenizer, prompt, self.model_name)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions; rows are batched ``batch_size // n`` prompts at a time."""
        import torch  # heavy: loaded by the constructor already

        params.check()
        prompts = list(prompts)
        per_batch = max(1, self.batch_size // params.n)
        batches = [prompts[i : i + per_batch] for i in range(0, len(prompts), per_batch)]
        # One seed per call: reruns with the same prompts and batch size repeat exactly.
        torch.manual_seed(self.seed if params.seed is None else params.seed)
        out: list[list[Completion]] = []
        for batch in tqdm(batches, desc="hf generate", unit="batch", disable=not self.progress):
            out.extend(self._generate_batch(batch, params))
        return out

    def _generate_batch(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        # heavy: loaded by the constructor already
        import torch
        from transformers import GenerationConfig

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True).to(self.device)
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
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=sorted(self.eos_ids) or None,
            stop_strings=list(params.stop) or None,
            output_logits=True,
            return_dict_in_generate=True,
        )
        with torch.inference_mode():
            result = self.model.generate(**enc, generation_config=config, tokenizer=self.tokenizer)
        generated = result.sequences[:, enc["input_ids"].shape[1] :]
        # Raw log-probs of the chosen tokens (before temperature/top-p), as vLLM reports them.
        token_logprobs = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(1, generated[:, t : t + 1]).squeeze(1)
                for t, step in enumerate(result.logits)
            ],
            dim=1,
        ).cpu()
        generated = generated.cpu().tolist()
        decode = lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
        rows: list[Completion] = []
        for row, ids in enumerate(generated):
            text, kept = cut_completion(ids, decode, params.stop, self.eos_ids)
            mean = float(token_logprobs[row, :kept].mean()) if kept else None
            rows.append(Completion(text=text, mean_logprob=mean if mean is None or math.isfinite(mean) else None, num_tokens=kept))
        return [rows[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def close(self) -> None:
        self.model = None


def _eos_ids(model, tokenizer) -> set[int]:
    """Every token id that ends generation: the tokenizer's EOS and the model's generation config's."""
    ids: set[int] = set()
    for value in (tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids
