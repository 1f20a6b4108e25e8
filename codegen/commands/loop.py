"""`itercode loop itertl --config FILE.yaml [key=value ...]`: run or resume a self-training loop."""
from __future__ import annotations

import argparse

HELP = "run (or resume) a self-training loop: itertl --config FILE.yaml [key=value ...]"

METHODS = ("itertl",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=METHODS, help="the loop to run (itertl: iterative SFT on own passing samples)")
    parser.add_argument("--config", metavar="FILE.yaml", default=None,
                        help="YAML config (see configs/demo.yaml); omitted = all defaults")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides applied on top of the file, e.g. rounds=2 sampler=hf")
    parser.epilog = ("Rerunning the same command resumes the run in runs/<name> from its last finished stage. "
                     "Show its table with `itercode runs show NAME`.")


def run(args: argparse.Namespace) -> int:
    from loops.config import load_config
    from loops.itertl import run_itertl

    cfg = load_config(args.config, args.overrides)
    run_itertl(cfg)
    return 0
