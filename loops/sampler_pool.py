"""One live sampling engine at a time, for one model.

A vLLM engine holds its own processes and memory, so a loop keeps at most
one: the engine that evaluated model k also samples round k+1 (same
weights), and it is shut down before training or when another model is
asked for.
"""
from __future__ import annotations

import gc
import time
from typing import Any, Callable

from codegen.samplers import make_sampler
from loops.config import ITERTLConfig

Log = Callable[[str], None]


class SamplerPool:
    """At most one live sampler, for one model. Ask for another model and the old one is shut down."""

    def __init__(self, cfg: ITERTLConfig, log: Log = print):
        self.cfg = cfg
        self.log = log
        self.model: str | None = None
        self.sampler = None
        self.loads = 0  # engines created (tests check that evaluate k and sample k+1 share one)

    def get(self, model: str):
        if self.sampler is not None and self.model == model:
            return self.sampler
        self.close()
        options: dict[str, Any] = {"seed": self.cfg.seed}
        if self.cfg.sampler in ("vllm", "vllm-ray"):
            # A step budget of 16k tokens batches hundreds of prompts x n (the engine keeps
            # prefills whole on the CPU: see vllm_engine.cpu_scheduling_options).
            options.update(kv_cache_gib=self.cfg.vllm_kv_cache_gb, dtype="float32", max_num_batched_tokens=16384)
        if self.cfg.sampler == "vllm-ray":  # the replicas, each an engine as above, on the cluster
            options.update(replicas=self.cfg.replicas, ray_address=self.cfg.ray_address)
        t0 = time.monotonic()
        self.sampler = make_sampler(self.cfg.sampler, model, **options)
        self.model = model
        self.loads += 1
        self.log(f"  loaded {self.cfg.sampler} sampler on {model} in {time.monotonic() - t0:.1f}s")
        return self.sampler

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()
            self.sampler, self.model = None, None
            gc.collect()
