"""The FastAPI app: OpenAI-compatible endpoints that answer with the best candidate.

`create_app(config)` builds the app; uvicorn runs it (`itercode serve`). The
engine loads in the app's lifespan, before uvicorn opens the port, so a
server that answers /health is ready to generate.

Every error, ours or FastAPI's, leaves as OpenAI's error body
``{"error": {"message", "type", "param", "code"}}``:

- 400 bad JSON, unknown or invalid fields, a limit exceeded by the request
  (max_tokens, n_candidates, prompt longer than the context);
- 404 an unknown model or route; 413 a body above ``max_body_bytes``;
- 429 (with Retry-After) when ``max_concurrent`` requests are working and
  ``max_queue`` more are waiting;
- 503 (with Retry-After) when a request runs past ``request_timeout_s`` or the
  engine is down.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from codegen.app.server import metrics as metrics_mod
from codegen.app.server.config import ServerConfig
from codegen.app.server.iad import iad_candidates
from codegen.app.server.parsing import ApiError, parse, read_json
from codegen.app.server.ranking import Candidate, LogprobScorer, RerankerScorer, TestRunner, extract_code, order
from codegen.app.server.schemas import ChatCompletionRequest, CompletionRequest
from codegen.problems import Problem
from codegen.samplers import SamplingParams
from codegen.samplers.engine import EngineUnavailable, GenerationEngine, open_engine_async

log = logging.getLogger("itercode.server")


# ---- the app ---------------------------------------------------------------


class Server:
    """State shared by the handlers: engine, scorer, sandbox, admission, metrics."""

    def __init__(self, config: ServerConfig, engine: GenerationEngine | None = None, scorer=None, tests: TestRunner | None = None):
        self.config = config
        self.engine = engine
        self.scorer = scorer
        self.tests = tests or TestRunner.for_config(config)
        self.metrics = metrics_mod.Metrics()
        self.admitted = 0  # working + waiting
        self.slots: asyncio.Semaphore | None = None

    async def start(self) -> None:
        c = self.config
        self.slots = asyncio.Semaphore(c.max_concurrent)
        if self.engine is None:
            # The process's engine for this model (started here, on the server's event loop, unless running already).
            self.engine = await open_engine_async(c.backend, c.model, **c.engine_options())
        elif not self.engine.alive:
            await self.engine.start()
        await asyncio.to_thread(self.tests.start)
        if self.scorer is None:
            # On Ray the examples share the request tests' actors: a second set would find no free CPUs.
            shared = self.tests.judge if c.sandbox == "ray" else None
            self.scorer = (await asyncio.to_thread(RerankerScorer, c.reranker, c.sandbox, c.sandbox_workers, shared)
                           if c.reranker else LogprobScorer())
        self.metrics.info.labels(backend=self.engine.backend, model=c.model_id, scorer=self.scorer.name).set(1)

    async def stop(self) -> None:
        await asyncio.to_thread(self.tests.close)
        if hasattr(self.scorer, "close"):
            await asyncio.to_thread(self.scorer.close)
        if self.engine is not None:
            self.engine.release()

    # -- the two completion endpoints share everything below --------------

    def gen_params(self, req, max_tokens: int | None) -> SamplingParams:
        c = self.config
        n_cands = req.requested_candidates() or c.n_candidates
        param = "n_candidates" if req.n_candidates is not None else "best_of"
        if n_cands > c.max_candidates:
            raise ApiError(400, f"{param}={n_cands} is above this server's limit of {c.max_candidates}; ask for fewer",
                           param=param, code="limit_exceeded")
        if req.n > n_cands:
            raise ApiError(400, f"n={req.n} asks for more choices than the {n_cands} candidates drawn; "
                                f"raise n_candidates to at least {req.n} or lower n", param="n", code="invalid_value")
        max_tokens = max_tokens or c.default_max_tokens
        if max_tokens > c.max_tokens_limit:
            raise ApiError(400, f"max_tokens={max_tokens} is above this server's limit of {c.max_tokens_limit}; ask for fewer",
                           param="max_tokens", code="limit_exceeded")
        return SamplingParams(
            n=n_cands,
            max_tokens=max_tokens,
            temperature=c.temperature if req.temperature is None else req.temperature,
            top_p=c.top_p if req.top_p is None else req.top_p,
            stop=list(c.default_stop) if req.stop is None else list(req.stop),
            seed=req.seed,
        )

    def check_context(self, prompt_tokens: int, max_tokens: int) -> None:
        limit = self.engine.max_model_len
        if limit and prompt_tokens + max_tokens > limit:
            raise ApiError(400, f"this model's maximum context length is {limit} tokens, but {prompt_tokens + max_tokens} "
                                f"were requested ({prompt_tokens} in the prompt, {max_tokens} for the completion); "
                                "shorten the prompt or lower max_tokens", param="max_tokens", code="context_length_exceeded")

    def admit(self) -> None:
        c = self.config
        if not self.engine.alive:
            self.metrics.rejected.labels(reason="engine_down").inc()
            raise ApiError(503, "the engine is not running; try again later", type="server_error", code="engine_unavailable",
                           headers={"Retry-After": str(c.retry_after_s * 5)})
        if self.admitted >= c.max_concurrent + c.max_queue:
            self.metrics.rejected.labels(reason="queue_full").inc()
            raise ApiError(429, f"the server is at capacity ({c.max_concurrent} requests working, {c.max_queue} waiting); "
                                "retry after the Retry-After seconds", type="rate_limit_error", code="server_busy",
                           headers={"Retry-After": str(c.retry_after_s)})

    def decoding(self, req, params: SamplingParams) -> int:
        """The iad rounds a request asks for (its own `decoding` or the server's default); 0 for best-of-n."""
        c = self.config
        spec = req.decoding
        strategy = spec.strategy if spec is not None else c.decoding
        if strategy == "bon":
            if spec is not None and spec.rounds not in (None, 1):
                raise ApiError(400, "decoding.rounds is for strategy iad; best-of-n has one round",
                               param="decoding.rounds", code="invalid_value")
            return 0
        rounds = spec.rounds if spec is not None and spec.rounds is not None else c.rounds
        if rounds > c.max_rounds:
            raise ApiError(400, f"decoding.rounds={rounds} is above this server's limit of {c.max_rounds}; ask for fewer",
                           param="decoding.rounds", code="limit_exceeded")
        if params.n % rounds:
            raise ApiError(400, f"n_candidates={params.n} is not a multiple of decoding.rounds={rounds}: iad draws "
                                "n_candidates / rounds per round; send n_candidates as a multiple of rounds",
                           param="decoding.rounds", code="invalid_value")
        return rounds

    async def answer(self, req, prompt: str, problem: Problem | None, *, chat: bool, extract: bool, params: SamplingParams,
                     started: float, messages: list[dict] | None = None) -> JSONResponse:
        """Generate, score, test and order the candidates; the response.

        ``started``: the handler's time.perf_counter() on arrival, where the "prepare" stage begins.
        """
        prompt_ids = self.engine.tokenize(prompt)  # counted here, and handed to the engine as they are
        prompt_tokens = len(prompt_ids)
        self.check_context(prompt_tokens, params.max_tokens)
        rounds = self.decoding(req, params)
        self.admit()
        deadline = time.monotonic() + self.config.request_timeout_s
        self.admitted += 1
        decoding: dict[str, Any] = {"strategy": "bon"}
        self.metrics.stage.labels(stage="prepare").observe(time.perf_counter() - started)
        try:
            if rounds:
                work = self._work_iad(prompt, problem, params, extract, deadline, rounds,
                                      messages=messages if extract else None, continuation=not extract)
                ranked, decoding = await asyncio.wait_for(work, timeout=self.config.request_timeout_s)
                prompt_tokens = decoding["prompt_tokens"]
            else:
                work = self._work(prompt, problem, params, extract, deadline, prompt_ids)
                ranked = await asyncio.wait_for(work, timeout=self.config.request_timeout_s)
        except (asyncio.TimeoutError, TimeoutError):
            self.metrics.rejected.labels(reason="timeout").inc()
            raise ApiError(503, f"the request did not finish within the server's {self.config.request_timeout_s:g} s limit; "
                                "retry later, or ask for fewer candidates or tokens", type="server_error", code="timeout",
                           headers={"Retry-After": str(self.config.retry_after_s)}) from None
        except EngineUnavailable as e:
            raise ApiError(503, str(e), type="server_error", code="engine_unavailable",
                           headers={"Retry-After": str(self.config.retry_after_s * 5)}) from None
        finally:
            self.admitted -= 1
        with self.metrics.timed("respond"):
            return JSONResponse(self._body(req, ranked, problem, decoding, chat=chat, prompt_tokens=prompt_tokens,
                                           rounds=rounds))

    def _body(self, req, ranked: list[Candidate], problem: Problem | None, decoding: dict[str, Any], *, chat: bool,
              prompt_tokens: int, rounds: int) -> dict:
        """The response body (OpenAI's fields, then ``itercode``); counts the tokens in the metrics."""
        completion_tokens = sum(c.num_tokens for c in ranked)
        self.metrics.candidates.inc(len(ranked))
        self.metrics.completion_tokens.inc(completion_tokens)
        self.metrics.prompt_tokens.inc(prompt_tokens)
        choices = []
        for i, c in enumerate(ranked[: req.n]):
            choice: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason, "logprobs": None}
            if chat:
                choice["message"] = {"role": "assistant", "content": c.text}
            else:
                choice["text"] = c.text
            choices.append(choice)
        return {
            "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.config.model_id,
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
            "itercode": {
                "scorer": self.scorer.name,
                "n_candidates": len(ranked),
                "tests_run": problem is not None,
                "sandbox": self.tests.judge.describe() if problem is not None else None,
                "candidates": [
                    {"index": c.index, "rank": c.rank, "text": c.text, "score": _finite(c.score),
                     "mean_logprob": _finite(c.mean_logprob), "num_tokens": c.num_tokens,
                     "finish_reason": c.finish_reason, "verdict": c.verdict,
                     **({"round": c.round, "check": c.check} if rounds else {})}
                    for c in ranked
                ],
                "decoding": decoding,
            },
        }

    async def _work_iad(self, prompt: str, problem: Problem | None, params: SamplingParams, extract: bool, deadline: float,
                        rounds: int, **options) -> tuple[list[Candidate], dict]:
        async with self._slot():
            return await iad_candidates(self, prompt, problem, params, extract, deadline, rounds, **options)

    @contextlib.asynccontextmanager
    async def _slot(self):
        """One of ``max_concurrent`` request slots; the wait for it shows in the ``waiting`` gauge."""
        self.metrics.waiting.inc()
        try:
            with self.metrics.timed("wait"):
                await self.slots.acquire()
        finally:
            self.metrics.waiting.dec()
        try:
            yield
        finally:
            self.slots.release()

    async def _work(self, prompt: str, problem: Problem | None, params: SamplingParams, extract: bool, deadline: float,
                    prompt_ids: list[int]) -> list[Candidate]:
        m = self.metrics
        async with self._slot():
            with m.timed("generate"):
                outs = await self.engine.generate(prompt, params, deadline=deadline, prompt_ids=prompt_ids)
            cands = [
                Candidate(index=i, text=o.text, code=extract_code(o.text) if extract else o.text,
                          mean_logprob=o.mean_logprob, num_tokens=o.num_tokens, finish_reason=o.finish_reason)
                for i, o in enumerate(outs)
            ]
            scoring_problem = problem or Problem(task_id="request", prompt=prompt, tests="", entry_point="")
            with m.timed("score"):
                scores = await self.scorer.score(scoring_problem, cands)
            for c, s in zip(cands, scores):
                c.score = float(s)
            if problem is not None:
                with m.timed("tests"):
                    verdicts = await self.tests.run(problem, cands)
                for c, v in zip(cands, verdicts):
                    c.verdict = v
                    m.verdicts.labels(status=v["status"]).inc()
            return order(cands)


