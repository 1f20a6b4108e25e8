"""The loops' configuration: one pydantic model per loop, read from YAML,
overridden from the command line, checked in one place.

    cfg = load_config("configs/demo.yaml", ["rounds=2", "sampler=hf"])

`LoopConfig` holds what every loop shares (the run, the data and protocol
splits, evaluation sampling, the sandbox) and `common_rules` its checks;
`ITERTLConfig` adds the self-training keys (`loops.grpo_config` the policy RL
ones). `loops.yaml_config.load_with` reads any of them: `load_config` is ITERTL's.

Every field has a default, so a YAML file names only what it changes. An
override is ``key=value``; the value is read as YAML (``eval_ks=[1,5]``,
``max_problems=null``, ``learning_rate=3e-4``). pydantic checks the types
(strictly: ``rounds: yes`` is not 1); `broken_rules` holds the rules between
values. Every error is reported at once, each naming the key and the fix.
Sampling, sandbox and engine defaults come from their owners
(`SamplingParams`, `Limits`, the backend registries), not from here.

The evaluation protocol (DESIGN.md, "Learning claims"): ``validation`` is
evaluated every round and is the only split any setting may be chosen on;
the ``test`` splits are evaluated at round 0 and the last round and only ever
reported. The config refuses a test split where a validation or training
split is expected, so no run tunes or trains on a test split by accident.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, StrictBool, field_validator

from codegen.samplers import LOCAL_BACKENDS, LOOP_BACKENDS, SamplingParams
from codegen.synthetic import TEST_SPLITS
from loops.yaml_config import Float, Int, Schema, Text, defaults_of, load_with, parse_overrides_with
from sandbox import BACKENDS, DEFAULT_BACKEND, backend_options
from sandbox.base import Limits

SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
# Keys a resumed run may change: they do not alter work already finished.
# The test splits are only ever reported, never fed back: a run may gain one
# (its test stages then score it; `check_test_stage` refuses a finished
# test stage that lacks one, so no stale score passes for a new split).
RESUMABLE_KEYS = frozenset({"rounds", "workers", "ray_address", "progress", "train_threads", "starter_threads", "test",
                            "test_every_round"})


class LoopConfig(BaseModel):
    """What every loop's config shares: the run, the protocol's splits, evaluation and the sandbox."""

    model_config = ConfigDict(extra="forbid", strict=True)

    # --- the run
    name: Text = "loop"  # the run directory is <runs_dir>/<name>
    runs_dir: Text = "runs"
    seed: Int = 0
    base_model: Text = "starter"  # "starter": build codegen.starter's tiny model; else a local path or hub id
    starter_quick: StrictBool = False  # the seconds-scale starter (tests only)
    # torch CPU threads for the starter build: "auto" = one per core idle when it starts (faster on
    # free cores, many times slower on shared ones; rounding that differs from one thread's grows into another model)
    starter_threads: Int | Literal["auto"] = 1

    # --- data (any spec codegen.datasets.load_problems accepts)
    unlabeled: Text = "synthetic:unlabeled"  # the problems the model samples and learns from
    reference: Text = "synthetic:reference"  # labelled problems: replay data and a forgetting probe
    validation: Text = "synthetic:validation"  # evaluated every round: the only split settings are chosen on
    test: list[Text] = ["synthetic:test-fresh", "synthetic:heldout"]  # only ever reported (round 0 and the last)
    max_problems: Int | None = None  # cap each split (quick runs); None = all

    # --- sampling (the evaluations'; ITERTL's unlabeled samples too)
    sampler: Text = LOCAL_BACKENDS[0]  # vllm (default), hf (the fallback) or vllm-ray (replicas on a Ray cluster)
    replicas: Int = 2  # sampler=vllm-ray: vLLM replicas that Ray places
    top_p: Float = SamplingParams.top_p
    max_tokens: Int = 128  # the loop's own: the synthetic functions are short (SamplingParams' is for any code)
    vllm_kv_cache_gb: Int = 1  # VLLM_CPU_KVCACHE_SPACE for the CPU build

    # --- training
    train_threads: Int | None = 1  # torch CPU threads while training; None = torch's default (one per core)

    # --- evaluation
    eval_n: Int = 10  # samples per problem for pass@k
    eval_temperature: Float = SamplingParams.temperature
    eval_ks: list[Int] = [1, 5, 10]  # pydantic copies a mutable default per instance
    eval_reference: StrictBool = True  # forgetting probe on the reference split
    probe_problems: Int = 100  # cap on each forgetting probe's problems (a fixed random subset)

    # --- sandbox
    executor: Text = DEFAULT_BACKEND
    workers: Int | None = None
    # executor=ray and sampler=vllm-ray: auto, ray://HOST:PORT or HOST:PORT; null: $RAY_ADDRESS, else local
    ray_address: Text | None = None
    timeout_s: Float = Limits.timeout_s
    progress: StrictBool = True

    @field_validator("eval_ks", mode="before")
    @classmethod
    def _one_k(cls, v: Any) -> Any:
        return [v] if isinstance(v, int) and not isinstance(v, bool) else v  # eval_ks=1

    @field_validator("test", mode="before")
    @classmethod
    def _one_test(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v  # test=synthetic:heldout

    @property
    def executor_options(self) -> dict:
        """The sandbox options of ``executor`` (`sandbox.backend_options`: the Ray address)."""
        return backend_options(self.executor, self.ray_address) if self.executor == "ray" else {}

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def test_names(self) -> dict[str, str]:
        """``{metric name: spec}`` of the test splits, in order (``test_fresh``: ``synthetic:test-fresh``)."""
        return {split_name(spec): spec for spec in self.test}

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def defaults(self) -> dict[str, Any]:
        """Every key at its default: what a run made before a key existed ran with (`RunDir.open`)."""
        return defaults_of(type(self))


class ITERTLConfig(LoopConfig):
    """Everything one ITERTL run needs. See configs/demo.yaml for a commented example."""

    name: Text = "itertl"
    rounds: Int = 3  # self-training rounds after round 0 (the base model's evaluation)
    unlabeled_per_round: Int | None = None  # a fresh slice of this many unlabeled problems each round; None = all
    test_every_round: StrictBool = False  # evaluate the test splits every round too (costs sampling time)

    # --- sampling the unlabeled problems
    n_samples: Int = 16
    temperature: Float = SamplingParams.temperature

    # --- selection
    keep_per_problem: Int = 4  # cap on distinct passing completions kept per problem
    # repeat each kept program 1 + round(hard_weight * (1 - its problem's pass rate)) times:
    # rarely solved problems weigh more (0 = every kept program once)
    hard_weight: Float = 0.0

    # --- training (TRL SFTTrainer, a fresh warmup each round)
    replay_share: Float = 0.25  # share of each round's training set drawn from the reference data
    # share of repair examples (a failing attempt + its feedback -> a passing solution, loops.repair):
    # they teach the model to read iterative decoding's feedback
    repair_share: Float = 0.0
    # reference problems sampled beside the unlabeled ones each round, for repair rows alone: a failing
    # attempt on one is repaired to a passing sample or, when none passed, to its reference solution,
    # so repair is also taught on problems the model cannot solve yet (0 = repair rows from unlabeled only)
    repair_reference: Int = 0
    train_steps: Int = 100  # optimizer steps per round
    batch_size: Int = 16
    learning_rate: Float = 5e-4
    round_lr_decay: Float = 1.0  # peak learning rate of round k = learning_rate * round_lr_decay**(k-1)
    warmup_ratio: Float = 0.1  # re-warm at the start of every round
    lr_scheduler: Text = "cosine"
    weight_decay: Float = 0.0
    max_length: Int = 512

    # --- evaluation
    eval_learned: StrictBool = True  # forgetting probe on problems earlier rounds learned


FIELDS = ITERTLConfig.model_fields
# Keys earlier configs had, with what to write instead.
REPLACED_KEYS = {
    "heldout": ("held-out is a test split now: list it under test, e.g. test=[synthetic:test-fresh,synthetic:heldout] "
                "(or test=[PATH]); settings are chosen on validation (default synthetic:validation)"),
}
# Metric names a test split may not take: the per-round probes use them.
RESERVED_NAMES = ("validation", "reference", "learned", "unlabeled")


def split_name(spec: str) -> str:
    """The name a problem set's metrics carry: ``synthetic:test-fresh`` -> ``test_fresh``,
    ``data/heldout.jsonl`` -> ``heldout``, ``humaneval`` -> ``humaneval``.

    >>> split_name("synthetic:test-fresh"), split_name("runs/x/fresh-2.jsonl.gz")
    ('test_fresh', 'fresh_2')
    """
    if spec.startswith("synthetic:"):
        base = spec.partition(":")[2]
    else:
        base = Path(spec).name
        for suffix in (".gz", ".jsonl", ".json"):
            base = base.removesuffix(suffix)
    return re.sub(r"[^a-z0-9]+", "_", base.lower()).strip("_") or "test"


def _same_set(a: str, b: str) -> bool:
    """Do two specs name the same problem set? (Paths compare resolved.)"""
    if a == b:
        return True
    if ":" in a or ":" in b or a.lower() == "humaneval" or b.lower() == "humaneval":
        return a.lower() == b.lower()
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _synthetic_test(spec: str) -> bool:
    return spec in {f"synthetic:{s}" for s in TEST_SPLITS}


def _is_validation_set(cfg: LoopConfig, spec: str) -> bool:
    return spec == "synthetic:validation" or _same_set(spec, cfg.validation)


def protocol_errors(cfg: LoopConfig) -> list[str]:
    """The evaluation protocol's rules: no test split where validation or training data is expected."""
    errors = []
    if _synthetic_test(cfg.validation):
        errors.append(f"validation={cfg.validation} is a test split: test splits are only reported, never used to "
                      "choose settings; use validation=synthetic:validation (or a problems file no test split holds)")
    clash = [spec for spec in cfg.test if _is_validation_set(cfg, spec)]
    if clash and not _synthetic_test(cfg.validation):
        errors.append(f"test lists the validation split {clash[0]}: a split is either validation (settings are "
                      f"chosen on it) or test (only reported); drop {clash[0]} from test, or choose another validation")
    for key in ("unlabeled", "reference"):
        spec = getattr(cfg, key)
        if _synthetic_test(spec) or any(_same_set(spec, t) for t in cfg.test):
            errors.append(f"{key}={spec} is a test split: the loop trains on {key}; use {key}=synthetic:{key}"
                          + (" (or synthetic:practice)" if key == "unlabeled" else ""))
        elif _is_validation_set(cfg, spec):
            errors.append(f"{key}={spec} is the validation split: the loop trains on {key}, and a model trained on "
                          f"its validation problems makes every choice on them biased; use {key}=synthetic:{key}")
    names = [split_name(spec) for spec in cfg.test if spec not in clash]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"test lists two problem sets named {name!r} ({', '.join(s for s in cfg.test if split_name(s) == name)}): "
                      "each test split needs its own name in the metrics; list a set once, or rename one file")
    for name in sorted(set(names) & set(RESERVED_NAMES)):
        errors.append(f"test split name {name!r} is taken by the per-round probes; rename the file "
                      f"(e.g. {name}-test.jsonl)")
    return errors


