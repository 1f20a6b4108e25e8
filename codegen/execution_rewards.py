"""Rewards that execute: a generation batch in, one reward per completion out, in TRL's signature.

`codegen.rewards` turns verdicts someone already has into rewards. An RL
trainer (TRL's GRPOTrainer, RLOOTrainer) has none: it calls its reward
functions with a fresh batch of completions, ``f(prompts, completions,
**columns)``, every dataset column passed as a keyword. `execution_reward`
makes such a function. Per call it builds every completion's program,
runs the whole batch through one `codegen.judging.Judge` (the one sandbox
path: verdict cache, de-duplication, parallel workers, any backend, the infra
retry) and turns each verdict into a reward with `codegen.rewards.reward`.

Kinds (weights of a combination, or one kind alone):

- ``pass``: 1.0 when the program passes the problem's hidden tests, else 0.0;
- ``fraction``: the share of the hidden tests it passes;
- ``examples``: the share of the prompt's own docstring examples
  (`codegen.doctests`) it gets right. Only the examples run: the hidden tests
  are never part of this kind's jobs. A prompt without a checkable example
  gives 0.0 to each of its completions (one group, one value: no advantage);
- any name in ``scorers``: another reward function in TRL's signature (e.g.
  `rerankers.rewards.reranker_reward`), so a reranker's score can be mixed in
  here without core codegen importing rerankers.

The dataset needs a ``task_id`` column naming each row's problem. A reward is
``None`` only where the host failed (``infra_error`` after the judge's retry,
in any part of a combination): TRL then leaves that completion out of its
group's baseline. An error the run provoked (verdict ``provoked``) is the
run's own error: 0.0. One function computes a combination, rather than one
TRL reward function per kind, because TRL sums several functions' rewards
with ``nansum``: a ``None`` in one part would silently count as 0.

Every call counts each verdict's status per source (``tests/passed``,
``examples/timeout``, ``tests/provoked``, ``reward_none``, ...): the rates of
the last call are ``fn.last_stats``; ``fn.stats`` accumulates until
``fn.drain()``; and when TRL passes its ``log_metric`` keyword the rates go
into the trainer's logs as ``status/<name>/<key>`` every step.

>>> # fn = execution_reward({"pass": 1.0, "examples": 0.5}, "process", problems)
>>> # GRPOTrainer(..., reward_funcs=[fn]); fn.last_stats["tests/passed"]
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Mapping, Sequence

from codegen.doctests import example_tests
from codegen.errors import UserError
from codegen.judging import Judge, to_job
from codegen.problems import Problem
from codegen.rewards import RewardFunc, reward
from codegen.samplers._stops import first_stop
from codegen.samples import Sample
from sandbox.base import STATUSES, Limits

# kind -> (what it runs, which reward of that verdict)
EXECUTION_KINDS = {"pass": ("tests", "pass"), "fraction": ("tests", "fraction"), "examples": ("examples", "fraction")}
SOURCES = ("tests", "examples")
NO_EXAMPLES = "none"  # the status counted for a prompt that shows no checkable example


def cut_at_stop(completion: str, stop: Sequence[str]) -> str:
    """``completion`` up to its first stop string, as the samplers cut it for evaluation.

    >>> cut_at_stop("    return 1\\ndef other():", ["\\ndef "])
    '    return 1'
    """
    at = first_stop(completion, stop) if stop else -1
    return completion if at < 0 else completion[:at]


def plain_text(completions: Sequence[Any]) -> list[str]:
    """Completions as strings; a conversational batch (lists of messages) is refused with the fix."""
    if all(isinstance(c, str) for c in completions):
        return list(completions)
    raise UserError("execution rewards read plain-text completions: give the trainer a dataset whose `prompt` "
                    "column holds strings (the problem's prompt), not chat messages")


class RewardStats:
    """Counts of verdict statuses per source, and of ``None`` rewards, over the completions seen."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.completions = 0

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] += n

    def update(self, other: "RewardStats") -> None:
        self.counts.update(other.counts)
        self.completions += other.completions

    def rates(self) -> dict[str, float]:
        """``{"tests/passed": share, ..., "reward_none": share}``: every status of each source run, 0.0 if unseen.

        Unseen statuses are listed too, so that every step logs the same keys.
        """
        if not self.completions:
            return {}
        sources = [s for s in SOURCES if any(k.startswith(s + "/") for k in self.counts)]
        keys = [f"{s}/{status}" for s in sources
                for status in (*STATUSES, "provoked", *([NO_EXAMPLES] if s == "examples" else []))]
        return {k: self.counts[k] / self.completions for k in [*keys, "reward_none"]}

    def reset(self) -> None:
        self.counts.clear()
        self.completions = 0


