"""ITERTL against its non-iterative baseline, from the same starter model.

    .venv/bin/python benchmarks/itertl.py --config configs/demo.yaml [key=value ...]

1. Runs (or resumes) the ITERTL loop: round 0 = the base model, then `rounds`
   rounds of sample -> execute -> select -> train -> evaluate.
2. Trains the round-0 model once on the reference solutions alone for the same
   total number of optimizer steps (rounds * train_steps), and evaluates it the
   same way (held-out split, eval_n samples per problem, same temperature).
3. Prints the per-round table and the comparison.

Both runs keep resumable directories (runs/<name>, runs/<name>-baseline), so a
second invocation only prints.
"""
from __future__ import annotations

import argparse
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args(argv)

    from codegen.errors import UserError
    from loops.baseline import baseline_for_run
    from loops.config import load_config
    from loops.itertl import run_itertl
    from loops.table import format_table, heldout_ks

    try:
        cfg = load_config(args.config, args.overrides)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    run = run_itertl(cfg)
    loop_s = time.monotonic() - t0
    t1 = time.monotonic()
    base = baseline_for_run(cfg)
    base_s = time.monotonic() - t1

    rows = run.metrics()
    print()
    print(format_table(rows, title=f"ITERTL per round ({cfg.name}; pass rates in %, n={cfg.eval_n}, "
                                   f"T={cfg.eval_temperature}, sampler={cfg.sampler}, executor={cfg.executor})"))
    last = max(rows, key=lambda r: r["round"])
    first = min(rows, key=lambda r: r["round"])
    print()
    print(f"{'held-out':<46}" + "".join(f"{f'pass@{k}':>9}" for k in heldout_ks(rows)))
    for label, row in [("round 0 (base model)", first),
                       (f"non-iterative: {cfg.rounds * cfg.train_steps} steps on reference only", base),
                       (f"ITERTL: {last['round']} rounds x {cfg.train_steps} steps", last)]:
        print(f"{label:<46}" + "".join(f"{100 * row.get(f'heldout_pass@{k}', float('nan')):>9.1f}"
                                       for k in heldout_ks(rows)))
    gain = 100 * (last["heldout_pass@1"] - first["heldout_pass@1"])
    margin = 100 * (last["heldout_pass@1"] - base["heldout_pass@1"])
    print(f"\nITERTL round 0 -> {last['round']}: {gain:+.1f} points held-out pass@1; "
          f"vs the non-iterative baseline: {margin:+.1f} points")
    print(f"wall time: loop {loop_s:.0f}s (this invocation; a resumed run skips finished stages), baseline {base_s:.0f}s")
    print(f"plot: {run.root / 'plot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
