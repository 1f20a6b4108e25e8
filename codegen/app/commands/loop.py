"""`itercode loop itertl --config FILE.yaml [key=value ...]`: run or resume a self-training loop."""
from __future__ import annotations

import argparse

HELP = "run (or resume) a self-training loop: itertl --config FILE.yaml [key=value ...]"

METHODS = ("itertl", "dpo")
USAGE = "itercode loop {itertl,dpo} [--config FILE.yaml] [key=value ...]"


def _inner_parser() -> argparse.ArgumentParser:
    # Options and overrides may come in any order (`itertl a=1 --config X b=2`);
    # argparse only allows that with parse_intermixed_args, hence this second parser.
    p = argparse.ArgumentParser(prog="itercode loop", usage=USAGE)
    p.add_argument("method", choices=METHODS)
    p.add_argument("--config", metavar="FILE.yaml", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.add_argument("--config", metavar="FILE.yaml", default=None, dest="config_first",
                        help="YAML config (see configs/demo.yaml); omitted = all defaults")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="itertl [key=value ...]",
                        help="the loop (itertl: iterative SFT on the model's own passing samples), then config "
                             "overrides applied on top of the file, e.g. rounds=2 sampler=hf")
    parser.epilog = ("Rerunning the same command resumes the run in runs/<name> from its last finished stage. "
                     "Show its table with `itercode runs show NAME`.")


def parse(args: argparse.Namespace) -> argparse.Namespace:
    """The loop's own arguments from what the dispatcher left in ``rest``."""
    inner = _inner_parser().parse_intermixed_args(args.rest)
    if args.config_first and inner.config:
        _inner_parser().error("--config given twice")
    inner.config = inner.config or args.config_first
    return inner


def run(args: argparse.Namespace) -> int:
    # optional: the loop needs the train extra (its config is pydantic); `itercode eval` starts without it
    from loops.config import load_config
    from loops.dpo import run_dpo
    from loops.dpo_config import load_dpo_config
    from loops.itertl import run_itertl

    args = parse(args)
    if args.method == "dpo":
        run_dpo(load_dpo_config(args.config, args.overrides))
        return 0
    cfg = load_config(args.config, args.overrides)
    run_itertl(cfg)
    return 0