class ExecutionReward:
    """A reward function in TRL's signature that runs each completion; see the module docstring."""

    def __init__(self, weights: Mapping[str, float], judge: Judge, problems: Mapping[str, Problem],
                 limits: Limits = Limits(), *, scorers: Mapping[str, RewardFunc] | None = None,
                 stop: Sequence[str] = (), name: str | None = None, owns_judge: bool = False):
        self.scorers = dict(scorers or {})
        self.weights = check_weights(weights, self.scorers)
        self.judge, self.owns_judge = judge, owns_judge
        self.problems = problems
        self.limits = limits
        self.stop = list(stop)
        self.__name__ = name or reward_name(self.weights)  # TRL logs rewards under the function's name
        self.sources = sorted({EXECUTION_KINDS[k][0] for k in self.weights if k in EXECUTION_KINDS})
        self._examples: dict[str, Problem | None] = {}
        self.stats = RewardStats()
        self.last_stats: dict[str, float] = {}

    def __call__(self, prompts: Sequence, completions: Sequence, *, task_id: Sequence[str] | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **columns: Any) -> list[float | None]:
        texts = [cut_at_stop(c, self.stop) for c in plain_text(completions)]
        problems = self._problems(task_id, len(texts))
        verdicts = self._judge(problems, texts)
        parts = {k: [reward(v, EXECUTION_KINDS[k][1]) if v else 0.0 for v in verdicts[EXECUTION_KINDS[k][0]]]
                 for k in self.weights if k in EXECUTION_KINDS}
        for k in self.weights:
            if k in self.scorers:
                parts[k] = list(self.scorers[k](prompts, completions, task_id=task_id, log_metric=log_metric, **columns))
        rewards = [None if any(parts[k][i] is None for k in parts)
                   else sum(self.weights[k] * parts[k][i] for k in parts) for i in range(len(texts))]
        self._count(verdicts, rewards, log_metric)
        return rewards

    def _problems(self, task_id: Sequence[str] | None, n: int) -> list[Problem]:
        if task_id is None or len(task_id) != n:
            raise UserError("an execution reward needs a `task_id` column, one per completion, naming each row's "
                            "problem: keep it in the trainer's dataset (GRPO/RLOO keep unused columns by default)")
        unknown = sorted({t for t in task_id if t not in self.problems})
        if unknown:
            raise UserError(f"{len(unknown)} task id(s) not among the reward's {len(self.problems)} problems, "
                            f"e.g. {unknown[0]!r}: build the reward with the problems the dataset was made from")
        return [self.problems[t] for t in task_id]

    def _examples_problem(self, problem: Problem) -> Problem | None:
        """The problem with its docstring examples as its only tests (None without examples)."""
        if problem.task_id not in self._examples:
            tests = example_tests(problem.prompt, problem.entry_point)
            self._examples[problem.task_id] = None if tests is None else Problem(
                problem.task_id, problem.prompt, tests, problem.entry_point, code_prefix=problem.code_prefix)
        return self._examples[problem.task_id]

    def _judge(self, problems: list[Problem], texts: list[str]) -> dict[str, list[dict | None]]:
        """Per source, one verdict per completion (None: no examples to run); one sandbox batch for all."""
        jobs, where = [], []
        for source in self.sources:
            for i, (problem, text) in enumerate(zip(problems, texts)):
                target = problem if source == "tests" else self._examples_problem(problem)
                if target is not None:
                    jobs.append(to_job(target, Sample(target.task_id, text, f"{source}:{i}")))
                    where.append((source, i))
        out: dict[str, list[dict | None]] = {s: [None] * len(texts) for s in self.sources}
        for (source, i), verdict in zip(where, self.judge.run(jobs, self.limits) if jobs else []):
            out[source][i] = verdict
        return out

    def _count(self, verdicts: dict[str, list[dict | None]], rewards: list, log_metric) -> None:
        call = RewardStats()
        call.completions = len(rewards)
        for source, column in verdicts.items():
            for v in column:
                call.add(f"{source}/{v['status'] if v else NO_EXAMPLES}")
                call.add(f"{source}/provoked", int(bool(v and v.get("provoked"))))
        call.add("reward_none", sum(r is None for r in rewards))
        self.stats.update(call)
        self.last_stats = call.rates()
        if log_metric is not None:
            for key, rate in self.last_stats.items():
                log_metric(f"status/{self.__name__}/{key}", rate)

    def drain(self) -> dict[str, float]:
        """The status rates over every call since the last drain, then start counting afresh."""
        rates = self.stats.rates()
        self.stats.reset()
        return rates

    def close(self) -> None:
        """Stop the sandbox, if this reward made its judge."""
        if self.owns_judge:
            self.judge.close()


