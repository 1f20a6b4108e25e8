"""`itercode runs show RUN`: a run's per-round table (an RL run's validation points too), stages and lineage."""
from __future__ import annotations

import argparse

from loops.rlcoder_table import format_rlcoder, is_rlcoder_run
from loops.rundir import RunDir
from loops.table import format_points, format_table

HELP = "inspect run directories: `runs show RUN` prints the per-round table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="runs_command", metavar="ACTION", required=True)
    show = sub.add_parser("show", help="print a run's per-round metrics table and its stage status")
    show.add_argument("run", help="a run name under --runs-dir, or a path to a run directory")
    show.add_argument("--runs-dir", default="runs", help="where named runs live (default: runs)")
    show.add_argument("--stages", action="store_true", help="also list every stage with its status")


def run(args: argparse.Namespace) -> int:
    run_dir = RunDir.find(args.run, args.runs_dir)
    root, rows = run_dir.root, run_dir.metrics()
    if rows and is_rlcoder_run(rows):
        print(format_rlcoder(rows, title=f"run {root} (RLCoder)"))
    elif rows:
        print(format_table(rows, title=f"run {root} (pass rates in %)"))
    else:
        print(f"run {root}: no round evaluated yet")
    points = run_dir.points()
    if points:  # an RL run: reward and validation at every point, the canary's flags
        print()
        print(format_points(points))
    if run_dir.plot_path.exists():
        print(f"plot: {run_dir.plot_path}")
    for key, entry in run_dir.unfinished_stages().items():
        note = f" ({entry['error']})" if entry.get("error") else ""
        print(f"unfinished stage: {key}: {entry.get('status')}{note}; rerun the loop command to resume it")
    if args.stages:
        for key, entry in run_dir.state["stages"].items():
            print(f"  {key:<22} {entry.get('status'):<8} attempts={entry.get('attempts')} "
                  f"finished={entry.get('finished_at', '-')}")
    return 0