def _finite(x: float | None) -> float | None:
    # JSON has no infinities; a candidate without a score shows null.
    return x if x is not None and x == x and abs(x) != float("inf") else None


def _problem(req, prompt: str, continuation: bool) -> Problem | None:
    """The request's tests as a Problem: the sandbox runs prefix + candidate code.

    When the model continues the prompt (completions, or chat on a model
    without a chat template) the prefix defaults to the prompt; a chat answer
    is a whole program (its fenced block) and the prefix defaults to none.
    """
    if req.tests is None:
        return None
    t = req.tests
    prefix = t.prefix if t.prefix is not None else (prompt if continuation else "")
    return Problem(task_id=f"request-{uuid.uuid4().hex[:12]}", prompt=prompt, tests=t.code,
                   entry_point=t.entry_point, code_prefix=prefix)


def create_app(config: ServerConfig, *, engine: GenerationEngine | None = None, scorer=None, tests: TestRunner | None = None) -> FastAPI:
    """The server app. ``engine``/``scorer``/``tests`` default to what ``config`` names
    (pass ready-made ones to embed the server or to test its logic)."""
    config.check()
    server = Server(config, engine=engine, scorer=scorer, tests=tests)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        await server.start()
        try:
            yield
        finally:
            await server.stop()

    app = FastAPI(title="itercode reranked completions", lifespan=lifespan)
    app.state.server = server
    m = server.metrics

    app.add_middleware(metrics_mod.CountRequests, metrics=m)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        return ApiError(400, str(exc), code="invalid_value").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found" if exc.status_code == 404 else "method_not_allowed" if exc.status_code == 405 else None
        return ApiError(exc.status_code, f"{exc.detail}: {request.method} {request.url.path}", code=kind).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        log.exception("unhandled error on %s", request.url.path)
        return ApiError(500, f"internal server error: {type(exc).__name__}: {exc}", type="server_error", code="internal_error").response()

    @app.get("/health")
    async def health():
        ok = server.engine is not None and server.engine.alive
        body = {"status": "ok" if ok else "engine_down", "backend": server.engine.backend if server.engine else None,
                "model": config.model_id, "scorer": server.scorer.name if server.scorer else None,
                "sandbox": server.tests.judge.describe(),
                "requests_in_flight": server.admitted}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(config)]}

    def check_model(name: str) -> None:
        if name != config.model_id:
            raise ApiError(404, f"the model {name!r} does not exist here; this server serves {config.model_id!r} "
                                "(see GET /v1/models)", param="model", code="model_not_found")

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        check_model(model_id)
        return _model_card(config)

    @app.get("/metrics")
    async def prometheus():
        m.inflight.set(server.admitted)  # derived at scrape time, like the engine gauges
        if server.engine is not None:
            m.engine_running.set(server.engine.running)
            m.engine_peak.set(server.engine.peak_running)
        return PlainTextResponse(m.render(), media_type=metrics_mod.CONTENT_TYPE)

    @app.post("/v1/completions")
    async def completions(request: Request):
        t0 = time.perf_counter()
        req = parse(CompletionRequest, await read_json(request, config.max_body_bytes))
        check_model(req.model)
        params = server.gen_params(req, req.max_tokens)
        problem = _problem(req, req.prompt, continuation=True)
        response = await server.answer(req, req.prompt, problem, chat=False, extract=False, params=params, started=t0)
        m.latency.labels(endpoint="/v1/completions").observe(time.perf_counter() - t0)
        return response

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        t0 = time.perf_counter()
        req = parse(ChatCompletionRequest, await read_json(request, config.max_body_bytes))
        check_model(req.model)
        params = server.gen_params(req, req.requested_max_tokens())
        messages = [{"role": x.role, "content": x.text()} for x in req.messages]
        prompt, templated = server.engine.render_chat(messages)
        problem = _problem(req, prompt, continuation=not templated)
        response = await server.answer(req, prompt, problem, chat=True, extract=templated, params=params, started=t0,
                                       messages=messages)
        m.latency.labels(endpoint="/v1/chat/completions").observe(time.perf_counter() - t0)
        return response

    return app


def _model_card(config: ServerConfig) -> dict:
    return {"id": config.model_id, "object": "model", "created": 0, "owned_by": "itercode",
            "root": config.model, "itercode": {"backend": config.backend, "reranker": config.reranker,
                                               "n_candidates": config.n_candidates, "decoding": config.decoding,
                                               "rounds": config.rounds}}
