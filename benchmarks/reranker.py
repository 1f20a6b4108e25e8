"""Reranked pass@1 on held-out synthetic problems: the issue-5 table.

    .venv/bin/python benchmarks/reranker.py --out runs/bench-reranker [--starter DIR] [--rounds 2]

1. the starter model (built here with `build_starter` unless ``--starter``);
2. n candidates per problem from the starter with vLLM: on the UNLABELED and
   PRACTICE splits for training (problems the starter never saw, like
   held-out; at temperature 1.0 for more varied mistakes), a second fresh
   draw on them for the hard-negative round, and n per HELD-OUT problem at
   the usual temperature 0.8 (evaluation only);
3. every candidate judged by the process sandbox;
4. for each reranker kind: the code+examples reranker (reads the candidate
   and how it did on the docstring's examples, `rerankers.feedback`) and the
   code-only one: round 1 trains a reward model on (passing, failing) pairs
   with TRL's RewardTrainer, started from the starter model; round 2..R: the
   previous round's reranker scores the fresh draw, its highest-scored
   failures join the pairs, and the reranker is trained again;
5. on held-out: pass@1, reranked pass@1 of each round, oracle pass@n, a
   random pick, a mean-log-prob pick and the examples-then-log-prob pick
   (what the examples alone give, without learning), with training time.

Each step's output is kept in ``--out`` and reused on a rerun, so a stopped
run resumes; ``--fresh`` starts over. Held-out candidates never reach training
(`rerankers.data` refuses them; the table's last line checks it again).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen.samplers import SamplingParams  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/bench-reranker", help="working directory (reused on a rerun)")
    p.add_argument("--starter", default=None, help="starter model directory (default: build one in --out)")
    p.add_argument("--n", type=int, default=16, help="candidates per problem (default 16)")
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature,
                   help="sampling temperature of the held-out candidates")
    p.add_argument("--train-splits", default="unlabeled,practice",
                   help="synthetic splits whose candidates train the reranker (default unlabeled,practice: "
                   "problems the starter never trained on, like held-out; add reference to include its split)")
    p.add_argument("--train-temperature", type=float, default=1.0,
                   help="sampling temperature of the training candidates (default 1.0: more varied mistakes)")
    p.add_argument("--top-p", type=float, default=SamplingParams.top_p)
    p.add_argument("--max-tokens", type=int, default=192)
    p.add_argument("--rounds", type=int, default=2, help="reranker rounds; 2 = first round + a hard-negative round")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--max-pairs-per-problem", type=int, default=16)
    p.add_argument("--negatives-per-problem", type=int, default=4)
    p.add_argument("--lora", action="store_true")
    p.add_argument("--feedback", default="examples,none",
                   help="reranker kinds to train, comma-separated: 'examples' (reads the docstring examples' "
                   "results too) and/or 'none' (the code alone)")
    p.add_argument("--code-only-rounds", type=int, default=1, help="rounds for the code-only reranker (default 1)")
    p.add_argument("--warm-start", action="store_true", help="hard-negative rounds continue from the previous round")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads for training and scoring (default 2)")
    p.add_argument("--fresh-n", type=int, default=8, help="candidates per problem in the fresh draw for hard negatives")
    p.add_argument("--train-problems", type=int, default=None,
                   help="use only the first N problems of each training split (default: all)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N problems of each split (smoke runs)")
    p.add_argument("--workers", type=int, default=None, help="sandbox workers (default: the backend's choice)")
    p.add_argument("--kv-cache-gib", type=int, default=2)
    p.add_argument("--fresh", action="store_true", help="ignore what an earlier run left in --out")
    return p.parse_args(argv)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    from codegen.evaluate import evaluate_samples
    from codegen.io import read_jsonl, write_jsonl_atomic, write_text_atomic
    from codegen.synthetic import load_split
    from rerankers.hard_negatives import train_rounds
    from rerankers.model import Reranker
    from codegen.samples import read_samples
    from rerankers.report import format_report, rerank_report
    from rerankers.train import TrainConfig
    from sandbox.base import Limits

    out = Path(args.out)
    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    # 1. The starter model.
    starter = Path(args.starter) if args.starter else out / "starter"
    if not (starter / "config.json").exists():
        from codegen.starter import build_starter

        log(f"building the starter model in {starter}")
        t = time.perf_counter()
        build_starter(starter, seed=0)
        timings["starter_build_s"] = time.perf_counter() - t

    limit = args.limit or args.train_problems
    train_problems = [p for split in args.train_splits.split(",") for p in load_split(split.strip())[:limit]]
    heldout = load_split("heldout")[: args.limit]
    # name -> (problems, sampling seed, candidates per problem, temperature)
    draws = {"train": (train_problems, 1, args.n, args.train_temperature),
             "fresh": (train_problems, 2, args.fresh_n, args.train_temperature),
             "heldout": (heldout, 3, args.n, args.temperature)}

    # 2. Candidates (one vLLM engine for all three draws).
    missing = [name for name in draws if not (out / f"{name}_samples.jsonl").exists()]
    if missing:
        from codegen.samplers import make_sampler
        from codegen.sampling import sample_problems

        t = time.perf_counter()
        sampler = make_sampler("vllm", str(starter), seed=0, kv_cache_gib=args.kv_cache_gib)
        try:
            for name in missing:
                problems, seed, n, temperature = draws[name]
                log(f"sampling {n} candidates for {len(problems)} {name} problems at temperature {temperature}")
                params = SamplingParams(n=n, temperature=temperature, top_p=args.top_p,
                                        max_tokens=args.max_tokens, seed=seed)
                samples = sample_problems(sampler, problems, params, model_name=str(starter))
                write_jsonl_atomic(out / f"{name}_samples.jsonl", [s.to_dict() for s in samples])
        finally:
            sampler.close()
        timings["sampling_s"] = time.perf_counter() - t

    # 3. Verdicts.
    limits = Limits()
    sets = {}
    for name, (problems, *_) in draws.items():
        samples, _ = read_samples(out / f"{name}_samples.jsonl")
        results_path = out / f"{name}_results.jsonl"
        if not results_path.exists():
            log(f"judging {len(samples)} {name} candidates in the process sandbox")
            t = time.perf_counter()
            results = evaluate_samples(problems, samples, backend="process", workers=args.workers, limits=limits)
            write_jsonl_atomic(results_path, results)
            timings[f"judging_{name}_s"] = time.perf_counter() - t
        results = read_jsonl(results_path)
        # A rerun with fewer problems (e.g. --train-problems) reuses the larger draw's files.
        wanted = {p.task_id for p in problems}
        kept = [(s, r) for s, r in zip(samples, results) if s.task_id in wanted]
        sets[name] = ([s for s, _ in kept], [r for _, r in kept])

    held_samples, held_results = sets["heldout"]
    baseline = rerank_report(heldout, held_samples, held_results, examples=True)
    log(f"held-out: pass@1 {baseline['pass@1']:.3f}, oracle {baseline['oracle_pass@n']:.3f}, "
        f"mean-logprob pick {baseline['mean_logprob_pick']:.3f}, "
        f"examples+logprob pick {baseline['examples_logprob_pick']:.3f}")

    # 4. Rerankers, round after round, for each kind; each round is scored on held-out as it finishes.
    columns: dict[str, dict] = {}
    for feedback in args.feedback.split(","):
        config = TrainConfig(epochs=args.epochs, learning_rate=args.lr, batch_size=args.batch_size,
                             max_length=args.max_length, lora=args.lora, threads=args.threads, progress=True,
                             feedback=feedback)
        kind = "code+examples" if feedback == "examples" else "code only"

        def evaluate_round(rr, kind=kind) -> None:
            reranker = Reranker.load(rr.path)
            t = time.perf_counter()
            try:
                report = rerank_report(heldout, held_samples, held_results, reranker)
            finally:
                reranker.close()
            report.update(train_seconds=rr.seconds, pairs=rr.pairs, hard_negative_pairs=rr.hard_negative_pairs,
                          score_seconds=time.perf_counter() - t, train_accuracy=rr.stats.get("final_accuracy"),
                          trained_task_ids=reranker.meta.get("trained_task_ids", []))
            report["examples_logprob_pick"] = baseline["examples_logprob_pick"]
            label = f"{kind}, r{rr.round}" + (" +hard neg." if rr.round > 1 else "")
            columns[label] = report
            log(f"{label}: reranked pass@1 {report['reranked_pass@1']:.3f} ({rr.pairs} pairs, {rr.seconds:.0f} s)")

        t = time.perf_counter()
        rounds = args.rounds if feedback == "examples" else args.code_only_rounds
        train_rounds(train_problems, [sets["train"], sets["fresh"]], str(starter), out / f"reranker-{feedback}",
                     rounds=rounds, config=config, max_pairs_per_problem=args.max_pairs_per_problem,
                     negatives_per_problem=args.negatives_per_problem, on_round=evaluate_round,
                     warm_start=args.warm_start)
        timings[f"reranker_{feedback}_total_s"] = time.perf_counter() - t

    # 5. The table.
    heldout_ids = {p.task_id for p in heldout}
    leaked = sorted({t for c in columns.values() for t in c.pop("trained_task_ids")} & heldout_ids)
    title = (f"held-out synthetic problems: {baseline['problems']}, n={args.n} candidates each, "
             f"temperature {args.temperature}, top_p {args.top_p}, model {starter.name} (vLLM), "
             f"sandbox process (timeout {limits.timeout_s:g} s, memory {limits.memory_mb} MB)")
    table = format_report(columns, title=title)
    extra = ["", "reranker, round".ljust(30) + "pairs  hard-neg pairs  train time  train acc."]
    for label, c in columns.items():
        acc = c.get("train_accuracy")
        extra.append(f"{label:30}{c['pairs']:5d}  {c['hard_negative_pairs']:14d}  {c['train_seconds']:8.0f} s  "
                     f"{'-' if acc is None else f'{acc:.3f}'}")
    extra.append(f"held-out problems among the training pairs: {len(leaked)}")
    text = table + "\n" + "\n".join(extra)
    print(text)
    summary = {"baseline": baseline, "rounds": columns, "timings_s": timings, "args": vars(args),
               "machine": f"{platform.machine()}, {platform.python_version()}", "heldout_leaked": leaked}
    write_text_atomic(out / "report.txt", text + "\n")
    write_jsonl_atomic(out / "report.jsonl", [summary])
    return 0 if not leaked else 1


if __name__ == "__main__":
    sys.exit(main())
