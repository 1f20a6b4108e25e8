"""Policies compared at one budget: ITERTL, GRPO, RLOO, iterative DPO (and RewardRanker) over seeds.

DESIGN.md's "Learning claims" for the policy loops: one starter checkpoint,
the same number of sampled completions for every method (``budget``), the
same unlabeled pool (RewardRanker excepted: it samples its config's whole
unlabeled split, 200 problems, each iteration), settings from each method's
config file (chosen on
validation), figures on the protocol's test splits only, mean and standard
deviation over seeds. A method's budget is what it samples to learn, not
what its evaluations sample:

- ITERTL and iterative DPO: ``rounds x unlabeled_per_round x n_samples``;
  the slice per round is set from the budget;
- GRPO and RLOO: ``generation batches x prompts_per_step x num_generations``,
  a batch every ``num_iterations`` optimizer steps; the steps are set from the
  budget;
- RewardRanker: per iteration, every unlabeled problem ``n_samples`` times
  (the reranker's data, hard negatives from iteration 2), then RL spends the
  rest of the iteration's share; iterations 1 and 2 are reported as
  ``rewardranker_1`` and ``rewardranker_2`` (policy pass@1, and reranked
  pass@1: the policy's own candidates picked by the reranker, plain and with
  the log-prob, beside the no-learning rule on the same candidates).

Each (method, seed) is one resumable run directory, ``<runs_dir>/<method>-s<seed>``,
so an interrupted comparison picks up where it stopped. The wall time of the
invocations that did a run's work is kept beside it (``seconds.json``).

`summarize` gives the issue's JSON::

    {"methods": {"starter": {...}, "itertl": {"test_pass@1": m, "test_pass@1_sd": s, "test_pass@10": m, ...,
                 "heldout_pass@1": m, "reference_pass@1": m, "completions": N, "seconds": S}, ...},
     "targets": {...}, "seeds": 3, "budget": N}

``test_`` is the first test split of the configs (the fresh one), in percent.
"""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from codegen.errors import UserError
from codegen.io import write_json_atomic
from loops.config import load_config
from loops.dpo import run_dpo
from loops.dpo_config import load_dpo_config
from loops.grpo import run_grpo
from loops.grpo_config import load_grpo_config
from loops.itertl import run_itertl
from loops.rewardranker import run_rewardranker
from loops.rewardranker_config import load_rewardranker_config
from loops.sampler_pool import Log
from loops.splits import load_splits

# Every method samples from this pool: large, and sharing no skeleton with validation or test.
UNLABELED = "synthetic:practice"
REPO = Path(__file__).resolve().parents[1]  # the config files live in the checkout


@dataclass(frozen=True)
class Method:
    """How to run one method at a budget and read its trained row."""

    config: str                                   # its config file (settings chosen on validation)
    load: Callable[[str, Sequence[str]], Any]     # (path, overrides) -> config
    run: Callable[[Any, Log], Any]                # runs or resumes it: a RunDir, or a dict with "rows"
    budget_overrides: Callable[[Any, int], list[str]]  # (default config, budget) -> overrides that spend it
    completions: Callable[[Any, dict], int]       # (config, trained row) -> completions it sampled to learn
    # The rows the table reports, by name: the last round's by default; RewardRanker reports each iteration.
    arms: Callable[[str, list[dict]], dict[str, dict]] = lambda name, rows: {name: rows[-1]}


def _per_round(cfg: Any, budget: int) -> list[str]:
    per_round = budget // (cfg.rounds * cfg.n_samples)
    if per_round < 1:
        raise UserError(f"a budget of {budget} completions is less than one problem a round "
                        f"({cfg.rounds} rounds x {cfg.n_samples} samples); raise --budget")
    return [f"unlabeled={UNLABELED}", f"unlabeled_per_round={per_round}"]


