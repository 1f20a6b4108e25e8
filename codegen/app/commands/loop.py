"""`itercode loop itertl|grpo --config FILE.yaml [key=value ...]`: run or resume a learning loop."""
from __future__ import annotations

import argparse

HELP = "run (or resume) a learning loop: itertl|grpo|dpo|rlcoder --config FILE.yaml [key=value ...]"

METHODS = ("itertl", "grpo", "dpo", "rlcoder")
USAGE = "itercode loop {itertl,grpo,dpo,rlcoder} [--config FILE.yaml] [key=value ...]"
METHOD_HELP = {
    "itertl": "iterative SFT on the model's own passing samples (configs/demo.yaml)",
    "grpo": ("policy RL on execution rewards with TRL's GRPO, or RLOO with algo=rloo; validation pass@1 beside "
             "the training reward every validate_every steps, the reward-hacking canary flags a reward rising "
             "while validation falls (configs/grpo.yaml)"),
    "dpo": ("iterative DPO: each round samples the policy, pairs passing with failing programs (the most confident "
            "failures first) and trains with TRL's DPOTrainer against the round's parent (configs/dpo.yaml)"),
    "rlcoder": ("repository-level completion: a small Llama trained on real repositories, a retriever trained "
                "round after round from the generator's loss with a stop block, evaluated against BM25 "
                "(configs/rlcoder.yaml)"),
}


def _inner_parser(method: str | None = None) -> argparse.ArgumentParser:
    # Options and overrides may come in any order (`itertl a=1 --config X b=2`);
    # argparse only allows that with parse_intermixed_args, hence this second parser.
    p = argparse.ArgumentParser(prog="itercode loop", usage=USAGE, description=METHOD_HELP.get(method),
                                epilog="Every key, its default and why: the commented YAML file named above, "
                                       "and the config's pydantic model (loops/config.py, loops/grpo_config.py).")
    p.add_argument("method", choices=METHODS)
    p.add_argument("--config", metavar="FILE.yaml", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.add_argument("--config", metavar="FILE.yaml", default=None, dest="config_first",
                        help="YAML config (see configs/demo.yaml, configs/grpo.yaml); omitted = all defaults")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="{itertl,grpo} [key=value ...]",
                        help="the loop (" + "; ".join(f"{m}: {h}" for m, h in METHOD_HELP.items()) + "), then "
                             "config overrides applied on top of the file, e.g. rounds=2 sampler=hf")
    parser.epilog = ("Rerunning the same command resumes the run in runs/<name> from its last finished stage. "
                     "Show its table with `itercode runs show NAME`.")


def parse(args: argparse.Namespace) -> argparse.Namespace:
    """The loop's own arguments from what the dispatcher left in ``rest``."""
    method = next((a for a in args.rest if a in METHODS), None)
    inner = _inner_parser(method).parse_intermixed_args(args.rest)
    if args.config_first and inner.config:
        _inner_parser().error("--config given twice")
    inner.config = inner.config or args.config_first
    return inner


def run(args: argparse.Namespace) -> int:
    args = parse(args)
    # optional: the loops need the train extra (their configs are pydantic); `itercode eval` starts without it
    from loops.config import load_config
    # optional: as above
    from loops.dpo import run_dpo
    # optional: as above
    from loops.dpo_config import load_dpo_config
    # optional: as above
    from loops.grpo import run_grpo
    # optional: as above
    from loops.grpo_config import load_grpo_config
    # optional: as above
    from loops.itertl import run_itertl

    if args.method == "rlcoder":
        # optional: the retrieval and train extras
        from loops.rlcoder import run_rlcoder
        # optional: as above
        from loops.rlcoder_config import load_rlcoder_config

        run_rlcoder(load_rlcoder_config(args.config, args.overrides))
    elif args.method == "grpo":
        run_grpo(load_grpo_config(args.config, args.overrides))
    elif args.method == "dpo":
        run_dpo(load_dpo_config(args.config, args.overrides))
    else:
        run_itertl(load_config(args.config, args.overrides))
    return 0
