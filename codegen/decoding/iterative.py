"""Best-of-N and iterative decoding (IAD) at the same number of generations.

Both spend a budget of N generations per problem:

- ``bon``: N candidates from the plain prompt, one round; the answer is the
  candidate the verifier ranks first (`codegen.decoding.bestof`).
- ``iad``: T rounds of K = N / T candidates. Round 0 samples the plain
  prompt; every later round samples a prompt that shows the best and the
  worst candidate so far with their verdicts (`codegen.decoding.feedback`).
  The best-so-far is kept across rounds (a round can only improve the
  answer), and a problem stops early once its best candidate satisfies the
  verifier (its budget is then not spent: the output counts what was).

Two controls isolate where a gain comes from (``feedback``): ``none`` runs
the same rounds with the plain prompt every round (sampling diversity
alone), ``shuffled`` shows another problem's feedback (a derangement of the
batch, seeded).

`decode_problems` runs all problems together, one batched sampler call and
one verifier call per round. `IADState` is one problem's rounds: the server
drives it one request at a time (`codegen.app.server`).

Each round samples with its own seed (``seed + round * ROUND_SEED_STRIDE``):
the same prompt in two rounds must not give the same candidates.

Output (`decode_problems`): one row per problem, in `codegen.samples`'s
format (``task_id``, ``completion``: the pick), so `itercode eval` scores the
picks' pass@1; ``decode`` holds every round's candidates with their checks,
the pick's place, generations and tokens (prompt tokens count once per
generation: K generations of a prompt of P tokens are K * P).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from codegen.decoding.bestof import best_index, ranking
from codegen.decoding.feedback import SHORTER, Attempt, base_feedback, chat_feedback
from codegen.decoding.verifiers import Check, Verifier
from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samplers import Completion, Sampler, SamplingParams
from codegen.samplers import chat
from codegen.sampling import generate_prompts

STRATEGIES = ("bon", "iad")
FEEDBACK_MODES = ("verifier", "none", "shuffled")
ROUND_SEED_STRIDE = 1_000_003


@dataclass
class DecodeSettings:
    """How to decode. ``budget``: generations per problem (N); ``rounds``: T (iad only)."""

    strategy: str = "iad"
    budget: int = 8
    rounds: int = 4
    feedback: str = "verifier"
    early_stop: bool = True
    chat_template: bool = False

    @property
    def plan(self) -> tuple[int, int]:
        """(rounds, candidates per round)."""
        return (1, self.budget) if self.strategy == "bon" else (self.rounds, self.budget // self.rounds)

    def check(self) -> "DecodeSettings":
        if self.strategy not in STRATEGIES:
            raise UserError(f"unknown --strategy {self.strategy!r}: use one of {', '.join(STRATEGIES)}")
        if self.feedback not in FEEDBACK_MODES:
            raise UserError(f"unknown feedback {self.feedback!r}: use one of {', '.join(FEEDBACK_MODES)}")
        if self.budget < 1:
            raise UserError(f"--budget must be at least 1 generation per problem (got {self.budget})")
        if self.strategy == "iad":
            if self.rounds < 1:
                raise UserError(f"--rounds must be at least 1 (got {self.rounds})")
            if self.budget % self.rounds:
                raise UserError(f"--budget {self.budget} is not a multiple of --rounds {self.rounds}: iad draws "
                                f"budget/rounds candidates per round; choose e.g. --budget {self.rounds * max(1, self.budget // self.rounds)}")
        return self


@dataclass
class Candidate:
    round: int
    index: int  # within its round
    completion: str
    check: Check
    num_tokens: int = 0
    mean_logprob: float | None = None

    def attempt(self) -> Attempt:
        return Attempt(self.completion, self.check)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "completion": self.completion, "num_tokens": self.num_tokens,
                "mean_logprob": self.mean_logprob, "check": self.check.to_dict()}


@dataclass
class IADState:
    """One problem's rounds: the candidates so far, the best and worst of them, and when to stop."""

    problem: Problem
    candidates: list[Candidate] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def _order(self) -> list[int]:
        return ranking([c.check.key for c in self.candidates])

    @property
    def best(self) -> Candidate | None:
        """The best candidate so far (the earliest of a tie)."""
        return self.candidates[best_index([c.check.key for c in self.candidates])] if self.candidates else None

    @property
    def worst(self) -> Candidate | None:
        return self.candidates[self._order()[-1]] if self.candidates else None

    @property
    def satisfied(self) -> bool:
        return self.best is not None and self.best.check.satisfied

    def add_round(self, completions: Sequence[Completion], checks: Sequence[Check], *, prompt: str,
                  prompt_tokens: int | None = None, feedback_from: str | None = None) -> None:
        r = len(self.rounds)
        new = [Candidate(r, i, c.text, check, c.num_tokens, c.mean_logprob)
               for i, (c, check) in enumerate(zip(completions, checks))]
        self.candidates += new
        self.rounds.append({"round": r, "prompt": prompt, "feedback_from": feedback_from,
                            "prompt_tokens": None if prompt_tokens is None else prompt_tokens * len(new),
                            "candidates": [c.to_dict() for c in new]})


