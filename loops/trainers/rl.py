"""Policy RL: TRL's GRPOTrainer / RLOOTrainer with execution rewards, and the monitor
that logs validation beside the training reward (the canary's input)."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from codegen.errors import UserError
from codegen.execution_rewards import cut_at_stop
from codegen.hardware import torch_threads
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.rewards import RewardFunc, passed
from codegen.samplers import HUMANEVAL_STOP
from loops.canary import Canary
from loops.trainers.common import fixed_args, load_policy, release, train_and_save
from sandbox.base import Limits


ALGOS = ("grpo", "rloo")
Validate = Callable[[Any, Any], float]  # (model, tokenizer) -> validation pass@1


class RLMonitor:
    """What an RL run logs: one record per trainer log, and validation points for the canary.

    ``on_record(record)`` receives each record as it is made (e.g. to append
    it to ``metrics.jsonl``): ``{"kind": "train", "step", "reward",
    "rewards/<fn>/mean", "status/<fn>/tests/passed", "kl", "clip_ratio/...",
    ...}`` for each optimizer step (the reward keys only on steps that
    generated: with ``num_iterations`` k, one step in k), and every
    ``validate_every`` steps (and at the last step) ``{"kind": "validation",
    "step", "train_reward" (mean over the interval), "validation_pass@1",
    "canary" (the flag, or None)}``. With ``validate_at_start`` a step-0
    point records validation before training (no reward yet: not a point of
    the canary's trend, but a best it measures a fall from). The monitor is
    plain logic; `train_grpo` attaches it to the trainer as a callback.
    """

    def __init__(self, *, validate: Validate | None = None, validate_every: int = 0, canary: Canary | None = None,
                 on_record: Callable[[dict], None] | None = None, validate_at_start: bool = True):
        if validate is not None and validate_every < 1:
            raise UserError(f"validate_every must be at least 1 step when a validation hook is given "
                            f"(got {validate_every}): the canary needs points at a fixed interval")
        self.validate, self.validate_every = validate, validate_every
        self.canary = canary if canary is not None else Canary()
        self.on_record, self.validate_at_start = on_record, validate_at_start
        self.records: list[dict] = []
        self.points: list[dict] = []
        self._interval_rewards: list[float] = []

    def train_begin(self, model: Any, tokenizer: Any) -> None:
        if self.validate is not None and self.validate_at_start:
            self._validation(0, model, tokenizer)

    def log(self, step: int, logs: Mapping[str, Any], model: Any = None, tokenizer: Any = None) -> None:
        if "train_runtime" in logs:  # the trainer's end-of-run summary, not a step
            return
        self._emit({"kind": "train", "step": step, **logs})
        reward = logs.get("reward")
        if reward is not None and not math.isnan(reward):
            self._interval_rewards.append(float(reward))
        # Due at every multiple of validate_every; ">=" so a step that logged nothing (logging_steps > 1 in
        # trl_args) delays the validation to the next log rather than skipping it.
        if self.validate is not None and step >= self._next_due:
            self._validation(step, model, tokenizer)

    def train_end(self, step: int, model: Any, tokenizer: Any) -> None:
        if self.validate is not None and not self._validated(step):
            self._validation(step, model, tokenizer)

    def _validated(self, step: int) -> bool:
        return bool(self.points) and self.points[-1]["step"] == step

    @property
    def _next_due(self) -> int:
        last = max((p["step"] for p in self.points), default=0)
        return (last // self.validate_every + 1) * self.validate_every

    def _validation(self, step: int, model: Any, tokenizer: Any) -> None:
        val = float(self.validate(model, tokenizer))
        rewards, self._interval_rewards = self._interval_rewards, []
        reward = sum(rewards) / len(rewards) if rewards else None
        flag = self.canary.add(step, reward, val)  # without a reward: only a best so far to fall from
        point = {"step": step, "train_reward": reward, "validation_pass@1": val,
                 "canary": flag.to_dict() if flag else None}
        self.points.append(point)
        self._emit({"kind": "validation", **point})

    def _emit(self, record: dict) -> None:
        self.records.append(record)
        if self.on_record is not None:
            self.on_record(record)


def _as_callback(monitor: RLMonitor):
    """The monitor as a transformers TrainerCallback."""
    from transformers import TrainerCallback  # heavy: transformers loads only when training

    class _Monitor(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
            monitor.train_begin(model, processing_class)

        def on_log(self, args, state, control, logs=None, model=None, processing_class=None, **kwargs):
            monitor.log(state.global_step, logs or {}, model, processing_class)

        def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
            monitor.train_end(state.global_step, model, processing_class)

    return _Monitor()


def greedy_pass_at_1(problems: Sequence[Problem], judge: Judge, *, limits: Limits = Limits(),
                     max_new_tokens: int = 128, stop: Sequence[str] | None = None, batch_size: int = 16) -> Validate:
    """A validation hook: the live policy's greedy completion of each problem, judged on its hidden tests.

    Returns ``validate(model, tokenizer) -> pass@1``. Completions are cut at
    ``stop`` (default: the samplers' HumanEval stops), as evaluation cuts them.
    The model goes back to training mode afterwards.
    """
    stop = HUMANEVAL_STOP if stop is None else stop
    problems = list(problems)

    def validate(model: Any, tokenizer: Any) -> float:
        # heavy: loaded by the trainer already
        import torch
        from transformers import GenerationConfig

        config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                  eos_token_id=tokenizer.eos_token_id)
        was_training, side = model.training, tokenizer.padding_side
        model.eval()
        tokenizer.padding_side = "left"  # generation continues from each row's last token
        texts: list[str] = []
        try:
            for start in range(0, len(problems), batch_size):
                enc = tokenizer([p.prompt for p in problems[start:start + batch_size]], return_tensors="pt",
                                padding=True).to(model.device)
                with torch.inference_mode():
                    out = model.generate(**enc, generation_config=config)
                texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        finally:
            tokenizer.padding_side = side
            model.train(was_training)
        verdicts = judge.run_pairs([(p, cut_at_stop(t, stop)) for p, t in zip(problems, texts)], limits)
        return sum(passed(v) for v in verdicts) / max(len(verdicts), 1)

    return validate


def train_grpo(parent: str, problems_rows: Sequence[Mapping[str, Any]], out_model: Path, *,
               reward_funcs: Sequence[RewardFunc], steps: int, scratch: Path, algo: str = "grpo",
               num_generations: int = 4, prompts_per_step: int = 2, num_iterations: int = 2,
               beta: float | None = None, learning_rate: float = 1e-5, temperature: float = 1.0,
               max_completion_length: int = 128, seed: int = 0, reward_weights: Sequence[float] | None = None,
               monitor: RLMonitor | None = None, callbacks: Sequence[Any] = (), threads: int | None = 1,
               progress: bool = False, trl_args: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Train ``parent`` with TRL's GRPO or RLOO trainer for ``steps`` optimizer steps; save it atomically.

    ``problems_rows``: one dict per prompt, ``prompt`` (text) plus every column
    the reward functions read (``task_id`` for execution rewards). Each step
    trains on ``prompts_per_step`` prompts x ``num_generations`` completions,
    generated by transformers (TRL's own generation) at ``temperature``; each
    generation batch is reused for ``num_iterations`` steps (>= 2: the PPO
    clip is active). ``beta``: the KL coefficient (None: TRL's default for
    ``algo``, 0.0 for GRPO, 0.05 for RLOO). ``trl_args``: any other field of
    TRL's GRPOConfig / RLOOConfig (e.g. ``{"use_vllm": True, "vllm_mode":
    "colocate"}``), which wins over the values set here. ``monitor`` records
    each step (see `RLMonitor`); ``callbacks``: more TrainerCallbacks.
    The model and tokenizer go to ``out_model`` atomically; ``scratch`` (the
    trainer's output_dir) is removed afterwards.

    >>> # fn = execution_reward("pass", judge, problems)
    >>> # train_grpo(starter, [{"prompt": p.prompt, "task_id": p.task_id} for p in problems], out,
    >>> #            reward_funcs=[fn], steps=20, scratch=tmp)
    """
    from transformers.utils import logging as hf_logging  # heavy: transformers loads only when training

    _check_rl_args(algo, steps, num_generations, prompts_per_step, num_iterations, problems_rows, reward_funcs)
    hf_logging.set_verbosity_error()
    with torch_threads(threads):
        return _train_rl(parent, problems_rows, out_model, reward_funcs=reward_funcs, steps=steps, scratch=scratch,
                         algo=algo, num_generations=num_generations, prompts_per_step=prompts_per_step,
                         num_iterations=num_iterations, beta=beta, learning_rate=learning_rate,
                         temperature=temperature, max_completion_length=max_completion_length, seed=seed,
                         reward_weights=reward_weights, monitor=monitor or RLMonitor(), callbacks=callbacks,
                         progress=progress, trl_args=dict(trl_args or {}))


def _check_rl_args(algo, steps, num_generations, prompts_per_step, num_iterations, rows, reward_funcs) -> None:
    broken = []
    if algo not in ALGOS:
        broken.append(f"algo {algo!r} is not one of {', '.join(ALGOS)}")
    if steps < 1:
        broken.append(f"steps must be at least 1 (got {steps})")
    if num_generations < 2:
        broken.append(f"num_generations must be at least 2 (got {num_generations}): the group is the baseline")
    if prompts_per_step < 1:
        broken.append(f"prompts_per_step must be at least 1 (got {prompts_per_step})")
    if num_iterations < 1:
        broken.append(f"num_iterations must be at least 1 (got {num_iterations}); 2 or more makes the clip act")
    if not rows or any("prompt" not in r for r in rows):
        broken.append("every training row needs a `prompt` (and the columns its rewards read, e.g. `task_id`)")
    if not reward_funcs:
        broken.append("give at least one reward function, e.g. codegen.execution_rewards.execution_reward('pass', ...)")
    if broken:
        raise UserError("; ".join(broken))


def _train_rl(parent, rows, out_model, *, reward_funcs, steps, scratch, algo, num_generations, prompts_per_step,
              num_iterations, beta, learning_rate, temperature, max_completion_length, seed, reward_weights,
              monitor, callbacks, progress, trl_args) -> dict[str, Any]:
    # heavy: datasets, transformers and TRL load only when training
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_cls, trainer_cls = (GRPOConfig, GRPOTrainer) if algo == "grpo" else (RLOOConfig, RLOOTrainer)
    unknown = sorted(set(trl_args) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise UserError(f"trl_args {', '.join(unknown)} are not fields of TRL's {config_cls.__name__}; "
                        "check the spelling against trl's config docs")
    model, tokenizer = load_policy(parent, seed)
    fields = dict(
        max_steps=steps,
        per_device_train_batch_size=num_generations * prompts_per_step,  # whole groups per step
        gradient_accumulation_steps=1,
        num_generations=num_generations,
        num_iterations=num_iterations,
        learning_rate=learning_rate,
        temperature=temperature,
        max_completion_length=max_completion_length,
        reward_weights=list(reward_weights) if reward_weights is not None else None,
        logging_steps=1,  # every step's reward and status rates reach the monitor
        **fixed_args(scratch, seed, progress),
    )
    if beta is not None:
        fields["beta"] = beta
    args = config_cls(**{**fields, **trl_args})
    trainer = trainer_cls(model=model, reward_funcs=list(reward_funcs), args=args, train_dataset=Dataset.from_list(
        [dict(r) for r in rows]), processing_class=tokenizer, callbacks=[_as_callback(monitor), *callbacks])
    if not progress:  # without a progress bar transformers prints every step's logs; the monitor has them
        trainer.remove_callback(PrinterCallback)
    output, seconds = train_and_save(trainer, tokenizer, out_model)
    rewards = [r["reward"] for r in monitor.records if r.get("kind") == "train" and "reward" in r]
    summary = {"algo": algo, "steps": steps, "num_iterations": args.num_iterations, "beta": args.beta,
               "epsilon": args.epsilon, "num_generations": args.num_generations, "learning_rate": learning_rate,
               "completions": len(rewards) * args.generation_batch_size, "train_loss": output.training_loss,
               "rewards": rewards, "validation": monitor.points, "canary": monitor.canary.summary(),
               "seconds": round(seconds, 2)}
    del trainer, model
    release(scratch)
    return summary