def common_rules(cfg: LoopConfig) -> list[str]:
    """Every rule between `LoopConfig`'s values that ``cfg`` breaks (the evaluation protocol's among them)."""
    errors: list[str] = []

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    rule(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.name)),
         f"name {cfg.name!r} must be letters, digits, '.', '_' or '-' (it names a directory); e.g. name=demo")
    rule(bool(cfg.base_model), "base_model must be 'starter' or a model path / hub id")
    for key in ("unlabeled", "reference", "validation"):
        rule(bool(getattr(cfg, key)), f"{key} must name a problem set, e.g. synthetic:{key}")
    rule(all(cfg.test), "test must list problem sets, e.g. test=[synthetic:test-fresh,synthetic:heldout]")
    errors.extend(protocol_errors(cfg))
    rule(cfg.max_problems is None or cfg.max_problems >= 1,
         f"max_problems must be >= 1 or null (all problems), got {cfg.max_problems}")
    rule(cfg.sampler in LOOP_BACKENDS, f"sampler must be one of {', '.join(LOOP_BACKENDS)}, got {cfg.sampler!r}")
    rule(cfg.replicas >= 1, f"replicas must be >= 1, got {cfg.replicas}")
    rule(cfg.eval_temperature >= 0, f"eval_temperature must be >= 0 (0 = greedy), got {cfg.eval_temperature}")
    rule(0 < cfg.top_p <= 1, f"top_p must be in (0, 1], got {cfg.top_p}")
    rule(cfg.max_tokens >= 1, f"max_tokens must be >= 1, got {cfg.max_tokens}")
    rule(cfg.vllm_kv_cache_gb >= 1, f"vllm_kv_cache_gb must be >= 1 GiB, got {cfg.vllm_kv_cache_gb}")
    rule(cfg.train_threads is None or cfg.train_threads >= 1,
         f"train_threads must be >= 1 or null (torch's default), got {cfg.train_threads}")
    rule(cfg.starter_threads == "auto" or cfg.starter_threads >= 1,
         f"starter_threads must be >= 1 or auto, got {cfg.starter_threads}")
    rule(cfg.eval_n >= 1, f"eval_n must be >= 1, got {cfg.eval_n}")
    rule(len(cfg.eval_ks) >= 1 and all(k >= 1 for k in cfg.eval_ks), f"eval_ks must be a non-empty list of k >= 1, got {cfg.eval_ks}")
    too_big = [k for k in cfg.eval_ks if k > cfg.eval_n]
    rule(not too_big, f"eval_ks {too_big} exceed eval_n={cfg.eval_n}: pass@k needs k <= n; raise eval_n or drop those k")
    rule(1 in cfg.eval_ks, "eval_ks must include 1 (pass@1 is the headline metric)")
    rule(cfg.probe_problems >= 1, f"probe_problems must be >= 1, got {cfg.probe_problems}")
    rule(cfg.executor in BACKENDS, f"executor must be one of {', '.join(BACKENDS)}, got {cfg.executor!r}")
    rule(cfg.workers is None or cfg.workers >= 1, f"workers must be >= 1 or null (one per core), got {cfg.workers}")
    rule(not cfg.ray_address or cfg.executor == "ray" or cfg.sampler == "vllm-ray",
         f"ray_address is for executor=ray or sampler=vllm-ray (here {cfg.executor} and {cfg.sampler}): "
         "drop it or choose one of those")
    rule(cfg.timeout_s > 0, f"timeout_s must be > 0 seconds, got {cfg.timeout_s}")
    return errors