def refine_prompt(problem: Problem, source: IADState | None, *, tokenizer=None, chat_template: bool = False,
                  fits: Callable[[str], bool] | None = None) -> str:
    """The prompt of a round: plain (no ``source`` or no candidates yet) or with ``source``'s feedback.

    ``source`` is the problem's own state, or another problem's (shuffled
    feedback). ``fits(prompt)`` says whether a prompt leaves the model room
    to answer; the feedback shrinks (`codegen.decoding.feedback.SHORTER`)
    until it does, down to the plain prompt.
    """
    variants = []
    if source is not None and source.candidates:
        name, best, worst = source.problem.entry_point, source.best.attempt(), source.worst.attempt()
        for show_worst, max_lines in SHORTER:
            if chat_template:
                feedback = chat_feedback(name, best, worst if show_worst else None, max_lines)
                variants.append(chat.instruction_prompt(tokenizer, problem.prompt, feedback=feedback))
            else:
                variants.append(base_feedback(name, best, worst if show_worst else None, max_lines) + problem.prompt)
    plain = chat.instruction_prompt(tokenizer, problem.prompt) if chat_template else problem.prompt
    for text in variants:
        if fits is None or fits(text):
            return text
    return plain


def room_check(sampler, max_tokens: int) -> Callable[[str], bool] | None:
    """``fits(prompt)``: the prompt leaves ``max_tokens`` of the model's context (None: the backend cannot count)."""
    count, context = getattr(sampler, "count_tokens", None), getattr(sampler, "context_length", None)
    if count is None or not context:
        return None
    return lambda text: count([text])[0] + max_tokens <= context


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation of range(n) with no fixed point (``n >= 2``).

    >>> p = derangement(5, 0); sorted(p) == list(range(5)) and all(i != j for i, j in enumerate(p))
    True
    """
    order = list(range(n))
    random.Random(seed).shuffle(order)
    # Each one takes the next one's place in the shuffled cycle: nobody keeps its own.
    out = [0] * n
    for a, b in zip(order, order[1:] + order[:1]):
        out[a] = b
    return out


def round_seed(seed: int, round_: int) -> int:
    return seed + round_ * ROUND_SEED_STRIDE


def decode_problems(sampler: Sampler, problems: Sequence[Problem], verifier: Verifier, settings: DecodeSettings,
                    params: SamplingParams, *, model_name: str = "",
                    log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Decode every problem with ``settings`` (see the module docstring); one picks row each, in order.

    ``params`` gives temperature, top_p, max_tokens, stop and the base seed
    (its ``n`` is ignored: the settings decide the candidates per round).
    """
    settings.check()
    problems = list(problems)
    if not problems:
        raise UserError("no problems to decode: the problem set is empty")
    if settings.feedback == "shuffled" and len(problems) < 2:
        raise UserError("shuffled feedback shows another problem's feedback: decode at least 2 problems")
    if settings.chat_template and getattr(sampler, "tokenizer", None) is None:
        raise UserError(f"--chat-template is not available with the {type(sampler).__name__} backend: "
                        "use --backend vllm or hf, or drop --chat-template")
    rounds, per_round = settings.plan
    base_seed = 0 if params.seed is None else params.seed
    states = [IADState(p) for p in problems]
    others = derangement(len(states), base_seed) if settings.feedback == "shuffled" else None
    count = getattr(sampler, "count_tokens", None)
    fits = room_check(sampler, params.max_tokens)
    started = time.monotonic()
    for r in range(rounds):
        active = [i for i, s in enumerate(states) if not (settings.early_stop and s.satisfied)]
        if not active:
            break
        sources = [_feedback_source(states, i, settings, others) for i in active]
        prompts = [refine_prompt(states[i].problem, src, tokenizer=getattr(sampler, "tokenizer", None),
                                 chat_template=settings.chat_template, fits=fits) for i, src in zip(active, sources)]
        round_params = SamplingParams(n=per_round, temperature=params.temperature, top_p=params.top_p,
                                      max_tokens=params.max_tokens, seed=round_seed(base_seed, r),
                                      stop=list(params.stop))
        outs = generate_prompts(sampler, [states[i].problem for i in active], prompts, round_params)
        items = [(states[i].problem, c.text) for i, cs in zip(active, outs) for c in cs]
        checks = verifier.check(items)
        tokens = count(prompts) if count is not None else [None] * len(prompts)
        at = 0
        for i, cs, src, text, n_tok in zip(active, outs, sources, prompts, tokens):
            states[i].add_round(cs, checks[at: at + len(cs)], prompt=text, prompt_tokens=n_tok,
                                feedback_from=src.problem.task_id if src is not None and src.candidates else None)
            at += len(cs)
        if log:
            solved = sum(s.satisfied for s in states)
            log(f"round {r + 1}/{rounds}: {len(active)} problems sampled x {per_round}; "
                f"verifier satisfied on {solved}/{len(states)} ({time.monotonic() - started:.1f} s)")
    return [pick_row(s, settings, verifier, model_name) for s in states]


