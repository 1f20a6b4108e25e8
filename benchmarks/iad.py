"""Iterative decoding (IAD) against best-of-N at the same number of generations.

    .venv/bin/python benchmarks/iad.py --json iad.json                       # everything (hours on a CPU)
    .venv/bin/python benchmarks/iad.py --json iad.json --problems 50 --seeds 1   # a quick look

Models: (a) ``starter``, the project's starter model; (b) ``repair``, an
ITERTL model trained with repair examples (``repair_share``, `loops.repair`):
by default the last round of the ITERTL run ``--repair-config`` describes
(run or resumed here; it builds the starter too), or ``--starter``/``--repair``
to give checkpoints. The reranker of the reranker verifiers is ``--reranker``,
or one trained here from the starter's samples of the practice split.

Arms, every one at the same budget of N = K x T generations per problem
(``--budget``, ``--rounds``), pass@1 of the pick on the hidden tests:

- ``bon``: best-of-N, verifier examples+reranker;
- ``iad``: T rounds of K, feedback from the verifier (examples+reranker);
- ``iad_no_feedback``: the same rounds with the plain prompt (diversity alone);
- ``iad_shuffled``: the same rounds with another problem's feedback;
- ``sweep``: bon and iad with each verifier of ``--sweep`` (default oracle,
  examples+reranker, reranker, examples, noisy:0.2). The oracle's hidden
  tests also grade the pick: its row is labelled analysis-only.

Each arm runs ``--seeds`` times (sampling seeds, and the noisy verifier's);
the JSON has mean and standard deviation of pass@1 and, per problem, the
mean generations actually drawn (early stop saves some), prompt + completion
tokens and the arm's wall time in seconds::

    {"models": {"starter": {"bon": {"pass@1": m, "pass@1_sd": sd, "generations": g, "tokens": t,
                                    "seconds": s}, "iad": {...}, "iad_no_feedback": {...}, "iad_shuffled": {...},
                            "sweep": {"oracle": {"bon": {...}, "iad": {...}, "analysis_only": true}, ...}},
                "repair": {...}},
     "targets": {...}, "settings": {...}}

Settings are chosen on validation (``--split synthetic:validation``) and
reported on the fresh test split (the default, ``synthetic:test-fresh``).
Targets (stated met or missed): with the repair-trained model, iad >= bon + 3
points, and iad_no_feedback not above bon.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

# _report lives beside this file; a test loads this file by path, without the folder on sys.path.
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import emit_result  # noqa: E402

DEFAULT_SWEEP = "oracle,examples+reranker,reranker,examples,noisy:0.2"
MAIN_VERIFIER = "examples+reranker"
# arm name -> (strategy, feedback)
ARMS = {"bon": ("bon", "verifier"), "iad": ("iad", "verifier"), "iad_no_feedback": ("iad", "none"),
        "iad_shuffled": ("iad", "shuffled")}
TARGET_GAIN = 0.03


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--json", metavar="FILE", help="write the results as JSON to FILE")
    p.add_argument("--split", default="synthetic:test-fresh", help="problems to decode (default synthetic:test-fresh)")
    p.add_argument("--problems", type=int, default=None, metavar="N", help="only the first N problems of the split")
    p.add_argument("--seeds", type=int, default=3, help="seeds per arm (default 3)")
    p.add_argument("--budget", type=int, default=8, help="generations per problem, N = K x T (default 8)")
    p.add_argument("--rounds", type=int, default=4, help="iad rounds T (default 4)")
    p.add_argument("--sweep", default=DEFAULT_SWEEP, help=f"verifiers of the sweep, comma-separated (default {DEFAULT_SWEEP}); "
                                                          "empty for none")
    p.add_argument("--models", default="starter,repair", help="which models (default starter,repair)")
    p.add_argument("--starter", default=None, help="the starter checkpoint (default: the repair run's round 0)")
    p.add_argument("--repair", default=None, help="the repair-trained checkpoint (default: the repair run's last round)")
    p.add_argument("--repair-config", default="configs/iad_repair.yaml", help="the ITERTL run that trains the repair model")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of --repair-config")
    p.add_argument("--reranker", default=None, help="reranker directory (default: trained here from the starter)")
    p.add_argument("--reranker-problems", type=int, default=400, help="practice problems the default reranker samples")
    p.add_argument("--backend", default="vllm", help="sampler backend: vllm (default) or hf")
    p.add_argument("--temperature", type=float, default=None, help="default: the project's sampling default")
    p.add_argument("--max-tokens", type=int, default=96)
    p.add_argument("--sandbox-workers", type=int, default=None)
    p.add_argument("--work-dir", default="runs/iad-bench", help="where the default reranker is kept")
    return p.parse_args(argv)


# ---- the models and the reranker ---------------------------------------------------------------

def repair_run_models(args) -> tuple[str, str]:
    """(starter, repair model) of the ITERTL run with repair examples (run or resumed now)."""
    from loops.config import RESUMABLE_KEYS, load_config
    from loops.itertl import model_for_round, run_itertl
    from loops.rundir import RunDir

    cfg = load_config(args.repair_config, args.set)
    if cfg.repair_share <= 0:
        print(f"warning: {args.repair_config} has repair_share 0: the 'repair' model has no repair training",
              file=sys.stderr)
    run_itertl(cfg)  # resumes: finished stages are not redone
    run = RunDir.open(cfg.run_dir, cfg.to_dict(), RESUMABLE_KEYS)
    try:
        return model_for_round(run, cfg, 0), model_for_round(run, cfg, cfg.rounds)
    finally:
        run.close()


def default_reranker(starter: str, args, judge) -> str:
    """A reranker trained with example feedback on the starter's samples of the practice split (kept, reused)."""
    out = Path(args.work_dir) / "reranker"
    if (out / "config.json").exists():
        return str(out)
    from codegen.datasets import load_problems
    from codegen.evaluate import evaluate_samples
    from codegen.samplers import SamplingParams, make_sampler
    from codegen.sampling import sample_problems
    from rerankers.data import build_pairs
    from rerankers.train import TrainConfig, train_reranker

    problems = load_problems("synthetic:practice")[: args.reranker_problems]
    sampler = make_sampler(args.backend, starter, seed=0)
    try:
        samples = sample_problems(sampler, problems, SamplingParams(n=8, max_tokens=args.max_tokens, seed=0),
                                  model_name=starter)
    finally:
        sampler.close()
    results = evaluate_samples(problems, samples, executor=judge.start(), progress=False)
    pairs = build_pairs(problems, samples, results, max_pairs_per_problem=4, use_references=False)
    # min_steps=0: exactly 2 epochs, the reranker of the README's IAD figures
    train_reranker(pairs, starter, out, TrainConfig(feedback="examples", min_steps=0, progress=False))
    return str(out)


