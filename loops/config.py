"""The ITERTL loop's configuration: one dataclass, read from YAML, overridden
from the command line, checked in one place.

    cfg = load_config("configs/demo.yaml", ["rounds=2", "sampler=hf"])

Every field has a default, so a YAML file names only what it changes. An
override is ``key=value``; the value is read as YAML (``eval_ks=[1,5]``,
``max_problems=null``, ``learning_rate=3e-4``). Every rule lives in
`validate`, and every error names the rule and the fix.
"""
from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from codegen.errors import UserError

SAMPLERS = ("vllm", "hf")
EXECUTORS = ("process", "docker")
SCHEDULERS = ("cosine", "linear", "constant_with_warmup")
# Keys a resumed run may change: they do not alter work already finished.
RESUMABLE_KEYS = frozenset({"rounds", "workers", "progress", "train_threads"})


@dataclass
class ITERTLConfig:
    """Everything one ITERTL run needs. See configs/demo.yaml for a commented example."""

    # --- the run
    name: str = "itertl"  # the run directory is <runs_dir>/<name>
    runs_dir: str = "runs"
    seed: int = 0
    rounds: int = 3  # self-training rounds after round 0 (the base model's evaluation)
    base_model: str = "starter"  # "starter": build codegen.starter's tiny model; else a local path or hub id
    starter_quick: bool = False  # the seconds-scale starter (tests only)

    # --- data (any spec codegen.datasets.load_problems accepts)
    unlabeled: str = "synthetic:unlabeled"  # the problems the model samples and learns from
    reference: str = "synthetic:reference"  # labelled problems: replay data and a forgetting probe
    heldout: str = "synthetic:heldout"  # never trained on: the headline score
    max_problems: int | None = None  # cap each split (quick runs); None = all

    # --- sampling the unlabeled problems
    sampler: str = "vllm"  # vllm (default) or hf (the fallback)
    n_samples: int = 16
    temperature: float = 0.8
    top_p: float = 0.95
    max_tokens: int = 128
    vllm_kv_cache_gb: int = 1  # VLLM_CPU_KVCACHE_SPACE for the CPU build

    # --- selection
    keep_per_problem: int = 4  # cap on distinct passing completions kept per problem

    # --- training (TRL SFTTrainer, a fresh warmup each round)
    replay_share: float = 0.25  # share of each round's training set drawn from the reference data
    train_steps: int = 100  # optimizer steps per round
    batch_size: int = 16
    learning_rate: float = 5e-4
    round_lr_decay: float = 1.0  # peak learning rate of round k = learning_rate * round_lr_decay**(k-1)
    warmup_ratio: float = 0.1  # re-warm at the start of every round
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_length: int = 512
    train_threads: int | None = 1  # torch CPU threads while training; None = torch's default (one per core)

    # --- evaluation
    eval_n: int = 10  # samples per problem for pass@k
    eval_temperature: float = 0.8
    eval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    eval_reference: bool = True  # forgetting probe on the reference split
    eval_learned: bool = True  # forgetting probe on problems earlier rounds learned
    probe_problems: int = 100  # cap on each forgetting probe's problems (a fixed random subset)

    # --- sandbox
    executor: str = "process"
    workers: int | None = None
    timeout_s: float = 5.0
    progress: bool = True

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(ITERTLConfig)}


def _type_name(f: dataclasses.Field) -> str:
    return str(f.type).replace("typing.", "")


def _coerce(key: str, value: Any) -> Any:
    """Convert a YAML value to the field's type, or raise a UserError naming both."""
    t = _type_name(FIELDS[key])
    optional = "None" in t
    base = t.replace(" | None", "")
    if value is None:
        if optional:
            return None
        raise UserError(f"config key {key!r} may not be null; give a {base}")
    bad = UserError(f"config key {key!r} must be of type {base}, got {value!r} ({type(value).__name__})")
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise bad
    if base == "int":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if base == "float":
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads "5e-4" (no dot) as a string; accept it as the number it is.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if base == "str":
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if base == "list[int]":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return list(value)
        raise bad
    raise AssertionError(f"no coercion for {key}: {t}")  # a new field type needs a branch here