def _feedback_source(states: list[IADState], i: int, settings: DecodeSettings, others: list[int] | None) -> IADState | None:
    if settings.strategy == "bon" or settings.feedback == "none":
        return None
    if settings.feedback == "shuffled":
        return states[others[i]]
    return states[i]


def pick_row(state: IADState, settings: DecodeSettings, verifier: Verifier, model_name: str) -> dict[str, Any]:
    """The picks-file row of one problem: the best candidate, and how it was found."""
    best = state.best
    rounds_planned, per_round = settings.plan
    prompt_tokens = [r["prompt_tokens"] for r in state.rounds]
    return {
        "task_id": state.problem.task_id,
        "completion": best.completion,
        "sample_id": f"{state.problem.task_id}#pick",
        "model": model_name,
        "round": best.round,
        "mean_logprob": best.mean_logprob,
        "num_tokens": best.num_tokens,
        "meta": {"strategy": settings.strategy, "verifier": verifier.name,
                 "analysis_only": bool(verifier.analysis_only)},
        "decode": {
            "strategy": settings.strategy,
            "verifier": verifier.name,
            # The oracle's hidden tests also grade the pick: such a run is for analysis only.
            "analysis_only": bool(verifier.analysis_only),
            "feedback": settings.feedback if settings.strategy == "iad" else None,
            "budget": settings.budget,
            "rounds_planned": rounds_planned,
            "per_round": per_round,
            "rounds_run": len(state.rounds),
            "generations": len(state.candidates),
            "stopped_early": state.satisfied and len(state.rounds) < rounds_planned,
            "prompt_tokens": None if None in prompt_tokens else sum(prompt_tokens),
            "completion_tokens": sum(c.num_tokens for c in state.candidates),
            "pick": {"round": best.round, "index": best.index, "check": best.check.to_dict()},
            "rounds": state.rounds,
        },
    }
