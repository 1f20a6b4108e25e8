"""The `itercode` command line.

Each subcommand lives in its own module under `codegen.app.commands` and exposes
``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``.
Modules import heavy libraries (torch, vllm, trl, docker) inside ``run`` only,
so `itercode eval` starts fast on a machine without a GPU stack.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from codegen.errors import UserError

# name -> module; a module that does not exist yet is simply not offered.
COMMANDS = {
    "eval": "codegen.app.commands.eval",
    "sample": "codegen.app.commands.sample",
    "decode": "codegen.app.commands.decode",
    "starter": "codegen.app.commands.starter",
    "sandbox": "codegen.app.commands.sandbox",
    "reranker": "codegen.app.commands.reranker",
    "loop": "codegen.app.commands.loop",
    "runs": "codegen.app.commands.runs",
    "serve": "codegen.app.commands.serve",
    "rlcoder": "codegen.app.commands.rlcoder",
    "complete": "codegen.app.commands.complete",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="itercode",
        description="Make code models better with their own output: sample candidate programs, "
        "run them in a sandbox, measure pass@k, train rerankers and policies, loop.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        if importlib.util.find_spec(module_name) is None:
            continue
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.add_argument("--verbose", action="store_true",
                       help="also show the engines' own log lines (vLLM's warnings and progress bars)")
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if args.verbose:
        os.environ["ITERCODE_VERBOSE"] = "1"  # read where engines start (codegen.samplers.vllm_engine)
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"itercode {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("itercode: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
