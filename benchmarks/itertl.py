"""ITERTL against its non-iterative baseline, from the same starter model, over seeds.

    .venv/bin/python benchmarks/itertl.py --config configs/demo.yaml --seeds 3 --json itertl.json [key=value ...]

For each seed (``seed``, ``seed + 1``, ...; the sampling and training randomness):

1. runs (or resumes) the ITERTL loop: round 0 = the base model, then `rounds`
   rounds of sample -> execute -> select -> train -> evaluate; the test
   splits are scored at round 0 and the last round;
2. trains the round-0 model once on the reference solutions alone for the same
   total number of optimizer steps (rounds * train_steps), and scores it the
   same way (validation and test splits, eval_n samples per problem, same
   temperature).

The starter is built once, by the first seed's run (`runs/<name>`, the
demo's own run with configs/demo.yaml); the other seeds (`runs/<name>-seed<S>`)
start from it. Then it prints the first seed's per-round tables and the
summary: pass@1 and pass@10 per test split and on validation, mean ± sd over
seeds, for the starter, the baseline and ITERTL (`loops.seeds`); ``--json``
writes the same figures as JSON. Every run directory resumes, so a second
invocation only prints.
"""
from __future__ import annotations

import argparse
import sys
import time

from _report import emit_result  # this folder is on sys.path when run as a script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="loop seeds, one starter (default 3)")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    from codegen.errors import UserError
    from loops.config import load_config
    from loops.seeds import format_summary, run_seeds, summarize
    from loops.table import format_table

    try:
        cfg = load_config(args.config, args.overrides)
        t0 = time.monotonic()
        results = run_seeds(cfg, args.seeds)
        summary = summarize(results, cfg)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    first = results[0]
    print()
    print(format_table(first["rows"], title=f"ITERTL per round, seed {first['seed']} ({cfg.name}; pass rates in %, "
                                            f"n={cfg.eval_n}, T={cfg.eval_temperature}, sampler={cfg.sampler}, "
                                            f"executor={cfg.executor})"))
    print()
    print(format_summary(summary, cfg, results))
    print(f"\nwall time of this invocation: {time.monotonic() - t0:.0f}s (finished stages of earlier runs are skipped)")
    emit_result(summary, args.json, "summary")
    return 0


if __name__ == "__main__":
    sys.exit(main())
