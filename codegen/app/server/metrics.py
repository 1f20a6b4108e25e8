"""What the server exports at GET /metrics, with prometheus_client.

Each `Metrics` keeps its metrics in its own `CollectorRegistry`, so two apps
in one process (tests, a benchmark) never share or collide on a name, and
vLLM's own metrics in the global registry stay out of our page.
`CountRequests` is the app's outermost layer: it counts every response by
endpoint and status code.

>>> m = Metrics()
>>> m.requests.labels(endpoint="/v1/completions", code="200").inc()
>>> "itercode_requests_total" in m.render()
True
"""
from __future__ import annotations

import contextlib
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

# No `*_created` gauge beside every counter and histogram: in the classic text
# format they double the page and nothing here reads them. (A process-wide
# switch; the server process exports only this page.)
disable_created_metrics()
# What `generate_latest` writes: the classic text format, which every Prometheus scrapes.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# Stages run from well under a millisecond (parsing) to the whole request (generation).
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# What a completion request's wall time is spent on, in order (`Metrics.stage`).
STAGES = ("prepare", "wait", "generate", "score", "tests", "respond")


class Metrics:
    """Every metric the server exports, in a registry of its own."""

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        p, r = "itercode_", self.registry
        self.requests = Counter(p + "requests_total", "HTTP requests answered, by endpoint and status code.",
                                ("endpoint", "code"), registry=r)
        self.latency = Histogram(p + "request_duration_seconds", "Wall time of answered completion requests.",
                                 ("endpoint",), buckets=LATENCY_BUCKETS, registry=r)
        self.rejected = Counter(p + "rejected_total", "Requests refused before work began, by reason.", ("reason",),
                                registry=r)
        self.inflight = Gauge(p + "requests_in_flight",
                              "Completion requests admitted and not yet answered (working or waiting).", registry=r)
        self.waiting = Gauge(p + "requests_waiting", "Admitted requests waiting for a work slot.", registry=r)
        self.candidates = Counter(p + "candidates_generated_total", "Candidates drawn from the engine.", registry=r)
        self.completion_tokens = Counter(p + "completion_tokens_total", "Tokens generated over all candidates.",
                                         registry=r)
        self.prompt_tokens = Counter(p + "prompt_tokens_total", "Prompt tokens of answered requests.", registry=r)
        self.verdicts = Counter(p + "sandbox_verdicts_total", "Sandbox verdicts of request-carried tests, by status.",
                                ("status",), registry=r)
        self.engine_running = Gauge(p + "engine_requests_running", "Generation calls inside the engine right now.",
                                    registry=r)
        self.engine_peak = Gauge(p + "engine_requests_running_peak",
                                 "Most generation calls inside the engine at once since start "
                                 "(above 1 means requests were batched together).", registry=r)
        self.stage = Histogram(p + "request_stage_seconds",
                               "Wall time of each stage of a completion request: prepare (read, validate, count "
                               "prompt tokens), wait (for a work slot), generate (the engine), score, tests (the "
                               "sandbox), respond (order and build the body).", ("stage",), buckets=STAGE_BUCKETS,
                               registry=r)
        self.info = Gauge(p + "server_info", "Constant 1; labels describe the server.", ("backend", "model", "scorer"),
                          registry=r)

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Observe the block's wall time as ``stage`` (one of `STAGES`)."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stage.labels(stage=stage).observe(time.perf_counter() - t0)

    def render(self) -> str:
        """The page in the text format `CONTENT_TYPE` names."""
        return generate_latest(self.registry).decode("utf-8")


_KNOWN = ("/v1/completions", "/v1/chat/completions", "/v1/models", "/health", "/metrics")


class CountRequests:
    """Counts responses by endpoint and status code.

    A plain ASGI wrapper: Starlette's ``@app.middleware("http")`` would run
    every request through an extra task and memory stream.
    """

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        status = 500  # an exception that escapes becomes a 500 further out

        async def send_and_note(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            self.metrics.requests.labels(endpoint=_endpoint_label(scope["path"]), code=str(status)).inc()


def _endpoint_label(path: str) -> str:
    # Unknown paths share one label so a scanner cannot blow up the metric's cardinality.
    return path if path in _KNOWN else "/v1/models/{id}" if path.startswith("/v1/models/") else "other"
