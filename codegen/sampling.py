"""From problems to samples: build prompts, check them against the context,
call a sampler, and label every completion with a stable id.

>>> # sampler = make_sampler("vllm", "runs/starter")
>>> # samples = sample_problems(sampler, problems, SamplingParams(n=16), model_name="runs/starter")
>>> # samples[0].sample_id  -> "synthetic/0#0"
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

from codegen.errors import UserError
from codegen.problems import Problem
from codegen.samplers import Completion, Sampler, SamplingParams
from codegen.samples import Sample


def build_prompts(sampler: Sampler, problems: Sequence[Problem], chat_template: bool = False) -> list[str]:
    """The text each problem is sampled from: its prompt, chat-formatted when asked."""
    if not chat_template:
        return [p.prompt for p in problems]
    apply = getattr(sampler, "apply_chat_template", None)
    if apply is None:
        raise UserError(
            f"--chat-template is not available with the {type(sampler).__name__} backend: "
            "use --backend vllm or hf, or drop --chat-template"
        )
    return [apply(p.prompt) for p in problems]


def token_budgets(sampler: Sampler, problems: Sequence[Problem], prompts: list[str], max_tokens: int) -> list[int]:
    """Per prompt, how many tokens may be generated without passing the model's context.

    A prompt that leaves no room at all is an error naming the problem; one that
    leaves less than ``max_tokens`` gets a smaller budget (vLLM would stop there too).
    Backends that cannot count tokens (openai) get ``max_tokens`` everywhere and
    the server reports overlong prompts.
    """
    count = getattr(sampler, "count_tokens", None)
    context = getattr(sampler, "context_length", None)
    if count is None or context is None:
        return [max_tokens] * len(prompts)
    budgets = []
    for problem, n_tokens in zip(problems, count(prompts)):
        room = context - n_tokens
        if room < 1:
            raise UserError(
                f"the prompt of {problem.task_id} is {n_tokens} tokens, longer than the model's context of "
                f"{context} tokens: use a model with a longer context or leave this problem out"
            )
        budgets.append(min(max_tokens, room))
    return budgets


def generate_prompts(sampler: Sampler, problems: Sequence[Problem], prompts: Sequence[str],
                     params: SamplingParams) -> list[list[Completion]]:
    """``params.n`` completions of each prompt (``prompts[i]`` is problem ``i``'s text, built by the caller).

    Prompts near the context end get a smaller max_tokens (`token_budgets`);
    prompts are grouped by budget so each group is one batched call (nearly
    always a single group).
    """
    prompts = list(prompts)
    budgets = token_budgets(sampler, problems, prompts, params.max_tokens)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, budget in enumerate(budgets):
        groups[budget].append(i)
    completions: list = [None] * len(prompts)
    for budget, indices in groups.items():
        group_params = SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=budget,
            seed=params.seed,
            stop=list(params.stop),
        )
        for i, outs in zip(indices, sampler.generate([prompts[i] for i in indices], group_params)):
            completions[i] = outs
    return completions


def sample_problems(
    sampler: Sampler,
    problems: Sequence[Problem],
    params: SamplingParams,
    *,
    model_name: str,
    round: int = 0,
    chat_template: bool = False,
) -> list[Sample]:
    """``params.n`` samples per problem, in problem order; sample ids are ``"<task_id>#<i>"``.

    Each sample carries the completion (the continuation of the prompt, stop
    string removed), ``mean_logprob`` and ``num_tokens``; ``meta`` records the
    sampling settings so a report can state them.
    """
    params.check()
    problems = list(problems)
    if not problems:
        raise UserError("no problems to sample: the problem set is empty")
    seen: set[str] = set()
    for p in problems:
        if p.task_id in seen:
            raise UserError(f"task_id {p.task_id!r} appears twice: sample ids must be unique, fix the problem file")
        seen.add(p.task_id)
    prompts = build_prompts(sampler, problems, chat_template)
    completions = generate_prompts(sampler, problems, prompts, params)

    meta = {
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "seed": params.seed,
        "chat_template": chat_template,
    }
    samples = []
    for problem, outs in zip(problems, completions):
        if len(outs) != params.n:
            raise RuntimeError(f"sampler returned {len(outs)} completions for {problem.task_id}, expected {params.n}")
        for i, c in enumerate(outs):
            samples.append(
                Sample(
                    task_id=problem.task_id,
                    completion=c.text,
                    sample_id=f"{problem.task_id}#{i}",
                    model=model_name,
                    round=round,
                    mean_logprob=c.mean_logprob,
                    num_tokens=c.num_tokens,
                    meta=dict(meta),
                )
            )
    return samples
