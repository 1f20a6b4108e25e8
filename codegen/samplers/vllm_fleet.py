"""The ``vllm-ray`` sampler: data-parallel vLLM replicas as Ray actors, one sampler.

`VLLMFleetSampler` starts ``replicas`` Ray actors, spread over the cluster's
nodes, each holding one vLLM engine on ``model`` (the `VLLMSampler` of its
node: on a GPU node one GPU per replica, ``gpus_per_replica``; on the CPU
``cpus_per_replica`` logical CPUs). ``generate`` splits the prompts into one
contiguous share per replica, runs the shares at once and puts the
completions back in prompt order.

Same samples as one engine: `VLLMSampler` gives prompt ``i`` of a call the
seed ``seed + i * n``; a share that starts at prompt ``o`` is sent with seed
``seed + o * n``, so every prompt keeps the seed it would have had in one
engine, whatever the number of replicas.

Faults: a replica that dies during a call (its node lost, an OOM kill) is
dropped, and its share runs again on a live replica with the same seeds;
with no replica left the call raises. ``model`` must be readable at the same
path on every node (a shared file system, or a hub id every node can fetch),
and every node needs itercode with vLLM installed.

>>> # sampler = make_sampler("vllm-ray", "runs/demo/round-1/train/model", replicas=2)
>>> # sampler.generate(prompts, SamplingParams(n=10))
"""
from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams
from sandbox import ray_runtime

# vLLM loads a model in 15-90 s on a loaded CPU machine; a GPU node can take minutes for a large one.
READY_TIMEOUT_S = 900.0


class ReplicaActor:
    """One vLLM engine on one node (the class Ray runs as an actor)."""

    def __init__(self, model: str, seed: int, engine_options: dict):
        from codegen.samplers.vllm_backend import VLLMSampler  # heavy: torch and vLLM, in the replica's process

        self.sampler = VLLMSampler(model, seed=seed, **engine_options)
        self.calls = 0

    def info(self) -> dict:
        import ray  # heavy: Ray (already loaded in an actor)

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "context_length": self.sampler.context_length, "calls": self.calls}

    def generate(self, prompts: list[str], params: SamplingParams) -> list[list[Completion]]:
        self.calls += 1
        return self.sampler.generate(prompts, params)

    def count_tokens(self, prompts: list[str]) -> list[int]:
        return self.sampler.count_tokens(prompts)

    def apply_chat_template(self, prompt: str) -> str:
        return self.sampler.apply_chat_template(prompt)

    def close(self) -> None:
        self.sampler.close()


def shares(count: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` contiguous (start, stop) ranges over ``count`` items, sizes within one of each other.

    >>> shares(5, 2)
    [(0, 3), (3, 5)]
    >>> shares(1, 3)
    [(0, 1)]
    """
    parts = max(1, min(parts, count))
    base, extra = divmod(count, parts)
    out, start = [], 0
    for k in range(parts):
        stop = start + base + (1 if k < extra else 0)
        out.append((start, stop))
        start = stop
    return out


class VLLMFleetSampler:
    """Sample ``model`` with ``replicas`` vLLM engines placed by Ray (see the module docstring).

    ``ray_address``: see `sandbox.ray_runtime` (default ``$RAY_ADDRESS``, else
    a local Ray runtime); ``seed``, ``kv_cache_gib``, ``dtype`` and other
    engine options as for ``make_sampler("vllm", ...)``.
    """

    def __init__(self, model: str, *, replicas: int = 2, ray_address: str | None = None, seed: int = 0,
                 gpus_per_replica: float | None = None, cpus_per_replica: float = 1,
                 ready_timeout_s: float = READY_TIMEOUT_S, progress: bool = False, **engine_options):
        if replicas < 1:
            raise UserError(f"--replicas must be at least 1, got {replicas}")
        self.model_name, self.seed = model, seed
        self._ray_runtime = ray_runtime  # the one Ray connection, shared with the sandbox's actors
        self._ray = ray_runtime.acquire(ray_address)
        self._replicas: list = []
        try:
            self._start(replicas, gpus_per_replica, cpus_per_replica, ready_timeout_s, engine_options)
        except BaseException:
            self.close()
            raise

    def _start(self, replicas: int, gpus: float | None, cpus: float, timeout_s: float, engine_options: dict) -> None:
        ray = self._ray
        if gpus is None:  # one GPU each where the cluster has GPUs, none on a CPU cluster
            gpus = 1 if ray.cluster_resources().get("GPU", 0) >= replicas else 0
        remote = ray.remote(ReplicaActor).options(num_cpus=cpus, num_gpus=gpus, max_restarts=0,
                                                  scheduling_strategy="SPREAD")
        handles = [remote.remote(self.model_name, self.seed, engine_options) for _ in range(replicas)]
        self._replicas = list(handles)
        refs = [h.info.remote() for h in handles]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(ready) < len(refs):
            raise UserError(
                f"only {len(ready)} of {replicas} vLLM replicas started within {timeout_s:g} s "
                f"(free: {ray.available_resources()}); each wants {cpus:g} CPU(s) and {gpus:g} GPU(s): "
                "add nodes, lower --replicas, or raise the timeout")
        self.infos = ray.get(refs)  # a replica that failed to load raises here, with vLLM's reason
        self.context_length = min(i["context_length"] for i in self.infos)

    @property
    def replicas(self) -> int:
        return len(self._replicas)

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions; the prompts are split over the replicas."""
        params.check()
        if params.seed is None:
            params = dataclasses.replace(params, seed=self.seed)
        prompts = list(prompts)
        out: list[list[Completion] | None] = [None] * len(prompts)
        todo = shares(len(prompts), len(self._replicas)) if prompts else []
        while todo:
            pending = {}
            for k, (start, stop) in enumerate(todo):
                if not self._replicas:
                    raise RuntimeError("every vLLM replica of the fleet has died; start the sampler again")
                replica = self._replicas[k % len(self._replicas)]
                share = dataclasses.replace(params, seed=params.seed + start * params.n)
                pending[replica.generate.remote(prompts[start:stop], share)] = (replica, start, stop)
            todo = []
            for ref, (replica, start, stop) in pending.items():
                try:
                    out[start:stop] = self._ray.get(ref)
                except self._ray.exceptions.RayActorError:
                    # Its node or process died: drop it; the share runs again elsewhere, same seeds.
                    if replica in self._replicas:
                        self._replicas.remove(replica)
                    todo.append((start, stop))
        return out  # type: ignore[return-value]

    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return self._ray.get(self._replicas[0].count_tokens.remote(list(prompts)))

    def apply_chat_template(self, prompt: str) -> str:
        return self._ray.get(self._replicas[0].apply_chat_template.remote(prompt))

    def close(self) -> None:
        """Stop every replica (each stops its engine first) and release Ray."""
        replicas, self._replicas = getattr(self, "_replicas", []), []
        ray = getattr(self, "_ray", None)
        if ray is None:
            return
        self._ray = None
        if replicas:
            try:
                ray.wait([r.close.remote() for r in replicas], num_returns=len(replicas), timeout=60)
            except Exception:  # noqa: BLE001 - Ray may be down already
                pass
            for r in replicas:
                try:
                    ray.kill(r, no_restart=True)
                except Exception:  # noqa: BLE001
                    pass
        self._ray_runtime.release()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass
