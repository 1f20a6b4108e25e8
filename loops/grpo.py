"""Policy RL on execution rewards: `itercode loop grpo` (GRPO, or RLOO with ``algo: rloo``).

One run, in a `RunDir`, stage by stage (a killed run resumes at the first
unfinished stage):

    round 0  starter   -> build codegen.starter's model (``base_model: starter``)
             evaluate  -> validation pass@k and the reference forgetting probe,
                          ITERTL's own evaluate stage (same seeds, same settings)
             test      -> pass@k on each test split (only ever reported)
    round 1  train     -> TRL's GRPOTrainer / RLOOTrainer on the unlabeled problems'
                          prompts; reward: `codegen.execution_rewards` (the hidden
                          tests, their share passed or the docstring's examples)
                          through one `Judge` shared with the validation hook; every
                          ``validate_every`` steps greedy pass@1 on the validation
                          split, beside the training reward, feeds the reward-hacking
                          canary (`loops.canary`)
             evaluate, test -> the trained model, as round 0

The figures are ITERTL's (`loops.stages.evaluate_stage`, `score_test_splits`),
so a GRPO run and an ITERTL run from one starter compare row by row.

What the run writes beside the stages: ``metrics.jsonl`` (a row per evaluated
round; round 1's row adds the RL figures: completions sampled in training,
the training reward at the first and the last point, the canary's verdict),
``steps.jsonl`` (the validation points: step, mean training reward over the
interval, validation pass@1, the reward's status rates over the interval,
the canary's flag), ``round-1/train/log.jsonl`` (every trainer record) and
``plot.png`` (reward and validation pass@1 against step, flags marked).

Only the unlabeled problems' prompts are trained on and only they are in the
reward; validation and test problems are only ever generated for and judged
(`check_training_rows` refuses anything else before training starts).

Resuming: a kill during training redoes the train stage from the starting
model (no TRL checkpoints: a run is minutes long, and a checkpoint would also
have to carry the canary's history and the reward's counters to resume the
same curve). Finished stages are never redone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.errors import UserError
from codegen.execution_rewards import ExecutionReward, execution_reward
from codegen.io import write_jsonl_atomic
from codegen.judging import Judge
from codegen.problems import Problem
from codegen.samplers import HUMANEVAL_STOP
from loops.canary import Canary
from loops.grpo_config import GRPO_RESUMABLE_KEYS, GRPOConfig
from loops.plot import plot_rl
from loops.rundir import RunDir
from loops.sampler_pool import Log
from loops.session import open_session
from loops.splits import evaluation_task_ids, tests_summary
from loops.stages import scores_of_test_stage
from loops.trainers import RLMonitor, greedy_pass_at_1, train_grpo
from sandbox.base import Limits

TRAINED = 1  # the round the trained model's stages live in (round 0: the base model)


# --------------------------------------------------------------------------- data
def training_rows(problems: Sequence[Problem]) -> list[dict[str, str]]:
    """The trainer's dataset: one row per unlabeled problem, its prompt and the ``task_id`` the reward reads."""
    return [{"prompt": p.prompt, "task_id": p.task_id} for p in problems]


def check_training_rows(rows: Sequence[dict], splits: dict[str, Any]) -> None:
    """Refuse training rows whose problem is in an evaluation split (validation, a test split) or outside
    the unlabeled set the reward was built from."""
    evaluation = evaluation_task_ids(splits)
    unlabeled = {p.task_id for p in splits["unlabeled"]}
    for row in rows:
        if row["task_id"] in evaluation:
            raise UserError(f"training row {row['task_id']!r} is a problem of the {evaluation[row['task_id']]}: "
                            "evaluation problems never enter a reward or a training set; check unlabeled=")
        if row["task_id"] not in unlabeled:
            raise UserError(f"training row {row['task_id']!r} is not an unlabeled problem: the loop trains on "
                            "unlabeled= alone")


def validation_problems(cfg: GRPOConfig, validation: Sequence[Problem]) -> list[Problem]:
    """The problems the in-training validation judges: the first ``validate_problems`` (a fixed set, whatever
    the seed, so that runs of several seeds draw the same curve)."""
    return list(validation)[: cfg.validate_problems] if cfg.validate_problems else list(validation)


def _seed(cfg: GRPOConfig, offset: int) -> int:
    return cfg.seed * 1_000_003 + TRAINED * 101 + offset


