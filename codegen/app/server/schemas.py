"""Request and response bodies: OpenAI's schema plus itercode's extension fields.

Requests are strict (``extra="forbid"``), like OpenAI's own API: a misspelt
field such as ``n_candidate`` is a 400 that names it, not a silently ignored
setting. Fields OpenAI clients commonly send with neutral values
(``frequency_penalty=0``, ``logit_bias={}``, ``user``...) are accepted; a
non-neutral value of one this server does not implement is a 400 that says so.

Extension fields (send them with the openai client's ``extra_body=``):

- ``n_candidates``: how many candidates to draw and rerank (default: the
  server's ``--n-candidates``). OpenAI's ``best_of`` means the same and is
  accepted as an alias.
- ``tests``: ``{"code": ..., "entry_point": ..., "prefix": ...}``. ``code`` is
  test program text (HumanEval style ``def check(candidate): ...`` or bare
  asserts); candidates that pass rank first. ``prefix`` is the trusted code a
  candidate continues (completions: default the prompt; chat: default none).

- ``decoding``: ``{"strategy": "iad", "rounds": T}`` answers by iterative
  decoding (`codegen.decoding`): the candidates (``n_candidates``, the
  budget) are drawn over T rounds of n_candidates / T, each later round's
  prompt showing the best and worst so far with their verdicts; the verifier
  is the request's ``tests`` when it carries them, else the prompt's
  docstring examples (and the scorer's score); a request whose verifier is
  satisfied stops early. ``{"strategy": "bon"}`` is best-of-n. Default: the
  server's ``--decoding`` and ``--rounds``.

Responses carry ``itercode``: the scorer used, ``n_candidates``,
``tests_run``, ``sandbox`` (the backend and version that ran the tests, null
without tests) and every candidate (``index``, ``rank`` with 0 the answer,
``text``, ``score``, ``mean_logprob``, ``num_tokens``, ``finish_reason`` and
``verdict``, as `codegen.judging.verdict_dict` writes it: ``status``,
``passed``, ``tests_passed``, ``tests_total``, ``duration_s``, ``stderr``,
``provoked``, ``cached``, ``attempts``). ``usage.completion_tokens`` counts
all candidates' tokens. With iterative decoding each candidate also has
``round`` and ``check`` (`codegen.decoding.verifiers.Check`: ``line``,
``failure``, ``satisfied``...), and ``itercode.decoding`` shows the
strategy, the verifier, ``rounds_run`` of ``rounds_planned``,
``stopped_early`` and each round's prompt and candidate indices.
Responses are built as plain dicts in `codegen.app.server.app`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class ParamError(ValueError):
    """A ValueError that knows which request field it is about.

    Pydantic keeps the exception in the error's ``ctx``; the app reads
    ``param`` from it so that checks spanning several fields still name one.
    """

    def __init__(self, param: str, message: str):
        super().__init__(message)
        self.param = param


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TestsSpec(_Strict):
    code: str = Field(min_length=1)
    entry_point: str = Field(min_length=1)
    prefix: str | None = None

    @field_validator("entry_point")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v.isidentifier():
            raise ValueError(f"entry_point must be a Python identifier, got {v!r}")
        return v


class DecodingSpec(_Strict):
    strategy: Literal["bon", "iad"] = "iad"
    rounds: int | None = Field(None, ge=1)


class _RequestBase(_Strict):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    user: str | None = None
    # Accepted only at their neutral values (clients send them by default).
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    stream_options: dict[str, Any] | None = None
    # itercode extensions.
    n_candidates: int | None = Field(None, ge=1)
    best_of: int | None = Field(None, ge=1)
    tests: TestsSpec | None = None
    decoding: DecodingSpec | None = None

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v):
        if isinstance(v, str):
            v = [v]
        if v is not None:
            if len(v) > 8:
                raise ValueError(f"at most 8 stop sequences, got {len(v)}")
            if any(s == "" for s in v):
                raise ValueError("stop sequences must not be empty strings")
        return v

    @model_validator(mode="after")
    def _unsupported(self):
        if self.stream:
            raise ParamError("stream", "stream=true is not supported: reranking needs every candidate finished; send stream=false")
        for name in ("frequency_penalty", "presence_penalty"):
            if getattr(self, name) not in (None, 0, 0.0):
                raise ParamError(name, f"{name} is not supported by this server; leave it out or send 0")
        if self.logit_bias:
            raise ParamError("logit_bias", "logit_bias is not supported by this server; leave it out")
        if self.n_candidates is not None and self.best_of is not None and self.n_candidates != self.best_of:
            raise ParamError("best_of", "n_candidates and best_of mean the same thing; send one of them")
        return self

    def requested_candidates(self) -> int | None:
        return self.n_candidates if self.n_candidates is not None else self.best_of


class CompletionRequest(_RequestBase):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, v):
        # One prompt per request: every prompt needs its own candidates and
        # reranking, and clients batch by sending requests concurrently.
        if isinstance(v, list):
            if len(v) != 1:
                raise ValueError(f"send exactly one prompt per request (got a list of {len(v)}); send concurrent requests instead")
            v = v[0]
        if not isinstance(v, str) or v == "":
            raise ValueError("prompt must be a non-empty string")
        return v

    @model_validator(mode="after")
    def _completion_unsupported(self):
        if self.echo:
            raise ParamError("echo", "echo=true is not supported; leave it out")
        if self.logprobs is not None:
            raise ParamError("logprobs", "logprobs is not supported; each candidate's mean log-prob is in the itercode field")
        if self.suffix:
            raise ParamError("suffix", "suffix (fill-in-the-middle) is not supported; leave it out")
        return self


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[dict[str, Any]]
    name: str | None = None

    def text(self) -> str:
        """The message's text; list content keeps only its text parts."""
        if isinstance(self.content, str):
            return self.content
        parts = []
        for part in self.content:
            if part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise ValueError("only text content parts are supported")
            parts.append(part["text"])
        return "".join(parts)


class ChatCompletionRequest(_RequestBase):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _messages_text(self):
        for i, m in enumerate(self.messages):
            try:
                m.text()
            except ValueError as e:
                raise ParamError(f"messages.{i}.content", str(e)) from None
        if self.max_tokens is not None and self.max_completion_tokens is not None and self.max_tokens != self.max_completion_tokens:
            raise ParamError("max_completion_tokens", "max_tokens and max_completion_tokens mean the same thing; send one of them")
        return self

    def requested_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
