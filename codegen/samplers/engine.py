"""The generation engine: one per backend, model and engine options in a
process, shared by the offline samplers and the server.

`GenerationEngine` is async. ``await engine.generate(prompt, params)`` returns
``params.n`` completions of one prompt (the server's call);
``await engine.generate_many(prompts, params)`` returns them for a batch of
prompts, seeded as the samplers promise (the samplers' call). Both backends
report the statistics that `codegen.samplers` defines, cut stop strings with
`codegen.samplers._stops`, and render chat prompts with `codegen.samplers.chat`.

- `VLLMEngine` (vllm_engine.py) wraps vLLM's `AsyncLLM`: requests in flight
  run together in one continuous batch.
- `HFEngine` (hf_engine.py) runs transformers' ``generate`` in a worker
  thread, one call at a time.

Open engines with `open_engine` (synchronous callers: samplers, the loop) or
`open_engine_async` (the server, on its own event loop). The first open starts
the engine, later opens with the same backend, model and options share it, and
the last `release` stops it. An async engine is bound to the event loop it
started on; synchronous callers' engines run on one background loop (the
"itercode-engines" thread), and a call from another loop is passed to the
engine's own.
"""
from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import itertools
import threading
from typing import Any, Coroutine, Sequence, TypeVar

from codegen.samplers import LOCAL_BACKENDS, Completion, SamplingParams
from codegen.samplers import chat

T = TypeVar("T")


class EngineUnavailable(RuntimeError):
    """The engine died or is shut down; the server answers 503."""


