"""The RLCoder loop's configuration (`itercode loop rlcoder`), read and checked like the other loops'.

    cfg = load_rlcoder_config("configs/rlcoder.yaml", ["rounds=2", "gen_steps=100"])

Strict types, every mistake at once, each naming the key and the fix
(`loops.yaml_config.load_with`). The defaults are the full size (about 15 minutes
of generator training on 2 cores); `TINY_OVERRIDES` is the seconds-scale
setting the tests and `benchmarks/rlcoder.py --tiny` use.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import BaseModel, ConfigDict, StrictBool

from codegen.repo.generator import GeneratorConfig
from loops.yaml_config import Float, Int, Schema, Text, load_with

# Keys a resumed run may change: they do not alter finished work.
RESUMABLE_KEYS = frozenset({"progress", "train_threads", "cache", "device"})


class RLCoderConfig(BaseModel):
    """Everything one RLCoder run needs. See configs/rlcoder.yaml for the commented example."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Text = "rlcoder"
    runs_dir: Text = "runs"
    seed: Int = 0
    progress: StrictBool = True
    train_threads: Int | None = 1
    device: Text = "cpu"  # cpu, or cuda: the generator trains and scores there (the retriever stays on the CPU)

    # --- the repositories
    corpus: Text = "configs/rlcoder_corpus.yaml"  # pins and their split
    cache: Text | None = None  # where pins are unpacked; null = ~/.cache/itercode/rlcoder-repos
    repos: Text | None = None  # a folder of repositories instead of the corpus (split by a hash of each name)
    eval_repos: Text | None = None  # a folder whose repositories are ALL the evaluation set (replaces the split's)

    # --- tasks (codegen.repo.tasks)
    target_lines: Int = 2
    preselect: Int = 20  # BM25's candidates per task: the pool the retriever ranks
    max_block_lines: Int = 15
    query_lines: Int = 10
    gen_tasks_per_repo: Int = 120
    retriever_tasks_per_repo: Int = 60
    eval_tasks_per_repo: Int = 25

    # --- the generator (codegen.repo.generator.GeneratorConfig)
    gen_vocab_size: Int = 4096
    gen_hidden_size: Int = 128
    gen_intermediate_size: Int = 384
    gen_layers: Int = 4
    gen_heads: Int = 2
    budget: Int = 256  # prompt tokens, blocks and in-file context together
    block_budget: Int = 128
    target_tokens: Int = 24
    gen_steps: Int = 600
    gen_batch_size: Int = 8
    gen_lr: Float = 2e-3
    gen_target_weight: Float = 4.0  # the target's tokens weigh this much more than the context's in training
    gen_p_copy: Float = 1.0  # a task whose hint block holds the target's line gets that block this often
    gen_copy_repeat: Int = 3  # and appears this many times among the training prompts
    gen_p_self: Float = 0.0  # of the other training prompts: a self-copy block (GeneratorConfig.p_self)
    gen_drill_steps: Int = 0  # steps of copy drills alone before the training (GeneratorConfig.drill_steps)
    gen_drill_lr: Float = 5e-4  # their learning rate
    gen_p_drill: Float = 0.0  # share of the training examples that stay copy drills
    gate_tasks: Int = 100  # retriever-training tasks the gate is measured on

    # --- the retriever (codegen.repo.retriever)
    rounds: Int = 3  # label -> train rounds, each re-retrieving with the latest retriever
    bm25_k: Int = 4  # BM25's top candidates labelled each round
    retrieve_k: Int = 4  # the retriever's own top candidates labelled each round (from round 2)
    epochs_per_round: Int = 2
    retriever_lr: Float = 3e-3
    retriever_dim: Int = 64
    # two more features: how closely a block's line matches the context's last line, and whether it is a
    # near-copy (codegen.repo.retriever.copy_match): what a small generator gains from a block is mostly a copy
    copy_features: StrictBool = False
    # what a new retriever ranks like before training: "bm25" (BM25's order, near copies raised with
    # copy_features), or "copy_rule" (needs copy_features): the near copy if any, else the stop block, as the
    # copy_rule arm picks; training then moves it where the labels say
    retriever_init: Literal["bm25", "copy_rule"] = "bm25"
    stop_margin: Float = 0.02  # stop is the label unless a block lowers the loss by more than this (nats)
    # what makes a candidate the label: "loss" (the target's weighted loss, RLCoder's), or "es" (the edit
    # similarity of the first line the generator writes with it, what the benchmark measures)
    label_metric: Literal["loss", "es"] = "loss"
    # with label_metric es: stop is the label unless a block's line beats the no-block line's edit similarity
    # (0..1) by more than this. The best of several candidates beats it by chance alone, and a block costs
    # in-file context that the retriever's pick, not the best candidate, must make up for.
    sim_margin: Float = 0.0
    # with label_metric es and above 0: train on a soft label, a softmax of each candidate's gain in edit
    # similarity (stop's gain is sim_margin) at this temperature, instead of the best candidate alone
    label_temperature: Float = 0.0
    # with label_metric es: 0 judges each candidate by the greedy first line; N > 0 by the mean edit
    # similarity of N first lines sampled at label_sample_temperature (the no-block line too)
    label_samples: Int = 0
    label_sample_temperature: Float = 0.8
    # with label_metric es: "label" trains on the label (cross-entropy); "gain" maximises the expected gain
    # in edit similarity of the retriever's choice (each candidate's line against the no-block line; stop's
    # gain 0), the generator's reward averaged over its tasks instead of the best of each task's few
    retriever_objective: Literal["label", "gain"] = "label"
    # what trains: "all" (word embeddings, features and stop), or "features" (the weights of the features and
    # the stop block's constants alone: what they mean carries to unseen projects, where the words do not)
    retriever_train: Literal["all", "features"] = "all"
    # at inference, the stop block's score is raised by this (the retriever's score units, 0 = as trained)
    # before it cuts the ranking: how often a block pays is the generator's question, and the labels of one
    # generator's retriever-training tasks answer it with noise. Chosen on validation (rlcoder_validate.py
    # --stop-bias). It changes no training: the rlcoder arm, and the retriever's saved settings, alone.
    stop_bias: Float = 0.0

    # --- evaluation
    top_k: Int = 2  # blocks in an evaluated prompt (at most; block_budget may fit fewer)
    max_new_tokens: Int = 24

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def generator_config(self) -> GeneratorConfig:
        return dataclasses.replace(
            GeneratorConfig(), vocab_size=self.gen_vocab_size, hidden_size=self.gen_hidden_size,
            intermediate_size=self.gen_intermediate_size, num_layers=self.gen_layers, num_heads=self.gen_heads,
            budget=self.budget, block_budget=self.block_budget, target_tokens=self.target_tokens,
            steps=self.gen_steps, batch_size=self.gen_batch_size, lr=self.gen_lr,
            target_weight=self.gen_target_weight, p_copy=self.gen_p_copy, copy_repeat=self.gen_copy_repeat,
            p_self=self.gen_p_self, drill_steps=self.gen_drill_steps, drill_lr=self.gen_drill_lr,
            p_drill=self.gen_p_drill,
            warmup_steps=min(50, max(1, self.gen_steps // 10)))

    def task_options(self) -> dict[str, int]:
        """How every split's tasks are cut (`codegen.repo.tasks.make_tasks`'s keywords)."""
        return dict(target_lines=self.target_lines, preselect=self.preselect, max_block_lines=self.max_block_lines,
                    query_lines=self.query_lines)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()


# Seconds-scale: tests and `benchmarks/rlcoder.py --tiny` (the figures mean nothing at this size).
TINY_OVERRIDES = [
    "gen_tasks_per_repo=12", "retriever_tasks_per_repo=6", "eval_tasks_per_repo=4", "preselect=6",
    "gen_vocab_size=400", "gen_hidden_size=64", "gen_intermediate_size=128", "gen_layers=2", "gen_heads=1",
    "budget=128", "block_budget=64", "target_tokens=12", "gen_steps=20", "gen_batch_size=4", "gen_lr=5e-3",
    "gate_tasks=6", "gen_drill_steps=4", "gen_p_drill=0.1", "rounds=2", "bm25_k=2", "retrieve_k=2",
    "epochs_per_round=2", "retriever_dim=16", "max_new_tokens=8",
]


def rules(cfg: RLCoderConfig) -> list[str]:
    """Every rule between values that ``cfg`` breaks, each with its fix."""
    out = []

    def rule(ok: bool, message: str) -> None:
        if not ok:
            out.append(message)

    for key in ("target_lines", "preselect", "max_block_lines", "query_lines", "gen_tasks_per_repo",
                "retriever_tasks_per_repo", "eval_tasks_per_repo", "gen_steps", "gen_batch_size", "rounds",
                "bm25_k", "epochs_per_round", "top_k", "max_new_tokens", "gate_tasks", "retriever_dim"):
        rule(getattr(cfg, key) >= 1, f"{key} must be at least 1, got {getattr(cfg, key)}; e.g. {key}=1")
    rule(cfg.retrieve_k >= 0, f"retrieve_k must be >= 0, got {cfg.retrieve_k}")
    rule(0 < cfg.block_budget < cfg.budget,
         f"block_budget ({cfg.block_budget}) must be positive and below budget ({cfg.budget}): the in-file "
         "context needs room too; e.g. block_budget=budget/2")
    rule(cfg.gen_hidden_size % cfg.gen_heads == 0,
         f"gen_hidden_size ({cfg.gen_hidden_size}) must be a multiple of gen_heads ({cfg.gen_heads})")
    rule(cfg.bm25_k <= cfg.preselect and cfg.retrieve_k <= cfg.preselect,
         f"bm25_k and retrieve_k must not exceed preselect ({cfg.preselect}): they pick from its pool")
    rule(cfg.device in ("cpu", "cuda") or cfg.device.startswith("cuda:"),
         f"device must be cpu or cuda (cuda:N), got {cfg.device!r}")
    rule(0 <= cfg.gen_p_copy <= 1, f"gen_p_copy must be in [0, 1], got {cfg.gen_p_copy}")
    rule(0 <= cfg.gen_p_self <= 1, f"gen_p_self must be in [0, 1], got {cfg.gen_p_self}")
    rule(0 <= cfg.gen_p_drill < 1, f"gen_p_drill must be in [0, 1), got {cfg.gen_p_drill}")
    rule(cfg.gen_drill_steps >= 0, f"gen_drill_steps must be >= 0, got {cfg.gen_drill_steps}")
    rule(cfg.gen_drill_lr > 0, f"gen_drill_lr must be positive, got {cfg.gen_drill_lr}")
    rule(cfg.gen_copy_repeat >= 1, f"gen_copy_repeat must be at least 1, got {cfg.gen_copy_repeat}")
    rule(cfg.stop_margin >= 0, f"stop_margin must be >= 0, got {cfg.stop_margin}")
    rule(0 <= cfg.sim_margin < 1, f"sim_margin must be in [0, 1), got {cfg.sim_margin}")
    rule(cfg.label_temperature >= 0, f"label_temperature must be >= 0 (0: the best candidate alone), "
                                     f"got {cfg.label_temperature}")
    rule(cfg.label_temperature == 0 or cfg.label_metric == "es",
         f"label_temperature ({cfg.label_temperature}) softens labels by edit similarity: set label_metric=es, "
         "or label_temperature=0 for the loss labels")
    rule(cfg.label_samples >= 0, f"label_samples must be >= 0 (0: the greedy line), got {cfg.label_samples}")
    rule(cfg.label_samples == 0 or cfg.label_metric == "es",
         f"label_samples ({cfg.label_samples}) samples lines for label_metric=es: set it, or label_samples=0")
    rule(cfg.label_sample_temperature > 0,
         f"label_sample_temperature must be positive, got {cfg.label_sample_temperature}")
    rule(cfg.retriever_objective == "label" or cfg.label_metric == "es",
         "retriever_objective gain needs each candidate's line gain: set label_metric=es, "
         "or retriever_objective=label")
    rule(cfg.retriever_objective == "label" or cfg.label_temperature == 0,
         "retriever_objective gain trains on each candidate's gain, not on a soft label: set label_temperature=0")
    rule(cfg.retriever_init != "copy_rule" or cfg.copy_features,
         "retriever_init copy_rule ranks by the copy features: set copy_features=true, or retriever_init=bm25")
    return out


SCHEMA = Schema(model=RLCoderConfig, rules=rules, label="rlcoder",  # type: ignore[arg-type]
                example_file="configs/rlcoder.yaml", example_override="rounds=2")


def load_rlcoder_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RLCoderConfig:
    """The config of ``path`` (YAML; None = defaults) with ``key=value`` overrides, checked."""
    return load_with(SCHEMA, path, overrides)