# --------------------------------------------------------------------------- the train stage
class StepLog:
    """Where the train stage's records go as they are made.

    Every record (one per optimizer step, one per validation point) to
    ``<stage>/log.jsonl``; each validation point, with the reward's status
    rates over its interval added (``status/tests/passed``, ...,
    ``status/reward_none``), to the run's ``steps.jsonl``, so that
    `itercode runs show` and the plot follow a run while it trains. Files are
    rewritten whole and atomically: a kill never leaves half a line.
    """

    def __init__(self, stage_dir: Path, run: RunDir, reward: ExecutionReward,
                 on_point: Callable[[list[dict]], None] = lambda points: None):
        self.path, self.run, self.reward, self.on_point = stage_dir / "log.jsonl", run, reward, on_point
        self.records: list[dict] = []
        self.points: list[dict] = []
        run.write_points([])  # a redone stage draws its curve afresh

    def __call__(self, record: dict) -> None:
        if record["kind"] == "validation":
            rates = self.reward.drain()  # the generations since the last point: this interval's
            record = {**record, **{f"status/{key}": rate for key, rate in rates.items()}}
            self.points.append(record)
            self.run.write_points(self.points)
            self.on_point(self.points)
        self.records.append(record)
        write_jsonl_atomic(self.path, self.records)


def rl_rows(splits: dict[str, Any], out_dir: Path) -> list[dict[str, str]]:
    """The unlabeled prompts as training rows (`training_rows`), checked and written to ``out_dir/train.jsonl``."""
    rows = training_rows(splits["unlabeled"])
    check_training_rows(rows, splits)
    write_jsonl_atomic(out_dir / "train.jsonl", rows)
    return rows


def train_policy(cfg: GRPOConfig, parent: str, rows: list[dict], out_dir: Path, reward, judge: Judge,
                 validation: Sequence[Problem], steps: StepLog, seed: int) -> dict[str, Any]:
    """GRPO / RLOO from ``parent`` on ``rows`` with ``reward`` into ``out_dir/model``; ``judge`` also runs
    the canary's greedy validation on ``validation``, whose records go to ``steps``."""
    limits = Limits(timeout_s=cfg.timeout_s)
    monitor = RLMonitor(validate=greedy_pass_at_1(validation, judge, limits=limits, max_new_tokens=cfg.max_tokens),
                        validate_every=cfg.validate_every, canary=Canary(cfg.canary_rule), on_record=steps)
    info = train_grpo(parent, rows, out_dir / "model", reward_funcs=[reward], steps=cfg.steps,
                      scratch=out_dir / ".tmp-trainer", algo=cfg.algo, num_generations=cfg.num_generations,
                      prompts_per_step=cfg.prompts_per_step, num_iterations=cfg.num_iterations, beta=cfg.beta,
                      learning_rate=cfg.learning_rate, temperature=cfg.temperature,
                      max_completion_length=cfg.max_completion_length, seed=seed, monitor=monitor,
                      threads=cfg.train_threads, progress=cfg.progress, trl_args=cfg.trl_args)
    info.pop("validation")  # the points are in log.jsonl and steps.jsonl, with their status rates
    return info


def train_stage(cfg: GRPOConfig, run: RunDir, parent: str, splits: dict[str, Any], out_dir: Path,
                on_point: Callable[[list[dict]], None] = lambda points: None) -> dict[str, Any]:
    """Train ``parent`` with GRPO / RLOO on the unlabeled prompts into ``out_dir/model``; the stage's info.

    One `Judge` runs both the reward's programs and the validation hook's.
    """
    rows = rl_rows(splits, out_dir)
    validation = validation_problems(cfg, splits["validation"])
    with Judge(cfg.executor, cfg.workers, options=cfg.executor_options) as judge:
        # Completions are cut at the samplers' stop strings, as evaluation cuts them.
        reward = execution_reward(cfg.reward_weights, judge, splits["unlabeled"], Limits(timeout_s=cfg.timeout_s),
                                  stop=HUMANEVAL_STOP)
        steps = StepLog(out_dir, run, reward, on_point)
        info = train_policy(cfg, parent, rows, out_dir, reward, judge, validation, steps, _seed(cfg, 5))
    return {"model": "model", **info, "prompts": len(rows), "reward": cfg.reward_name,
            "validation_problems": len(validation), "validation_points": len(steps.points),
            "validation_completions": len(validation) * len(steps.points)}