def check_weights(weights: Mapping[str, float], scorers: Mapping[str, RewardFunc]) -> dict[str, float]:
    known = [*EXECUTION_KINDS, *scorers]
    unknown = [k for k in weights if k not in known]
    if not weights or unknown:
        raise UserError(f"unknown reward kind(s) {unknown or '(none given)'}: use one or more of "
                        f"{', '.join(known)} (pass another reward function under `scorers` to mix it in)")
    bad = [k for k, w in weights.items() if isinstance(w, bool) or not isinstance(w, (int, float))]
    if bad:
        raise UserError(f"reward weight(s) of {', '.join(bad)} must be numbers, e.g. {{'pass': 1.0, 'examples': 0.5}}")
    return {k: float(w) for k, w in weights.items()}


def reward_name(weights: Mapping[str, float]) -> str:
    """``exec_pass``, ``exec_pass+0.5examples``: the name TRL logs the reward under.

    >>> reward_name({"pass": 1.0, "examples": 0.5})
    'exec_pass+0.5examples'
    """
    return "exec_" + "+".join(k if w == 1 else f"{w:g}{k}" for k, w in weights.items())


def execution_reward(kind: str | Mapping[str, float], judge: Judge | str, problems: Mapping[str, Problem] | Sequence[Problem],
                     limits: Limits = Limits(), *, scorers: Mapping[str, RewardFunc] | None = None,
                     stop: Sequence[str] = (), workers: int | None = None, name: str | None = None,
                     backend_options: dict | None = None) -> ExecutionReward:
    """A reward function that executes each completion (see the module docstring).

    ``kind``: one of ``pass``, ``fraction``, ``examples`` (or a name in
    ``scorers``), or a mapping of kinds to weights, e.g. ``{"pass": 1.0,
    "examples": 0.5}``. ``judge``: a `Judge` to share (the caller closes it),
    or a backend name, for which a judge with ``workers`` and
    ``backend_options`` is made (closed by the reward's ``close``; e.g.
    ``"ray"`` with ``sandbox.backend_options("ray", "auto")``). ``problems``: by task id, or a sequence of them.
    ``stop``: cut each completion at its first stop string before running it,
    as the samplers cut what evaluation judges (e.g.
    `codegen.samplers.HUMANEVAL_STOP`).
    """
    weights = {kind: 1.0} if isinstance(kind, str) else dict(kind)
    by_id = dict(problems) if isinstance(problems, Mapping) else {p.task_id: p for p in problems}
    owns = isinstance(judge, str)
    return ExecutionReward(weights, Judge(judge, workers, options=backend_options) if owns else judge, by_id, limits, scorers=scorers,
                           stop=stop, name=name, owns_judge=owns)
