"""Prometheus metrics in the text exposition format (version 0.0.4).

A few counters, gauges and histograms are all the server needs, so they are
written here in plain Python rather than pulling in a client library that the
HF-only install would not otherwise have. The output is checked in the tests
with prometheus_client's own parser.

>>> m = Metrics()
>>> m.requests.inc(endpoint="/v1/completions", code="200")
>>> "itercode_requests_total" in m.render()
True
"""
from __future__ import annotations

import math
import threading
from typing import Iterable

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    pairs = list(pairs)
    if not pairs:
        return ""
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}"


def _num(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    x = float(x)
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: tuple[str, ...] = ()):
        self.name, self.help, self.labelnames = name, help, labelnames
        self._lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[k]) for k in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class _Scalar(_Metric):
    """One number per label set (counters and gauges)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._values: dict[tuple[str, ...], float] = {}

    def _add(self, amount: float, labels: dict) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def lines(self) -> list[str]:
        # A metric without labels shows 0 from the start, so rates work at once.
        values = self._values or ({(): 0.0} if not self.labelnames else {})
        return [f"{self.name}{_labels(zip(self.labelnames, k))} {_num(v)}" for k, v in sorted(values.items())]


class Counter(_Scalar):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        self._add(amount, labels)


class Gauge(_Scalar):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._add(amount, labels)

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self._add(-amount, labels)


class Histogram(_Metric):
    kind = "histogram"

    def __init__(self, name, help, labelnames=(), buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)):
        super().__init__(name, help, labelnames)
        self.buckets = tuple(sorted(buckets)) + (math.inf,)
        self._series: dict[tuple[str, ...], list] = {}  # key -> [bucket counts..., sum, count]

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            s = self._series.setdefault(key, [0] * len(self.buckets) + [0.0, 0])
            for i, b in enumerate(self.buckets):
                if value <= b:
                    s[i] += 1
            s[-2] += value
            s[-1] += 1

    def lines(self) -> list[str]:
        out = []
        for key, s in sorted(self._series.items()):
            base = list(zip(self.labelnames, key))
            for i, b in enumerate(self.buckets):
                out.append(f"{self.name}_bucket{_labels(base + [('le', _num(b))])} {s[i]}")
            out.append(f"{self.name}_sum{_labels(base)} {_num(s[-2])}")
            out.append(f"{self.name}_count{_labels(base)} {s[-1]}")
        return out


class Metrics:
    """Everything the server exports at GET /metrics."""

    def __init__(self):
        p = "itercode_"
        self.requests = Counter(p + "requests_total", "HTTP requests answered, by endpoint and status code.", ("endpoint", "code"))
        self.latency = Histogram(p + "request_duration_seconds", "Wall time of answered completion requests.", ("endpoint",))
        self.rejected = Counter(p + "rejected_total", "Requests refused before work began, by reason.", ("reason",))
        self.inflight = Gauge(p + "requests_in_flight", "Completion requests admitted and not yet answered (working or waiting).")
        self.waiting = Gauge(p + "requests_waiting", "Admitted requests waiting for a work slot.")
        self.candidates = Counter(p + "candidates_generated_total", "Candidates drawn from the engine.")
        self.completion_tokens = Counter(p + "completion_tokens_total", "Tokens generated over all candidates.")
        self.prompt_tokens = Counter(p + "prompt_tokens_total", "Prompt tokens of answered requests.")
        self.verdicts = Counter(p + "sandbox_verdicts_total", "Sandbox verdicts of request-carried tests, by status.", ("status",))
        self.engine_running = Gauge(p + "engine_requests_running", "Generation calls inside the engine right now.")
        self.engine_peak = Gauge(p + "engine_requests_running_peak", "Most generation calls inside the engine at once since start (above 1 means requests were batched together).")
        self.info = Gauge(p + "server_info", "Constant 1; labels describe the server.", ("backend", "model", "scorer"))
        self._all = [
            self.requests, self.latency, self.rejected, self.inflight, self.waiting, self.candidates,
            self.completion_tokens, self.prompt_tokens, self.verdicts, self.engine_running, self.engine_peak, self.info,
        ]

    def render(self) -> str:
        lines: list[str] = []
        for m in self._all:
            body = m.lines()
            if body:
                lines += m.header() + body
        return "\n".join(lines) + "\n"