# --------------------------------------------------------------------------- what the run reports
def rl_figures(train: dict[str, Any], points: Sequence[dict]) -> dict[str, Any]:
    """Round 1's RL columns: the budget, the reward at the first and last point, the canary's verdict."""
    rewarded = [p["train_reward"] for p in points if p.get("train_reward") is not None]
    canary = train.get("canary") or {}
    first = canary.get("first") or {}
    return {"algo": train.get("algo"), "steps": train.get("steps"), "completions": train.get("completions"),
            "train_reward_first": rewarded[0] if rewarded else None,
            "train_reward_last": rewarded[-1] if rewarded else None,
            "canary_fired": canary.get("fired"), "canary_flags": canary.get("flags"),
            "canary_first_step": first.get("step"), "canary_message": first.get("message"),
            "train_seconds": train.get("seconds")}


def collect_metrics(run: RunDir) -> list[dict[str, Any]]:
    """One row per evaluated round (0: the base model, 1: the trained one)."""
    rows = []
    for k in (0, TRAINED):
        ev = run.info(k, "evaluate")
        if not ev:
            continue
        row = {**dict(ev), **scores_of_test_stage(run.info(k, "test"))}
        if k == TRAINED:
            row.update(rl_figures(run.info(k, "train"), run.points()))
        rows.append(row)
    return rows


def title(cfg: GRPOConfig) -> str:
    return f"{cfg.algo.upper()} on {cfg.reward_name}: {cfg.name}"


def publish(run: RunDir, cfg: GRPOConfig, points: Sequence[dict] | None = None) -> list[dict[str, Any]]:
    """Rewrite metrics.jsonl and the plot from what has finished (and the points so far)."""
    rows = collect_metrics(run)
    run.write_metrics(rows)
    plot_rl(run.points() if points is None else list(points), rows, run.plot_path, title=title(cfg))
    return rows


# --------------------------------------------------------------------------- the run
def base_model(run: RunDir, cfg: GRPOConfig) -> str:
    """The model round 0 evaluates and training starts from."""
    if cfg.base_model == "starter":
        return str(run.stage_dir(0, "starter") / run.info(0, "starter")["model"])
    return cfg.base_model


def trained_model(run: RunDir) -> str:
    info = run.info(TRAINED, "train")
    if not info:
        raise RuntimeError("the train stage has not finished")
    return str(run.stage_dir(TRAINED, "train") / info["model"])


def log_point(log: Log, points: list[dict], reward_name: str = "training", where: str = "") -> None:
    """The latest validation point in one line: the step, the reward, validation pass@1, the canary's flag."""
    last = points[-1]
    reward = "-" if last["train_reward"] is None else f"{last['train_reward']:.3f}"
    log(f"  {where}step {last['step']}: {reward_name} reward {reward}, validation pass@1 "
        f"{100 * last['validation_pass@1']:.1f}%" + (f"; CANARY: {last['canary']['message']}"
                                                      if last.get("canary") else ""))


def run_grpo(cfg: GRPOConfig, log: Log = print) -> RunDir:
    """Run (or resume) the policy RL loop described by ``cfg``; returns the closed run directory.

    >>> run_grpo(load_grpo_config("configs/grpo.yaml"))   # doctest: +SKIP
    """
    def describe(splits: dict[str, Any]) -> str:
        return (f": {cfg.algo} on {len(splits['unlabeled'])} unlabeled prompts, reward {cfg.reward_name}, "
                f"{cfg.steps} steps x {cfg.prompts_per_step} prompts x {cfg.num_generations} completions; "
                f"{len(splits['validation'])} validation problems; test splits (reported only): "
                f"{tests_summary(splits)}")

    with open_session(cfg, GRPO_RESUMABLE_KEYS, describe, log) as s:
        run, splits = s.run, s.splits

        def evaluate(k: int, model: str) -> None:
            s.evaluate(k, model, s.probes(), test=bool(cfg.test))  # the start and the end: only ever reported
            publish(run, cfg)

        s.start_base()
        base = base_model(run, cfg)
        run.record_lineage(0, {"model": base, "parent": None})
        evaluate(0, base)

        if not run.is_done(TRAINED, "train"):
            s.pool.close()  # free the sampling engine's memory and processes before training

        def on_point(points: list[dict]) -> None:
            log_point(log, points)
            publish(run, cfg, points)

        s.stage(TRAINED, "train", lambda d: train_stage(cfg, run, base, splits, d, on_point))
        model = trained_model(run)
        run.record_lineage(TRAINED, {"model": model, "parent": base, "trained_on": f"round-{TRAINED}/train/train.jsonl",
                                     "algo": cfg.algo, "reward": cfg.reward_name, "steps": cfg.steps,
                                     "learning_rate": cfg.learning_rate})
        evaluate(TRAINED, model)
        s.log_table(collect_metrics(run), f"{title(cfg)}: run", points=run.points())
    return run