# ---- one arm ------------------------------------------------------------------------------------

def run_arm(sampler, problems, verifier, strategy: str, feedback: str, seed: int, args, judge) -> dict[str, Any]:
    """Decode every problem once; pass@1 of the picks on the hidden tests, generations, tokens, seconds."""
    from codegen.decoding import DecodeSettings, decode_problems
    from codegen.evaluate import evaluate_samples
    from codegen.samplers import SamplingParams
    from codegen.samples import samples_from_rows

    settings = DecodeSettings(strategy=strategy, budget=args.budget, rounds=args.rounds, feedback=feedback).check()
    params = SamplingParams(max_tokens=args.max_tokens, seed=seed * 7919)
    if args.temperature is not None:
        params.temperature = args.temperature
    t0 = time.monotonic()
    rows = decode_problems(sampler, problems, verifier, settings, params)
    seconds = time.monotonic() - t0
    picks = samples_from_rows(rows, "picks")
    results = evaluate_samples(problems, picks, executor=judge.start(), progress=False)
    decode = [r["decode"] for r in rows]
    return {"pass@1": sum(r["passed"] for r in results) / len(results),
            "generations": statistics.mean(d["generations"] for d in decode),
            "tokens": statistics.mean((d["prompt_tokens"] or 0) + d["completion_tokens"] for d in decode),
            "seconds": seconds}