def broken_rules(cfg: ITERTLConfig) -> list[str]:
    """Every rule between values that ``cfg`` breaks, each with its fix."""
    errors: list[str] = common_rules(cfg)

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    rule(cfg.rounds >= 0, f"rounds must be >= 0 (0 only evaluates the base model), got {cfg.rounds}")
    rule(cfg.unlabeled_per_round is None or cfg.unlabeled_per_round >= 1,
         f"unlabeled_per_round must be >= 1 or null (every unlabeled problem each round), got {cfg.unlabeled_per_round}")
    rule(cfg.n_samples >= 1, f"n_samples must be >= 1, got {cfg.n_samples}")
    rule(cfg.temperature >= 0, f"temperature must be >= 0 (0 = greedy), got {cfg.temperature}")
    rule(cfg.keep_per_problem >= 1, f"keep_per_problem must be >= 1, got {cfg.keep_per_problem}")
    rule(cfg.hard_weight >= 0, f"hard_weight must be >= 0 (0 = no repeats), got {cfg.hard_weight}")
    rule(0 <= cfg.replay_share < 1,
         f"replay_share must be in [0, 1): the share of reference data in each round's training set, got {cfg.replay_share}"
         " (for training on reference data alone use benchmarks/itertl.py's baseline)")
    rule(0 <= cfg.repair_share < 1 and cfg.replay_share + cfg.repair_share < 1,
         f"repair_share must be in [0, 1) and leave room for self-samples beside replay_share "
         f"(replay_share + repair_share < 1), got repair_share={cfg.repair_share}")
    rule(cfg.repair_reference >= 0, f"repair_reference must be >= 0, got {cfg.repair_reference}")
    rule(cfg.repair_reference == 0 or cfg.repair_share > 0,
         f"repair_reference={cfg.repair_reference} samples reference problems for repair rows, but repair_share is 0: "
         "set repair_share > 0 (e.g. 0.2) or repair_reference: 0")
    rule(cfg.train_steps >= 1, f"train_steps must be >= 1, got {cfg.train_steps}")
    rule(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    rule(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    rule(0 < cfg.round_lr_decay <= 1, f"round_lr_decay must be in (0, 1], got {cfg.round_lr_decay}")
    rule(0 <= cfg.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    rule(cfg.lr_scheduler in SCHEDULERS, f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {cfg.lr_scheduler!r}")
    rule(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    rule(cfg.max_length >= 16, f"max_length must be >= 16 tokens, got {cfg.max_length}")
    return errors


ITERTL = Schema(ITERTLConfig, broken_rules, label="ITERTL", example_file="configs/demo.yaml",
                example_override="rounds=2", replaced=REPLACED_KEYS)


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> ITERTLConfig:
    """ITERTL's config: `load_with` its schema (see configs/demo.yaml)."""
    return load_with(ITERTL, path, overrides)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["rounds=2", "eval_ks=[1,5]"]`` -> ``{"rounds": 2, "eval_ks": [1, 5]}``."""
    return parse_overrides_with(ITERTL, overrides)


def dump_config(cfg: LoopConfig) -> str:
    """The config as YAML text (the copy a run directory keeps)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