def _rl_steps(algo: str) -> Callable[[Any, int], list[str]]:
    def overrides(cfg: Any, budget: int) -> list[str]:
        batches = budget // (cfg.prompts_per_step * cfg.num_generations)
        if batches < 1:
            raise UserError(f"a budget of {budget} completions is less than one generation batch "
                            f"({cfg.prompts_per_step} prompts x {cfg.num_generations}); raise --budget")
        return [f"unlabeled={UNLABELED}", f"algo={algo}", f"steps={batches * cfg.num_iterations}"]
    return overrides


def _rounds_completions(cfg: Any, row: dict) -> int:
    return cfg.rounds * cfg.unlabeled_per_round * cfg.n_samples


def _rewardranker_steps(cfg: Any, budget: int) -> list[str]:
    """Each iteration samples every unlabeled problem n times (the reranker's data), then RL spends the rest."""
    sampled = len(load_splits(cfg)["unlabeled"]) * cfg.n_samples
    batches = (budget // cfg.iterations - sampled) // (cfg.prompts_per_step * cfg.num_generations)
    if batches < 1:
        raise UserError(f"a budget of {budget} completions leaves RewardRanker no RL batch after sampling "
                        f"{sampled} completions in each of {cfg.iterations} iterations; raise --budget")
    return [f"steps={batches * cfg.num_iterations}"]


def _iterations(name: str, rows: list[dict]) -> dict[str, dict]:
    return {f"{name}_{row['round']}": row for row in rows[1:]}


def methods() -> dict[str, Method]:
    """The methods by name, in the table's order."""
    rl = dict(config="configs/grpo.yaml", load=load_grpo_config, run=run_grpo,
              completions=lambda cfg, row: int(row["completions"]))
    return {
        "itertl": Method(config="configs/demo.yaml", load=load_config, run=run_itertl,
                         budget_overrides=_per_round, completions=_rounds_completions),
        "grpo": Method(budget_overrides=_rl_steps("grpo"), **rl),
        "rloo": Method(budget_overrides=_rl_steps("rloo"), **rl),
        "dpo": Method(config="configs/dpo.yaml", load=load_dpo_config, run=run_dpo,
                      budget_overrides=_per_round, completions=_rounds_completions),
        "rewardranker": Method(config="configs/rewardranker.yaml", load=load_rewardranker_config,
                               run=run_rewardranker, budget_overrides=_rewardranker_steps,
                               completions=lambda cfg, row: int(row["completions_so_far"]), arms=_iterations),
    }


def _run_seconds(root: Path, spent: float) -> float:
    """Add this invocation's ``spent`` seconds to the run's total (kept in ``seconds.json``)."""
    path = root / "seconds.json"
    total = json.loads(path.read_text())["seconds"] if path.exists() else 0.0
    total += spent
    write_json_atomic(path, {"seconds": round(total, 1)})
    return total


def _metrics_text(root: Path) -> str | None:
    path = root / "metrics.jsonl"
    return path.read_text() if path.exists() else None


def run_method(name: str, method: Method, *, seed: int, budget: int, starter: str, runs_dir: str,
               overrides: Sequence[str] = (), log: Log = print) -> list[dict[str, Any]]:
    """Run (or resume) one method for one seed; per arm its starter and trained figures, budget and time."""
    config = str(REPO / method.config)
    spend = method.budget_overrides(method.load(config, list(overrides)), budget)
    # The caller's overrides come last: they may even replace the shared pool (a test's small files).
    cfg = method.load(config, [*spend, f"name={name}-s{seed}", f"seed={seed}", f"runs_dir={runs_dir}",
                               f"base_model={starter}", *overrides])
    log(f"=== {name}, seed {seed}: {cfg.run_dir}")
    before, t0 = _metrics_text(Path(cfg.run_dir)), time.monotonic()
    result = method.run(cfg, log)
    rows = result["rows"] if isinstance(result, dict) else result.metrics()
    # A finished run only reloads: its time was counted when it did its work.
    did_work = _metrics_text(Path(cfg.run_dir)) != before
    seconds = _run_seconds(Path(cfg.run_dir), time.monotonic() - t0 if did_work else 0.0)
    if len(rows) < 2 or rows[0]["round"] != 0:
        raise UserError(f"run {cfg.run_dir} has no evaluated round 0 and trained round; rerun to finish it")
    if not cfg.test_names:
        raise UserError(f"{name}'s config has no test split: set test=[synthetic:test-fresh, ...]")
    test_split, kmax = next(iter(cfg.test_names)), max(cfg.eval_ks)
    return [{"method": arm, "seed": seed, "test_split": test_split, "kmax": kmax,
             "starter": figures(rows[0], test_split, kmax), "trained": figures(row, test_split, kmax),
             "canary_fired": bool(row.get("canary_fired")), "completions": method.completions(cfg, row),
             # a multi-arm run's earlier arms are timed by their rows (stage time so far)
             "seconds": round(row.get("seconds_so_far") if row is not rows[-1] else seconds, 1)}
            for arm, row in method.arms(name, rows).items()]


def figures(row: dict[str, Any], test_split: str, kmax: int) -> dict[str, float]:
    """A metrics row's figures under the JSON's names (fractions, as the row keeps them): ``test_`` is
    ``test_split``, the config's first test split, ``heldout_`` is there when held-out is a test split
    too; pass@1 and pass@``kmax`` (the largest of ``eval_ks``), and reference pass@1 (forgetting)."""
    wanted = {f"test_pass@{k}": f"{test_split}_pass@{k}" for k in (1, kmax)}
    wanted.update({f"heldout_pass@{k}": f"heldout_pass@{k}" for k in (1, kmax)})
    wanted["reference_pass@1"] = "reference_pass@1"
    # Candidates picked from the policy's own samples (RewardRanker): the learned reranker, the reranker with
    # the log-prob (LEVER), and the no-learning rule (docstring examples, then log-prob).
    wanted.update({"reranked_pass@1": f"{test_split}_pick_reranker",
                   "reranked_logprob_pass@1": f"{test_split}_pick_reranker_logprob",
                   "no_learning_rule_pass@1": f"{test_split}_pick_rule"})
    return {name: row[key] for name, key in wanted.items() if row.get(key) is not None}


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    mean = statistics.fmean(values)
    return round(100 * mean, 2), (round(100 * statistics.stdev(values), 2) if len(values) > 1 else None)


def _aggregate(per_seed: Sequence[dict[str, float | None]], extra: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in per_seed[0]:  # a figure every seed has (a run with other splits would miss one)
        values = [f[key] for f in per_seed if key in f]
        if len(values) == len(per_seed):
            out[key], out[f"{key}_sd"] = _mean_sd(values)
    return {**out, **extra}


def summarize(results: Sequence[dict[str, Any]], budget: int) -> dict[str, Any]:
    """The JSON of the module docstring from `run_method` results (any methods, any seeds)."""
    by_method: dict[str, list[dict]] = {}
    for r in results:
        by_method.setdefault(r["method"], []).append(r)
    first = next(iter(by_method.values()))  # the starter as its first method's runs scored it, per seed
    out: dict[str, Any] = {"starter": _aggregate([r["starter"] for r in first],
                                                 {"completions": 0, "seconds": 0})}
    for name, runs in by_method.items():
        extra = {"completions": round(statistics.fmean(r["completions"] for r in runs)),
                 "seconds": round(statistics.fmean(r["seconds"] for r in runs), 1),
                 "canary_fired": any(r["canary_fired"] for r in runs)}
        out[name] = _aggregate([r["trained"] for r in runs], extra)
    seeds = max(len(runs) for runs in by_method.values())
    splits, kmaxes = {r["test_split"] for r in results}, {r["kmax"] for r in results}
    if len(splits) > 1 or len(kmaxes) > 1:
        raise UserError(f"the methods were scored on different test splits ({', '.join(sorted(splits))}) or "
                        f"pass@k ({sorted(kmaxes)}); give them the same `test` and `eval_ks`")
    kmax = kmaxes.pop()
    summary = {"methods": out, "targets": targets(out, kmax), "seeds": seeds, "budget": budget,
               "test_split": splits.pop(), "kmax": kmax}
    last = [name for name in out if name.startswith("rewardranker_")][-1:]
    if last and "no_learning_rule_pass@1" in out[last[0]]:  # the rule on the same candidates
        summary["no_learning_rule_pass@1"] = out[last[0]]["no_learning_rule_pass@1"]
    return summary


def targets(methods_: dict[str, dict[str, Any]], kmax: int = 10) -> dict[str, str]:
    """Issue 14's targets that these methods can decide, each "MET: ..." or "MISSED: ..."."""
    found: dict[str, str] = {}
    itertl, starter = methods_.get("itertl"), methods_["starter"]
    rl = {k: methods_[k] for k in ("grpo", "rloo") if k in methods_}
    if itertl and rl:
        best = max(rl, key=lambda k: rl[k]["test_pass@1"])
        m = rl[best]
        wide = f"test_pass@{kmax}"
        met = m["test_pass@1"] >= itertl["test_pass@1"] and m[wide] >= starter[wide]
        found["rl_vs_itertl"] = (f"{'MET' if met else 'MISSED'}: {best} test pass@1 {m['test_pass@1']:.1f} vs ITERTL "
                                 f"{itertl['test_pass@1']:.1f}; pass@{kmax} {m[wide]:.1f} vs starter "
                                 f"{starter[wide]:.1f}")
    first, second = methods_.get("rewardranker_1"), methods_.get("rewardranker_2")
    if first and second and "reranked_logprob_pass@1" in second:
        # The reranker as the loop leaves it: its score plus w x log-prob, w chosen on validation (w=0 allowed).
        one, two, rule = (first["reranked_logprob_pass@1"], second["reranked_logprob_pass@1"],
                          second["no_learning_rule_pass@1"])
        met = two >= one and two > rule
        found["rewardranker"] = (f"{'MET' if met else 'MISSED'}: iteration 2 reranked pass@1 {two:.1f} vs iteration 1 "
                                 f"{one:.1f} and the no-learning rule {rule:.1f} (same candidates)")
    rl = {k: m for k, m in methods_.items() if k in ("grpo", "rloo") or k.startswith("rewardranker_")}
    if rl:
        fired = [k for k, m in rl.items() if m.get("canary_fired")]
        found["no_canary_flag"] = f"MISSED: the canary fired in {', '.join(fired)}" if fired else \
            f"MET: no canary flag in {', '.join(rl)}"
    return found


def format_summary(summary: dict[str, Any]) -> str:
    """The JSON as a table: one line a method, test figures first, mean ± sd over seeds."""
    def cell(stats: dict[str, Any], key: str) -> str:
        if key not in stats:
            return "-"
        sd = stats.get(f"{key}_sd")
        return f"{stats[key]:.1f}" + (f" ± {sd:.1f}" if sd is not None else "")

    wide = f"test_pass@{summary['kmax']}"
    header = (f"{'method':<16}{'test pass@1':<16}{'test ' + wide[5:]:<16}{'reranked @1':<16}{'heldout @1':<16}"
              f"{'reference @1':<16}{'completions':>12}{'seconds':>10}")
    lines = [f"Policies at a budget of {summary['budget']} sampled completions, {summary['seeds']} seeds "
             f"(pass rates in %, mean ± sd; test = {summary['test_split']}, only reported)", header]
    for name, stats in summary["methods"].items():
        lines.append(f"{name:<16}{cell(stats, 'test_pass@1'):<16}{cell(stats, wide):<16}{cell(stats, 'reranked_logprob_pass@1'):<16}"
                     f"{cell(stats, 'heldout_pass@1'):<16}{cell(stats, 'reference_pass@1'):<16}"
                     f"{stats['completions']:>12}{stats['seconds']:>10.0f}")
    if "no_learning_rule_pass@1" in summary:
        lines.append(f"no-learning rule (docstring examples, then log-prob) on the last RewardRanker policy's "
                     f"candidates: {summary['no_learning_rule_pass@1']:.1f}; reranked = reranker + w x log-prob, "
                     "w chosen on validation")
    lines += [f"target {key}: {text}" for key, text in summary["targets"].items()]
    return "\n".join(lines)
