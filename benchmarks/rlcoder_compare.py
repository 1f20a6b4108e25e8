"""Is one RLCoder arm really above another? A paired bootstrap over the evaluation examples of finished runs.

    .venv/bin/python benchmarks/rlcoder_compare.py runs/bench-rlcoder-s0 runs/bench-rlcoder-s1 runs/bench-rlcoder-s2
    .venv/bin/python benchmarks/rlcoder_compare.py RUN [RUN ...] --a rlcoder --b infile --json

Each run's evaluation stage keeps every example's predicted line per arm
(``round-R/evaluate/predictions.jsonl``). The examples of all runs are
pooled (seeds are other generators and other examples, so each example is
one paired observation: both arms answered the same prompt's task), and the
difference of the means of A and B is resampled by example. A difference
counts only when its 95% interval excludes zero: a mean above the other's
by a few hits of thousands is noise.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen.errors import UserError  # noqa: E402
from codegen.io import read_jsonl  # noqa: E402
from codegen.repo.tasks import edit_similarity, exact_match  # noqa: E402
from loops.rlcoder import last_round  # noqa: E402
from loops.rlcoder_table import ARMS  # noqa: E402
from loops.rundir import RunDir  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", metavar="RUN", help="finished `itercode loop rlcoder` run directories")
    p.add_argument("--a", default="rlcoder", choices=ARMS, help="the arm claimed better (default: rlcoder)")
    p.add_argument("--b", default="bm25", choices=ARMS, help="the arm it is compared with (default: bm25)")
    p.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default: 10000)")
    p.add_argument("--seed", type=int, default=0, help="the bootstrap's random seed")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a few lines)")
    return p.parse_args(argv)


def predictions(run_dir: str, arms: tuple[str, ...] = ()) -> list[dict]:
    """The rows of a run's last finished evaluation stage; an error if they lack one of ``arms``."""
    run = RunDir.find(run_dir)
    last = last_round(run, "evaluate")
    if last is None:
        raise UserError(f"{run_dir} has no finished evaluation stage: finish the run first "
                        f"(`itercode loop rlcoder` or `benchmarks/rlcoder.py` with the same name)")
    rows = read_jsonl(run.stage_dir(last, "evaluate") / "predictions.jsonl")
    missing = [a for a in arms if rows and a not in rows[0]]
    if missing:
        raise UserError(f"{run_dir} was evaluated before the arm(s) {', '.join(missing)} existed; compare the arms "
                        f"it has ({', '.join(a for a in ARMS if a in rows[0])}), or run the loop again under a new "
                        "name=NEW_NAME")
    return rows


def interval(diffs: list[float], resamples: int, rng: np.random.Generator) -> tuple[float, float]:
    """The 95% bootstrap interval of the mean of ``diffs`` (resampled with replacement, in chunks)."""
    d = np.asarray(diffs, dtype=float)
    means = np.concatenate([d[rng.integers(0, len(d), size=(min(1000, resamples - i), len(d)))].mean(axis=1)
                            for i in range(0, resamples, 1000)])
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def compare(rows: list[dict], a: str, b: str, resamples: int = 10_000, seed: int = 0) -> dict:
    """EM and ES (%) of arms ``a`` and ``b`` on ``rows``, the paired difference and its 95% interval."""
    if not rows:
        raise UserError("no evaluation examples to compare")
    rng = np.random.default_rng(seed)
    out: dict = {"examples": len(rows), "a": a, "b": b}
    scores = {name: ([100 * metric(r[a], r["target"]) for r in rows], [100 * metric(r[b], r["target"]) for r in rows])
              for name, metric in (("em", exact_match), ("es", edit_similarity))}
    for name, (sa, sb) in scores.items():
        diffs = [x - y for x, y in zip(sa, sb)]
        lo, hi = interval(diffs, resamples, rng)
        out[name] = {a: round(sum(sa) / len(rows), 2), b: round(sum(sb) / len(rows), 2),
                     "difference": round(sum(diffs) / len(rows), 2), "ci95": [round(lo, 2), round(hi, 2)],
                     "verdict": "above" if lo > 0 else "below" if hi < 0 else "no real difference"}
    em_a, em_b = scores["em"]
    out["em"].update(only_a=sum(x > y for x, y in zip(em_a, em_b)), only_b=sum(y > x for x, y in zip(em_a, em_b)))
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.resamples < 100:
        print(f"error: --resamples must be at least 100 for a 95% interval, got {args.resamples}", file=sys.stderr)
        return 2
    try:
        rows = [r for run in args.runs for r in predictions(run, (args.a, args.b))]
        out = compare(rows, args.a, args.b, args.resamples, args.seed)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    out["runs"] = args.runs
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{args.a} against {args.b}, {out['examples']} examples of {len(args.runs)} run(s), paired bootstrap:")
    for name in ("em", "es"):
        m = out[name]
        print(f"  {name.upper()}: {m[args.a]:.2f} vs {m[args.b]:.2f}, difference {m['difference']:+.2f} "
              f"[{m['ci95'][0]:+.2f}, {m['ci95'][1]:+.2f}]: {m['verdict']}")
    print(f"  exact lines only {args.a} gets: {out['em']['only_a']}, only {args.b}: {out['em']['only_b']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