class GenerationEngine:
    """Base: the tokenizer (token counts, chat templates), the event loop, and bookkeeping."""

    backend = "base"

    def __init__(self, model: str, *, seed: int = 0, max_model_len: int | None = None):
        self.model = model
        self.seed = seed  # seeds requests that carry none
        self.max_model_len = max_model_len
        self.tokenizer: Any = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.running = 0  # generate calls inside the engine now
        self.peak_running = 0  # the most at once since start
        self.users = 0  # opens not yet released (see open_engine)
        self._ids = itertools.count()

    # -- lifecycle -------------------------------------------------------
    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self._start()

    async def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        """Free the model and any processes; called on the engine's own loop when it runs."""

    def close(self) -> None:
        """Stop the engine now, from any thread (other users lose it too: prefer `release`)."""
        _forget(self)
        if self.loop is not None and self.loop.is_running() and _running_loop() is not self.loop:
            asyncio.run_coroutine_threadsafe(_call(self._stop), self.loop).result(timeout=120)
        else:
            self._stop()

    def release(self) -> None:
        """Give back one open; the last one stops the engine."""
        self.users -= 1
        if self.users <= 0:
            self.close()

    @property
    def alive(self) -> bool:
        return True

    @property
    def context_length(self) -> int:
        """The longest sequence (prompt + completion) the engine takes."""
        return int(self.max_model_len or 0)

    # -- text ------------------------------------------------------------
    def count_tokens(self, prompts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in self.tokenizer(list(prompts))["input_ids"]]

    def tokenize(self, prompt: str) -> list[int]:
        """The token ids the model reads for ``prompt`` (what `generate` takes as ``prompt_ids``)."""
        return list(self.tokenizer(prompt)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]]) -> tuple[str, bool]:
        return chat.render_chat(self.tokenizer, messages)

    def apply_chat_template(self, prompt: str) -> str:
        return chat.instruction_prompt(self.tokenizer, prompt, self.model)

    # -- generation ------------------------------------------------------
    @contextlib.contextmanager
    def _in_engine(self):
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        try:
            yield
        finally:
            self.running -= 1

    async def generate(self, prompt: str, params: SamplingParams, *, deadline: float | None = None,
                       prompt_ids: Sequence[int] | None = None) -> list[Completion]:
        """``params.n`` completions of ``prompt``; ``deadline`` is a time.monotonic() value.

        ``params.seed`` seeds this request; None takes a seed from the engine's own.
        ``prompt_ids``: ``tokenize(prompt)`` when the caller has it already (the
        server counts the prompt's tokens first), so vLLM does not tokenize again.
        """
        return await self._on_own_loop(self._generate(prompt, params, deadline, prompt_ids=prompt_ids))

    async def generate_many(self, prompts: Sequence[str], params: SamplingParams, *, batch_size: int = 64,
                            progress: bool = False) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions; ``params.seed`` (None: the engine's seed) makes reruns repeat.

        ``batch_size`` bounds the sequences (prompts x n) per model call where
        the backend batches itself (HF); vLLM schedules all prompts at once.
        """
        if params.seed is None:
            params = dataclasses.replace(params, seed=self.seed)
        return await self._on_own_loop(self._generate_many(list(prompts), params, batch_size, progress))

    async def _generate(self, prompt: str, params: SamplingParams, deadline: float | None, *,
                        prompt_ids: Sequence[int] | None = None) -> list[Completion]:
        raise NotImplementedError

    async def _generate_many(self, prompts: list[str], params: SamplingParams, batch_size: int,
                             progress: bool) -> list[list[Completion]]:
        raise NotImplementedError

    async def _on_own_loop(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop is None or _running_loop() is self.loop:
            return await coro
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))


# ---- the engines of this process --------------------------------------------

_ENGINES: dict[tuple, GenerationEngine] = {}
_LOCK = threading.Lock()  # held while a synchronous open starts an engine: one such start at a time
_LOOP: asyncio.AbstractEventLoop | None = None
_LOOP_LOCK = threading.Lock()


def new_engine(backend: str, model: str, **options) -> GenerationEngine:
    """An engine object, not started; use `open_engine` unless you manage its life yourself."""
    if backend == "vllm":
        # heavy: loaded when chosen, its start loads vLLM (and it imports this module: no top-level import)
        from codegen.samplers.vllm_engine import VLLMEngine

        return VLLMEngine(model, **options)
    if backend == "hf":
        from codegen.samplers.hf_engine import HFEngine  # heavy: loaded when chosen, its start loads torch (as above)

        return HFEngine(model, **options)
    raise ValueError(f"unknown engine backend {backend!r}: use one of {', '.join(LOCAL_BACKENDS)}")


def open_engine(backend: str, model: str, **options) -> GenerationEngine:
    """The running engine for ``backend``, ``model`` and ``options``, started on first use; `release` it after."""
    key = _key(backend, model, options)
    with _LOCK:
        engine = _live(key)
        if engine is None:
            engine = new_engine(backend, model, **options)
            _start(engine, run_sync, key)
        engine.users += 1
        return engine


async def open_engine_async(backend: str, model: str, **options) -> GenerationEngine:
    """`open_engine` for a caller on an event loop: a new engine starts on that loop."""
    key = _key(backend, model, options)
    engine = _live(key)
    if engine is None:
        # Not under _LOCK: the start awaits. Two concurrent first opens would start
        # two engines; a server opens its engine once, at start-up.
        engine = new_engine(backend, model, **options)
        try:
            await engine.start()
        except BaseException:
            engine.close()  # whatever the start left behind (processes, the reaper)
            raise
        _ENGINES[key] = engine
    engine.users += 1
    return engine


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the engines' background loop and wait; Ctrl-C cancels it (vLLM aborts its requests)."""
    if _running_loop() is not None:
        coro.close()
        raise RuntimeError("run_sync was called on a running event loop: await the engine there instead")
    future = asyncio.run_coroutine_threadsafe(coro, _engine_loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()
        raise


def close_all() -> None:
    """Stop every engine of this process (at exit, or when a caller wants the memory back)."""
    for engine in list(_ENGINES.values()):
        engine.close()


def _key(backend: str, model: str, options: dict) -> tuple:
    return (backend, model, tuple(sorted((k, repr(v)) for k, v in options.items())))


def _live(key: tuple) -> GenerationEngine | None:
    engine = _ENGINES.get(key)
    return engine if engine is not None and engine.alive else None


def _start(engine: GenerationEngine, run, key: tuple) -> None:
    try:
        run(engine.start())
    except BaseException:
        engine.close()  # whatever the start left behind (processes, the reaper)
        raise
    _ENGINES[key] = engine


def _forget(engine: GenerationEngine) -> None:
    for key, value in list(_ENGINES.items()):
        if value is engine:
            del _ENGINES[key]


def _engine_loop() -> asyncio.AbstractEventLoop:
    global _LOOP
    with _LOOP_LOCK:
        if _LOOP is None:
            loop = asyncio.new_event_loop()
            # A daemon thread: it must not keep the process alive; engines are stopped at exit (close_all).
            threading.Thread(target=loop.run_forever, name="itercode-engines", daemon=True).start()
            _LOOP = loop
        return _LOOP


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


async def _call(fn) -> None:
    fn()


atexit.register(close_all)
