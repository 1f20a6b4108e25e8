"""Verdicts -> rewards, in the shape TRL's trainers call reward functions.

TRL calls a reward function as ``f(prompts, completions, **columns)`` and
wants one float per completion, or ``None`` where it has nothing to say
(GRPO then leaves that completion out of its group's baseline). Here one
column is required: ``verdict``, one per completion, either the dict
`codegen.evaluate.evaluate_samples` writes (``status``, ``passed``,
``tests_passed``, ``tests_total``) or a `sandbox.base.Verdict`.

- `pass_reward`: 1.0 when the program passed its tests, else 0.0;
- `fraction_reward`: the share of the tests it passed (0.0 when none ran,
  say after a syntax error);
- both give ``None`` for ``infra_error``: the host's sandbox broke, not the
  program, so the verdict earns neither reward nor penalty.

`reward` answers the same for one verdict, for code that keeps or drops
candidates by their verdicts (ITERTL's select stage, the reranker's pairs).
An RL trainer has no verdicts yet: `codegen.execution_rewards` makes reward
functions that run each completion first (and uses `reward` on the verdicts).

>>> pass_reward(["p"] * 3, ["a", "b", "c"], verdict=[{"status": "passed", "passed": True},
...                                                  {"status": "failed", "passed": False},
...                                                  {"status": "infra_error", "passed": False}])
[1.0, 0.0, None]
>>> reward({"status": "failed", "passed": False, "tests_passed": 3, "tests_total": 4}, "fraction")
0.75
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, Union

from codegen.errors import UserError
from sandbox.base import INFRA_ERROR, PASSED, Verdict

VerdictLike = Union[Mapping[str, Any], Verdict]
RewardFunc = Callable[..., list]  # TRL's shape: (prompts, completions, **columns) -> list[float | None]
KINDS = ("pass", "fraction")


def _get(verdict: VerdictLike, name: str, default: Any = None) -> Any:
    if isinstance(verdict, Mapping):
        return verdict.get(name, default)
    return getattr(verdict, name, default)


def is_infra_error(verdict: VerdictLike) -> bool:
    """True when the sandbox, not the program, failed: no signal about the program."""
    return _get(verdict, "status") == INFRA_ERROR


def passed(verdict: VerdictLike) -> bool:
    """Did the program pass its tests? An infra error never counts as a pass."""
    if is_infra_error(verdict):
        return False
    return bool(_get(verdict, "passed", _get(verdict, "status") == PASSED))


def share_of_tests_passed(verdict: VerdictLike) -> float:
    """The share of the tests passed; a verdict without test counts is all or nothing."""
    total = _get(verdict, "tests_total") or 0
    if not total:
        return 1.0 if passed(verdict) else 0.0
    return (_get(verdict, "tests_passed") or 0) / total


def reward(verdict: VerdictLike, kind: str = "pass") -> float | None:
    """One verdict's reward: ``kind`` "pass" (1.0 or 0.0) or "fraction"; None for an infra error."""
    if kind not in KINDS:
        raise UserError(f"unknown reward kind {kind!r}; use one of {', '.join(KINDS)}")
    if is_infra_error(verdict):
        return None
    return (1.0 if passed(verdict) else 0.0) if kind == "pass" else share_of_tests_passed(verdict)


def _rewards(completions: Sequence, verdict: Sequence[VerdictLike] | None, kind: str) -> list[float | None]:
    if verdict is None:
        raise UserError("a verdict reward needs the `verdict` column: one verdict per completion, "
                        "from `itercode eval` or codegen.evaluate.evaluate_samples")
    if len(verdict) != len(completions):
        raise ValueError(f"{len(completions)} completions but {len(verdict)} verdicts: one verdict per completion")
    return [reward(v, kind) for v in verdict]


def pass_reward(prompts: Sequence, completions: Sequence, *, verdict: Sequence[VerdictLike] | None = None,
                **columns: Any) -> list[float | None]:
    """1.0 per passing completion, 0.0 per failing one, None per infra error (TRL's signature)."""
    return _rewards(completions, verdict, "pass")


def fraction_reward(prompts: Sequence, completions: Sequence, *, verdict: Sequence[VerdictLike] | None = None,
                    **columns: Any) -> list[float | None]:
    """The share of its tests each completion passed, None per infra error (TRL's signature)."""
    return _rewards(completions, verdict, "fraction")


REWARD_FUNCS: dict[str, RewardFunc] = {"pass": pass_reward, "fraction": fraction_reward}