def mean_sd(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each figure, and the standard deviation of pass@1 (None for one seed)."""
    scores = [r["pass@1"] for r in runs]
    return {"pass@1": statistics.mean(scores), "pass@1_sd": statistics.stdev(scores) if len(scores) > 1 else None,
            "generations": statistics.mean(r["generations"] for r in runs),
            "tokens": statistics.mean(r["tokens"] for r in runs),
            "seconds": statistics.mean(r["seconds"] for r in runs), "seeds": len(runs)}


def run_model(model: str, problems, verifiers: dict, sweep: list[str], args, judge) -> dict[str, Any]:
    from codegen.samplers import make_sampler

    sampler = make_sampler(args.backend, model, seed=0)
    out: dict[str, Any] = {"model": model}
    try:
        def arm(verifier_name: str, strategy: str, feedback: str) -> dict[str, Any]:
            runs = [run_arm(sampler, problems, verifiers[verifier_name](seed), strategy, feedback, seed, args, judge)
                    for seed in range(args.seeds)]
            stats = mean_sd(runs)
            print(f"  {verifier_name:>18} {strategy:>3} feedback={feedback:<8} pass@1 {100 * stats['pass@1']:5.1f}"
                  + (f" ± {100 * stats['pass@1_sd']:.1f}" if stats["pass@1_sd"] is not None else "")
                  + f"  generations {stats['generations']:.1f}  tokens {stats['tokens']:.0f}  {stats['seconds']:.0f} s",
                  flush=True)
            return stats

        for name, (strategy, feedback) in ARMS.items():
            out[name] = arm(MAIN_VERIFIER, strategy, feedback)
        out["sweep"] = {}
        for v in sweep:
            if v == MAIN_VERIFIER:
                row = {"bon": out["bon"], "iad": out["iad"]}
            else:
                row = {"bon": arm(v, "bon", "verifier"), "iad": arm(v, "iad", "verifier")}
            row["analysis_only"] = v == "oracle"
            out["sweep"][v] = row
    finally:
        sampler.close()
    return out


def targets(models: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets, met or missed, with the figures."""
    out: dict[str, Any] = {}
    for name, m in models.items():
        gain = m["iad"]["pass@1"] - m["bon"]["pass@1"]
        diversity = m["iad_no_feedback"]["pass@1"] - m["bon"]["pass@1"]
        out[name] = {"iad_minus_bon": gain, "iad_no_feedback_minus_bon": diversity,
                     "iad_at_least_bon_plus_3": gain >= TARGET_GAIN, "no_feedback_not_above_bon": diversity <= 0}
    return out


def target_lines(result: dict[str, Any]) -> list[str]:
    lines = []
    for name, t in result["targets"].items():
        verdict = "met" if t["iad_at_least_bon_plus_3"] else "missed"
        lines.append(f"{name}: iad - bon = {100 * t['iad_minus_bon']:+.1f} points (target >= +3: {verdict}); "
                     f"iad_no_feedback - bon = {100 * t['iad_no_feedback_minus_bon']:+.1f} points "
                     f"(target <= 0: {'met' if t['no_feedback_not_above_bon'] else 'missed'})")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from codegen.app.commands.decode import reranker_scores
    from codegen.datasets import load_problems
    from codegen.decoding import make_verifier
    from codegen.errors import UserError
    from codegen.judging import Judge
    from rerankers.model import Reranker

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    sweep = [v.strip() for v in args.sweep.split(",") if v.strip()]
    if set(models) - {"starter", "repair"}:
        print("error: --models takes starter and/or repair", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    judge = Judge(workers=args.sandbox_workers)
    try:
        paths = {"starter": args.starter, "repair": args.repair}
        if any(paths[m] is None for m in models):
            starter, repair = repair_run_models(args)
            paths = {"starter": args.starter or starter, "repair": args.repair or repair}
        reranker_dir = args.reranker or default_reranker(paths["starter"], args, judge)
        reranker = Reranker.load(reranker_dir, judge=judge)
        scores = reranker_scores(reranker)
        verifiers = {v: (lambda seed, v=v: make_verifier(v, judge=judge, score_fn=scores, seed=seed))
                     for v in {MAIN_VERIFIER, *sweep}}
        problems = load_problems(args.split)[: args.problems]
        result: dict[str, Any] = {"models": {}}
        for name in models:
            print(f"{name}: {paths[name]} on {len(problems)} problems of {args.split}, N={args.budget} "
                  f"(iad: {args.rounds} rounds x {args.budget // args.rounds}), {args.seeds} seed(s)", flush=True)
            result["models"][name] = run_model(paths[name], problems, verifiers, sweep, args, judge)
        reranker.close()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        judge.close()
    result["targets"] = targets(result["models"])
    result["settings"] = {"split": args.split, "problems": len(problems), "seeds": args.seeds, "budget": args.budget,
                          "rounds": args.rounds, "per_round": args.budget // args.rounds, "verifier": MAIN_VERIFIER,
                          "sweep": sweep, "reranker": reranker_dir, "backend": args.backend,
                          "max_tokens": args.max_tokens, "temperature": args.temperature,
                          "models": {m: paths[m] for m in models},
                          "note": "sweep.oracle uses the hidden tests that grade the pick: analysis only",
                          "seconds": round(time.monotonic() - t0, 1)}
    for line in target_lines(result):
        print(line)
    emit_result(result, args.json, "results")
    return 0


if __name__ == "__main__":
    sys.exit(main())
