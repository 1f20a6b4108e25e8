"""Choose the RLCoder retriever's settings on validation, never on the evaluation projects.

    .venv/bin/python benchmarks/rlcoder_validate.py --run runs/rlcoder [--json] [key=value ...]
    .venv/bin/python benchmarks/rlcoder_validate.py --run runs/rlcoder retriever_tasks_per_repo=200 rounds=3

A finished `itercode loop rlcoder` run keeps its generator; its
retriever-training projects are split in two: every third one (at least one)
validates, the rest train a fresh retriever through the loop's own label and
retriever stages (its rounds, with the run's config and the overrides). Every
arm of the benchmark (infile, bm25, rlcoder, rlcoder_no_stop, oracle) is then
measured on the validation projects. The run's evaluation projects are never
read, so a setting chosen here has not seen the figures it will be judged by.

The keys that matter here: retriever_tasks_per_repo, rounds,
epochs_per_round, retriever_lr, bm25_k, retrieve_k, stop_margin, label_metric,
sim_margin, top_k. ``--stop-bias 0,1,2`` also measures the rlcoder arm of the
same trained retriever at each inference-time stop bias (the config's
``stop_bias``; it changes no training, so one retriever serves the sweep).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen.hardware import torch_threads  # noqa: E402
from codegen.io import read_jsonl  # noqa: E402
from codegen.repo.retriever import Retriever  # noqa: E402
from codegen.repo.tasks import make_tasks  # noqa: E402
from loops.rlcoder import (Scorer, arm_blocks, evaluate_arms, label_stage, retriever_stage,  # noqa: E402
                           round_retriever, score_arm)
from loops.rlcoder_config import load_rlcoder_config  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--run", required=True, metavar="DIR", help="a finished RLCoder run directory (runs/<name>)")
    p.add_argument("--val-tasks", type=int, default=100, metavar="N", help="tasks per validation project (100)")
    p.add_argument("--stop-bias", type=_floats, default=[], metavar="B,B,...",
                   help="also measure the rlcoder arm at each of these stop biases (e.g. 0,0.5,1,2)")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="retriever settings to try, e.g. rounds=3")
    return p.parse_args(argv)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give numbers separated by commas, e.g. 0,0.5,1,2") from None


def split_for_validation(repos: list[str]) -> tuple[list[str], list[str]]:
    """``(train, validation)``: every third project validates (at least one), the rest train."""
    if len(repos) < 2:
        raise SystemExit(f"the run has {len(repos)} retriever-training project(s); validation needs at least 2 "
                         "(one to train the retriever, one to validate it): give the run more repositories")
    repos = sorted(repos)
    val = repos[2::3] or repos[-1:]
    return [r for r in repos if r not in val], val


def validate(run: Path, overrides: list[str], val_tasks: int, log=None, stop_biases=()) -> dict:
    """The arms on the validation projects for one choice of retriever settings."""
    if not (run / "round-0" / "generator" / "model").is_dir():
        raise SystemExit(f"{run} holds no trained generator: run `itercode loop rlcoder` there first")
    cfg = load_rlcoder_config(str(run / "config.yaml"), ["progress=false", *overrides])
    train_repos, val_repos = split_for_validation(
        json.loads((run / "round-0" / "corpus" / "repos.json").read_text())["retriever"])
    train = make_tasks(train_repos, cfg.retriever_tasks_per_repo, seed=cfg.seed * 10 + 1, **cfg.task_options())
    val = make_tasks(val_repos, val_tasks, seed=cfg.seed * 10 + 5, **cfg.task_options())
    quiet = log or (lambda m: None)
    with torch_threads(cfg.train_threads), tempfile.TemporaryDirectory() as tmp:
        scorer = Scorer(run / "round-0" / "generator" / "model", cfg.device)
        known: dict[str, dict] = {}
        previous = None
        for k in range(1, cfg.rounds + 1):  # the loop's own stages, in a scratch directory
            d = Path(tmp) / f"round-{k}"
            d.mkdir()
            label_stage(cfg, scorer, train, round_retriever(cfg, previous, labelling=True), known, d, quiet)
            retriever_stage(cfg, train, read_jsonl(d / "labels.jsonl"), previous, d, k)
            previous = d / "model"
            quiet(f"round {k} of {cfg.rounds}: retriever trained on {len(train)} tasks")
        retriever = Retriever.load(previous)
        result, _ = evaluate_arms(scorer, retriever, val, top_k=cfg.top_k, max_new_tokens=cfg.max_new_tokens,
                                  seed=cfg.seed, stop_bias=cfg.stop_bias, log=log)
        sweep = {}
        for bias in stop_biases:
            blocks = [arm_blocks("rlcoder", t, retriever, None, cfg.top_k, bias) for t in val]
            sweep[str(bias)] = score_arm(scorer, val, blocks, cfg.max_new_tokens)[0]
            quiet(f"stop bias {bias}: {sweep[str(bias)]}")
        if sweep:
            result["stop_bias_sweep"] = sweep
    return {**result, "overrides": overrides, "train_tasks": len(train),
            "train_projects": [Path(r).name for r in train_repos], "validation_projects": [Path(r).name for r in val_repos]}


def main(argv=None) -> int:
    args = parse_args(argv)
    log = lambda m: print(f"[validate] {m}", file=sys.stderr, flush=True)  # noqa: E731
    out = validate(Path(args.run), args.overrides, args.val_tasks, log, args.stop_bias)
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"validation: {', '.join(out['validation_projects'])} ({out['examples']} examples); "
              f"settings: {' '.join(args.overrides) or 'the run config'}")
        print(f"{'arm':<16} {'EM %':>6} {'ES %':>6} {'retrieved tokens':>16}")
        for arm, r in out["arms"].items():
            print(f"{arm:<16} {r['em']:>6.1f} {r['es']:>6.1f} {r['retrieved_tokens']:>16.1f}")
        for bias, r in out.get("stop_bias_sweep", {}).items():
            print(f"{'rlcoder @' + bias:<16} {r['em']:>6.1f} {r['es']:>6.1f} {r['retrieved_tokens']:>16.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
