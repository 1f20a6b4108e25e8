"""Samplers: prompts in, n completions per prompt out, batched.

Backends: ``vllm`` (default where installed), ``hf`` (transformers generate)
and ``openai`` (any OpenAI-compatible server, e.g. a `vllm serve` fleet).
Use `make_sampler(backend, model, **options)`; heavy imports happen there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence

# HumanEval's usual stop sequences: a new top-level statement ends the function.
HUMANEVAL_STOP = ["\nclass ", "\ndef ", "\n#", "\nif __name__", "\nprint(", "\n```"]


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 256
    seed: int | None = None
    stop: list[str] = field(default_factory=lambda: list(HUMANEVAL_STOP))


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
