"""`itercode reranker`: train a reward model from execution verdicts, and score with it.

    itercode reranker train --problems synthetic:reference --problems synthetic:unlabeled \\
        --samples train.jsonl --results train.jsonl_results.jsonl --base runs/starter --out runs/rr [--rounds 2] [--lora]
    itercode reranker score --reranker runs/rr --problems synthetic:heldout --samples heldout.jsonl \\
        [--results heldout.jsonl_results.jsonl] [--out scored.jsonl]

``train`` pairs a passing and a failing candidate of the same problem (infra
errors masked, held-out problems refused) and trains with TRL's RewardTrainer;
by default the reranker also reads how each candidate did on the docstring's
examples (``--feedback``, see `rerankers.feedback`);
``--rounds R`` adds hard negatives round after round (see
`rerankers.hard_negatives`). ``score`` writes every sample with its score and
rank, and with ``--results`` prints reranked pass@1 next to pass@1, the oracle,
a random pick and a mean-log-prob pick.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from codegen.datasets import load_problems
from codegen.decoding import best_index, ranking
from codegen.errors import UserError
from codegen.io import read_jsonl, write_jsonl_atomic
from codegen.samples import read_samples
from rerankers.hard_negatives import train_rounds
from rerankers.model import Reranker, check_reranker_dir
from rerankers.report import format_report, n_label, rerank_report
from rerankers.train import TrainConfig
from sandbox import BACKENDS, DEFAULT_BACKEND

HELP = "train a reranker (reward model) on execution verdicts, with hard-negative rounds; score candidates with it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="reranker_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a reranker from samples and their verdicts",
                       description="Pair passing and failing candidates of each problem and train a reward model "
                       "with TRL's RewardTrainer. Held-out problems are refused; infra_error verdicts are masked.")
    t.add_argument("--problems", action="append", required=True, metavar="SPEC",
                   help="problems the samples answer (repeatable, or comma-separated): e.g. synthetic:reference, "
                   "synthetic:unlabeled, humaneval, or a problems file")
    t.add_argument("--samples", required=True, metavar="FILE", help="samples JSONL (from `itercode sample`)")
    t.add_argument("--results", required=True, metavar="FILE", help="their verdicts (from `itercode eval`)")
    t.add_argument("--fresh-samples", action="append", default=[], metavar="FILE",
                   help="fresh candidates for hard-negative round 2, 3, ... (repeatable, in round order); "
                   "without them later rounds mine the --samples candidates")
    t.add_argument("--fresh-results", action="append", default=[], metavar="FILE",
                   help="verdicts of each --fresh-samples file, in the same order")
    t.add_argument("--base", required=True, metavar="MODEL",
                   help="starting model: a local HF directory (e.g. the starter model) or a hub id")
    t.add_argument("--out", required=True, metavar="DIR", help="where the reranker is written (replaced atomically)")
    t.add_argument("--rounds", type=int, default=1, metavar="R",
                   help="training rounds; each round after the first adds hard negatives (default 1)")
    t.add_argument("--warm-start", action="store_true",
                   help="rounds after the first continue from the previous round's weights on the hard negatives "
                   "plus as many replayed pairs (faster), instead of retraining from --base on all pairs")
    t.add_argument("--lora", action="store_true", help="train LoRA adapters (peft) instead of all weights; merged on save")
    d = TrainConfig  # the defaults live there, once
    t.add_argument("--lora-r", type=int, default=d.lora_r, metavar="R", help=f"LoRA rank (default {d.lora_r})")
    t.add_argument("--epochs", type=float, default=d.epochs, help=f"passes over the pairs (default {d.epochs:g})")
    t.add_argument("--min-steps", type=int, default=d.min_steps, metavar="N",
                   help="optimizer steps at least: with few pairs the passes rise above --epochs until N steps "
                   f"are made (default {d.min_steps}; 0 = exactly --epochs)")
    t.add_argument("--lr", type=float, default=d.learning_rate, help=f"peak learning rate (default {d.learning_rate:g})")
    t.add_argument("--batch-size", type=int, default=d.batch_size, help=f"pairs per step (default {d.batch_size})")
    t.add_argument("--max-length", type=int, default=d.max_length, metavar="TOKENS",
                   help=f"tokens of prompt + completion; longer prompts lose their start (default {d.max_length})")
    t.add_argument("--max-pairs-per-problem", type=int, default=16, metavar="N", help="cap on pairs per problem (default 16)")
    t.add_argument("--negatives-per-problem", type=int, default=4, metavar="N",
                   help="hard negatives taken per problem in each later round (default 4)")
    t.add_argument("--no-references", action="store_true",
                   help="do not use the problems' reference solutions as extra passing candidates")
    t.add_argument("--feedback", choices=("examples", "none"), default="examples",
                   help="what the reranker reads besides the code: 'examples' (default) appends how the "
                   "candidate did on the prompt's docstring examples, run in the sandbox (public examples, "
                   "never the hidden tests; LEVER-style); 'none' reads the code alone")
    t.add_argument("--sandbox", choices=BACKENDS, default=DEFAULT_BACKEND,
                   help=f"sandbox backend that runs the docstring examples (default {DEFAULT_BACKEND})")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")

    s = sub.add_parser("score", help="score candidates with a trained reranker",
                       description="Score every sample; write them with their scores; with --results, print "
                       "reranked pass@1 beside pass@1, oracle pass@n, a random pick and a mean-log-prob pick.")
    s.add_argument("--reranker", required=True, metavar="DIR", help="a directory written by `itercode reranker train`")
    s.add_argument("--problems", action="append", required=True, metavar="SPEC", help="problems the samples answer")
    s.add_argument("--samples", required=True, metavar="FILE", help="samples JSONL")
    s.add_argument("--results", metavar="FILE", default=None, help="their verdicts, to report reranked pass@1")
    s.add_argument("--out", metavar="FILE", default=None, help="scored samples (default: SAMPLES_scored.jsonl)")
    s.add_argument("--best-only", action="store_true", help="write only each problem's top-scored sample")
    s.add_argument("--batch-size", type=int, default=16, help="candidates per forward pass (default 16)")
    s.add_argument("--json", action="store_true", help="print the report as one JSON object")


def load_problem_specs(specs: list[str]):
    """Problems of every ``--problems`` value (repeatable and comma-separated), ids unique."""
    problems, seen = [], set()
    for spec in [part.strip() for value in specs for part in value.split(",") if part.strip()]:
        for p in load_problems(spec):
            if p.task_id not in seen:
                seen.add(p.task_id)
                problems.append(p)
    return problems


def _read_results(path: str) -> list[dict]:
    rows = read_jsonl(path)
    for i, row in enumerate(rows, 1):
        if "passed" not in row and "status" not in row:
            raise UserError(f"{path}, row {i}: no verdict (passed/status); pass the results file of `itercode eval`")
    return rows


def run(args: argparse.Namespace) -> int:
    if args.reranker_command == "train":
        return run_train(args)
    if args.reranker_command == "score":
        return run_score(args)
    raise UserError("say what to do: `itercode reranker train ...` or `itercode reranker score ...` (see --help)")


def run_train(args: argparse.Namespace) -> int:
    if len(args.fresh_samples) != len(args.fresh_results):
        raise UserError(
            f"{len(args.fresh_samples)} --fresh-samples but {len(args.fresh_results)} --fresh-results: give one "
            "results file per fresh samples file, in the same order"
        )
    if args.rounds < 1:
        raise UserError(f"--rounds {args.rounds}: must be at least 1")
    if args.fresh_samples and args.rounds < 2:
        raise UserError("--fresh-samples feed hard-negative rounds; add --rounds 2 (or more)")
    config = TrainConfig(epochs=args.epochs, min_steps=args.min_steps, learning_rate=args.lr,
                         batch_size=args.batch_size, max_length=args.max_length, lora=args.lora,
                         lora_r=args.lora_r, seed=args.seed, threads=args.threads,
                         progress=sys.stderr.isatty(), feedback=args.feedback, sandbox=args.sandbox)
    config.check()
    problems = load_problem_specs(args.problems)
    sets = [(read_samples(args.samples)[0], _read_results(args.results))]
    for fs, fr in zip(args.fresh_samples, args.fresh_results):
        sets.append((read_samples(fs)[0], _read_results(fr)))

    def report_round(rr):
        s = rr.stats
        acc = s.get("final_accuracy")
        print(f"round {rr.round}: {rr.pairs} pairs ({rr.hard_negative_pairs} hard negatives) on "
              f"{s.get('problems')} problems, {s.get('steps')} steps, {rr.seconds:.1f} s, train accuracy "
              f"{'-' if acc is None else f'{acc:.3f}'}", flush=True)

    rounds = train_rounds(problems, sets, args.base, args.out, rounds=args.rounds, config=config,
                          max_pairs_per_problem=args.max_pairs_per_problem,
                          use_references=not args.no_references,
                          negatives_per_problem=args.negatives_per_problem, seed=args.seed, on_round=report_round,
                          warm_start=args.warm_start)
    total = sum(r.seconds for r in rounds)
    print(f"reranker written to {args.out} ({len(rounds)} round(s), {total:.1f} s training)")
    return 0


def run_score(args: argparse.Namespace) -> int:
    check_reranker_dir(args.reranker)  # before minutes of loading problems
    problems = load_problem_specs(args.problems)
    samples, rows = read_samples(args.samples)
    by_task = {p.task_id: p for p in problems}
    unknown = sorted({s.task_id for s in samples} - by_task.keys())
    if unknown:
        raise UserError(f"samples of {unknown[0]} match none of --problems {' '.join(args.problems)}")
    reranker = Reranker.load(args.reranker, batch_size=args.batch_size)

    # Score per problem so ranks are within a problem.
    order: dict[str, list[int]] = {}
    for i, s in enumerate(samples):
        order.setdefault(s.task_id, []).append(i)
    tasks = list(order)
    try:
        scored = reranker.score_problems([(by_task[t], [samples[i].completion for i in order[t]]) for t in tasks],
                                         progress=sys.stderr.isatty())
    finally:
        reranker.close()
    score_of, rank_of, best = {}, {}, set()
    for t, scores in zip(tasks, scored):
        for rank, j in enumerate(ranking(scores)):
            score_of[order[t][j]] = scores[j]
            rank_of[order[t][j]] = rank
        best.add(order[t][best_index(scores)])
    out_rows = [
        {**row, "rerank_score": score_of[i], "rerank_rank": rank_of[i]}
        for i, row in enumerate(rows) if not args.best_only or i in best
    ]
    out = Path(args.out) if args.out else Path(f"{args.samples}_scored.jsonl")
    if out.resolve() == Path(args.samples).resolve():
        raise UserError(f"--out {out} is the samples file itself; choose another file")
    write_jsonl_atomic(out, out_rows)
    print(f"scored {len(samples)} samples of {len(tasks)} problems -> {out}", file=sys.stderr)

    if args.results:
        results = _read_results(args.results)
        scores = {t: sc for t, sc in zip(tasks, scored)}
        report = rerank_report(problems, samples, results, scores=scores)
        if args.json:
            print(json.dumps(report))
        else:
            print(f"problems {report['problems']}, {n_label(report)}, reranker {args.reranker}")
            print(format_report({"score": report}))
    return 0