def _unknown_key(key: str, where: str) -> UserError:
    close = difflib.get_close_matches(key, FIELDS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return UserError(f"unknown config key {key!r} in {where}{hint}; known keys: {', '.join(FIELDS)}")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["rounds=2", "eval_ks=[1,5]"]`` -> ``{"rounds": 2, "eval_ks": [1, 5]}``."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"override {item!r} is not key=value; write it as e.g. rounds=2")
        if key not in FIELDS:
            raise _unknown_key(key, "the command-line overrides")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            raise UserError(f"override {item!r}: the value is not valid YAML ({e.__class__.__name__}); quote it") from None
    return out


def config_from_dict(values: dict[str, Any], where: str = "the config") -> ITERTLConfig:
    """Build and validate a config from plain values (unknown keys are errors)."""
    kwargs = {}
    for key, value in values.items():
        if key not in FIELDS:
            raise _unknown_key(key, where)
        kwargs[key] = _coerce(key, value)
    cfg = ITERTLConfig(**kwargs)
    validate(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: list[str] = ()) -> ITERTLConfig:
    """Read ``path`` (YAML mapping; None = all defaults), apply ``key=value`` overrides, validate."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"config file {str(p)!r} does not exist; pass --config PATH to a YAML file (see configs/demo.yaml)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"config file {str(p)!r} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UserError(f"config file {str(p)!r} must be a YAML mapping of key: value, got a {type(loaded).__name__}")
        for key in loaded:
            if key not in FIELDS:
                raise _unknown_key(str(key), str(p))
        values.update(loaded)
    values.update(parse_overrides(list(overrides)))
    return config_from_dict(values, where=str(path) if path else "the overrides")


def validate(cfg: ITERTLConfig) -> None:
    """Check every rule at once; raise one UserError listing each broken rule and its fix."""
    errors: list[str] = []

    def rule(ok: bool, message: str) -> None:
        if not ok:
            errors.append(message)

    rule(bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", cfg.name)),
         f"name {cfg.name!r} must be letters, digits, '.', '_' or '-' (it names a directory); e.g. name=demo")
    rule(cfg.rounds >= 0, f"rounds must be >= 0 (0 only evaluates the base model), got {cfg.rounds}")
    rule(bool(cfg.base_model), "base_model must be 'starter' or a model path / hub id")
    for key in ("unlabeled", "reference", "heldout"):
        rule(bool(getattr(cfg, key)), f"{key} must name a problem set, e.g. synthetic:{key}")
    rule(cfg.max_problems is None or cfg.max_problems >= 1,
         f"max_problems must be >= 1 or null (all problems), got {cfg.max_problems}")
    rule(cfg.sampler in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}, got {cfg.sampler!r}")
    rule(cfg.n_samples >= 1, f"n_samples must be >= 1, got {cfg.n_samples}")
    for key in ("temperature", "eval_temperature"):
        rule(getattr(cfg, key) >= 0, f"{key} must be >= 0 (0 = greedy), got {getattr(cfg, key)}")
    rule(0 < cfg.top_p <= 1, f"top_p must be in (0, 1], got {cfg.top_p}")
    rule(cfg.max_tokens >= 1, f"max_tokens must be >= 1, got {cfg.max_tokens}")
    rule(cfg.vllm_kv_cache_gb >= 1, f"vllm_kv_cache_gb must be >= 1 GiB, got {cfg.vllm_kv_cache_gb}")
    rule(cfg.keep_per_problem >= 1, f"keep_per_problem must be >= 1, got {cfg.keep_per_problem}")
    rule(0 <= cfg.replay_share < 1,
         f"replay_share must be in [0, 1): the share of reference data in each round's training set, got {cfg.replay_share}"
         " (for training on reference data alone use benchmarks/itertl.py's baseline)")
    rule(cfg.train_steps >= 1, f"train_steps must be >= 1, got {cfg.train_steps}")
    rule(cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}")
    rule(cfg.learning_rate > 0, f"learning_rate must be > 0, got {cfg.learning_rate}")
    rule(0 < cfg.round_lr_decay <= 1, f"round_lr_decay must be in (0, 1], got {cfg.round_lr_decay}")
    rule(0 <= cfg.warmup_ratio < 1, f"warmup_ratio must be in [0, 1), got {cfg.warmup_ratio}")
    rule(cfg.lr_scheduler in SCHEDULERS, f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {cfg.lr_scheduler!r}")
    rule(cfg.weight_decay >= 0, f"weight_decay must be >= 0, got {cfg.weight_decay}")
    rule(cfg.train_threads is None or cfg.train_threads >= 1,
         f"train_threads must be >= 1 or null (torch's default), got {cfg.train_threads}")
    rule(cfg.max_length >= 16, f"max_length must be >= 16 tokens, got {cfg.max_length}")
    rule(cfg.eval_n >= 1, f"eval_n must be >= 1, got {cfg.eval_n}")
    rule(len(cfg.eval_ks) >= 1 and all(k >= 1 for k in cfg.eval_ks), f"eval_ks must be a non-empty list of k >= 1, got {cfg.eval_ks}")
    too_big = [k for k in cfg.eval_ks if k > cfg.eval_n]
    rule(not too_big, f"eval_ks {too_big} exceed eval_n={cfg.eval_n}: pass@k needs k <= n; raise eval_n or drop those k")
    rule(1 in cfg.eval_ks, "eval_ks must include 1 (pass@1 is the headline metric)")
    rule(cfg.probe_problems >= 1, f"probe_problems must be >= 1, got {cfg.probe_problems}")
    rule(cfg.executor in EXECUTORS, f"executor must be one of {', '.join(EXECUTORS)}, got {cfg.executor!r}")
    rule(cfg.workers is None or cfg.workers >= 1, f"workers must be >= 1 or null (one per core), got {cfg.workers}")
    rule(cfg.timeout_s > 0, f"timeout_s must be > 0 seconds, got {cfg.timeout_s}")
    if errors:
        raise UserError("invalid ITERTL config: " + "; ".join(errors))


def dump_config(cfg: ITERTLConfig) -> str:
    """The config as YAML text (the copy a run directory keeps)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
