"""Iterative decoding inside one request (``"decoding": {"strategy": "iad", "rounds": T}``).

The request's candidates (``n_candidates``, the budget) are drawn over T
rounds of n_candidates / T. After each round the verifier checks them: the
request's own tests when it carries some, else the docstring examples of the
prompt (`codegen.decoding.verifiers.ExamplesVerifier`), else nothing but the
scorer's score. The next round's prompt shows the best and the worst
candidate so far (`codegen.decoding.feedback`: comments before the prompt
for completions, a chat model's user message through its template), shrunk
to leave max_tokens of the context. The request stops early once its best
candidate satisfies the verifier. `IADState` (`codegen.decoding.iterative`)
keeps the rounds; the answer is its best candidate.
"""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from typing import Any

from codegen.app.server.ranking import Candidate, extract_code
from codegen.decoding.feedback import SHORTER, base_feedback, chat_feedback
from codegen.decoding.iterative import IADState, round_seed
from codegen.decoding.verifiers import Check, ExamplesVerifier, check_of_verdict
from codegen.decoding.bestof import ranking
from codegen.doctests import docstring_examples, prompt_function
from codegen.problems import Problem
from codegen.samplers import SamplingParams


def _examples_problem(prompt: str, continuation: bool) -> Problem | None:
    """The prompt's docstring examples as a problem to check candidates on (None without examples)."""
    entry = prompt_function(prompt)
    if entry is None or not docstring_examples(prompt, entry):
        return None
    return Problem(task_id=f"request-examples-{uuid.uuid4().hex[:12]}", prompt=prompt, tests="", entry_point=entry,
                   code_prefix=prompt if continuation else "")


def _round_prompt(server, state: IADState, prompt: str, messages: list[dict] | None, max_tokens: int) -> str:
    """The prompt of a later round: ``prompt`` with the feedback, shrunk until max_tokens fit the context."""
    best, worst = state.best.attempt(), state.worst.attempt()
    name = state.problem.entry_point or "the function"
    engine = server.engine
    context = engine.context_length
    text = prompt
    for show_worst, max_lines in SHORTER:
        if messages is not None:  # a chat template renders it: the feedback joins the last user message
            feedback = chat_feedback(name, best, worst if show_worst else None, max_lines)
            last = max(i for i, m in enumerate(messages) if m["role"] == "user")
            shown = [dict(m) for m in messages]
            shown[last]["content"] += "\n\n" + feedback
            text, _ = engine.render_chat(shown)
        else:
            text = base_feedback(name, best, worst if show_worst else None, max_lines) + prompt
        if not context or engine.count_tokens([text])[0] + max_tokens <= context:
            return text
    return prompt


async def iad_candidates(server, prompt: str, problem: Problem | None, params: SamplingParams, extract: bool,
                         deadline: float, rounds: int, *, messages: list[dict] | None = None,
                         continuation: bool = True) -> tuple[list[Candidate], dict[str, Any]]:
    """Run the rounds; the candidates ranked best first (``rank`` set) and the ``itercode.decoding`` body.

    ``messages``: the chat conversation when a chat template renders the
    prompt (None for completions); ``continuation``: candidates continue the
    prompt (their program is prompt + text), else a candidate is a whole program.
    """
    per_round = params.n // rounds
    examples = None if problem is not None else _examples_problem(prompt, continuation)
    examples_verifier = ExamplesVerifier(server.tests.judge) if examples is not None else None
    verifier = "tests" if problem is not None else "examples" if examples is not None else "score only"
    scoring_problem = problem or Problem(task_id="request", prompt=prompt, tests="", entry_point="")
    state = IADState(problem or examples or Problem("request", prompt, "", prompt_function(prompt) or ""))
    score_name = "mean log-prob" if server.scorer.name == "mean_logprob" else "reranker score"
    candidates: list[Candidate] = []
    prompt_tokens = 0
    for r in range(rounds):
        if r and state.satisfied:
            break
        text = prompt if r == 0 else _round_prompt(server, state, prompt, messages, params.max_tokens)
        prompt_tokens += server.engine.count_tokens([text])[0]
        seed = None if params.seed is None else round_seed(params.seed, r)
        with server.metrics.timed("generate"):
            outs = await server.engine.generate(text, dataclasses.replace(params, n=per_round, seed=seed), deadline=deadline)
        new = [Candidate(index=len(candidates) + i, text=o.text, code=extract_code(o.text) if extract else o.text,
                         mean_logprob=o.mean_logprob, num_tokens=o.num_tokens, finish_reason=o.finish_reason)
               for i, o in enumerate(outs)]
        with server.metrics.timed("score"):
            scores = await server.scorer.score(scoring_problem, new)
        for c, s in zip(new, scores):
            c.score = float(s)
        with server.metrics.timed("tests"):
            checks = await _checks(server, problem, examples, examples_verifier, new)
        for c, check in zip(new, checks):
            check.score, check.score_name = c.score, score_name
            c.round, c.check = r, check.to_dict()
        candidates += new
        state.add_round(outs, checks, prompt=text)
    order = ranking([c.check.key for c in state.candidates])
    ranked = [candidates[i] for i in order]
    for rank, c in enumerate(ranked):
        c.rank = rank
    info = {
        "strategy": "iad", "verifier": verifier, "rounds_planned": rounds, "per_round": per_round,
        "rounds_run": len(state.rounds), "stopped_early": state.satisfied and len(state.rounds) < rounds,
        "prompt_tokens": prompt_tokens,
        "rounds": [{"round": rd["round"], "prompt": rd["prompt"],
                    "candidates": [c.index for c in candidates if c.round == rd["round"]]} for rd in state.rounds],
    }
    return ranked, info


async def _checks(server, problem: Problem | None, examples: Problem | None, verifier: ExamplesVerifier | None,
                  cands: list[Candidate]) -> list[Check]:
    if problem is not None:
        verdicts = await server.tests.run(problem, cands)
        for c, v in zip(cands, verdicts):
            c.verdict = v
            server.metrics.verdicts.labels(status=v["status"]).inc()
        return [check_of_verdict(v) for v in verdicts]
    if verifier is not None:
        return await asyncio.to_thread(verifier.check, [(examples, c.code) for c in cands])
    return [Check() for _ in cands]
