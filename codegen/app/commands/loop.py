"""`itercode loop itertl|grpo|dpo|rewardranker|rlcoder --config FILE.yaml [key=value ...]`: run or resume a learning loop."""
from __future__ import annotations

import argparse
import importlib

HELP = "run (or resume) a learning loop: itertl|grpo|dpo|rewardranker|rlcoder --config FILE.yaml [key=value ...]"

# Each loop: its module and runner, its config's module and loader. Imported only when a loop runs: the
# loops need the train extra (their configs are pydantic; rlcoder the retrieval extra too), and
# `itercode eval` starts without them.
LOOPS = {
    "itertl": ("loops.itertl", "run_itertl", "loops.config", "load_config"),
    "grpo": ("loops.grpo", "run_grpo", "loops.grpo_config", "load_grpo_config"),
    "dpo": ("loops.dpo", "run_dpo", "loops.dpo_config", "load_dpo_config"),
    "rewardranker": ("loops.rewardranker", "run_rewardranker", "loops.rewardranker_config",
                     "load_rewardranker_config"),
    "rlcoder": ("loops.rlcoder", "run_rlcoder", "loops.rlcoder_config", "load_rlcoder_config"),
}
METHODS = tuple(LOOPS)
USAGE = "itercode loop {itertl,grpo,dpo,rewardranker,rlcoder} [--config FILE.yaml] [key=value ...]"
METHOD_HELP = {
    "itertl": "iterative SFT on the model's own passing samples (configs/demo.yaml)",
    "grpo": ("policy RL on execution rewards with TRL's GRPO, or RLOO with algo=rloo; validation pass@1 beside "
             "the training reward every validate_every steps, the reward-hacking canary flags a reward rising "
             "while validation falls (configs/grpo.yaml)"),
    "dpo": ("iterative DPO: each round samples the policy, pairs passing with failing programs (the most confident "
            "failures first) and trains with TRL's DPOTrainer against the round's parent (configs/dpo.yaml)"),
    "rewardranker": ("RewardRanker: a reranker trained on the policy's judged samples, GRPO from the base policy with "
                     "the reranker as the reward, hard negatives mined from the RL policy's samples, the reranker "
                     "retrained with them (hard_negatives=only|with_positives), iterations=2 times; reranked pass@1 "
                     "beside the no-learning rule (configs/rewardranker.yaml)"),
    "rlcoder": ("repository-level completion: a small Llama trained on real repositories, a retriever trained "
                "round after round from the generator's loss with a stop block, evaluated against BM25 "
                "(configs/rlcoder.yaml)"),
}


def _inner_parser(method: str | None = None) -> argparse.ArgumentParser:
    # Options and overrides may come in any order (`itertl a=1 --config X b=2`);
    # argparse only allows that with parse_intermixed_args, hence this second parser.
    p = argparse.ArgumentParser(prog="itercode loop", usage=USAGE, description=METHOD_HELP.get(method),
                                epilog="Every key, its default and why: the commented YAML file named above, "
                                       "and the config's pydantic model (loops/config.py, loops/grpo_config.py, "
                                       "loops/dpo_config.py, loops/rewardranker_config.py, loops/rlcoder_config.py).")
    p.add_argument("method", choices=METHODS)
    p.add_argument("--config", metavar="FILE.yaml", default=None)
    p.add_argument("overrides", nargs="*", metavar="key=value")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = USAGE
    parser.add_argument("--config", metavar="FILE.yaml", default=None, dest="config_first",
                        help="YAML config (see configs/demo.yaml, configs/grpo.yaml, configs/dpo.yaml, "
                             "configs/rewardranker.yaml, configs/rlcoder.yaml); omitted = all defaults")
    parser.add_argument("rest", nargs=argparse.REMAINDER, metavar="{" + ",".join(METHODS) + "} [key=value ...]",
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
    module, runner, config_module, loader = LOOPS[args.method]
    load = getattr(importlib.import_module(config_module), loader)
    getattr(importlib.import_module(module), runner)(load(args.config, args.overrides))
    return 0
