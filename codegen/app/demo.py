"""`make demo`: a model learning from its own output, end to end, on 2 CPU cores.

1. builds the starter model (a tiny Llama trained on the synthetic family's
   reference split; nothing is downloaded),
2. runs 3 rounds of ITERTL (configs/demo.yaml): sample programs for each
   unlabeled problem with vLLM, run them in the sandbox, keep the passing ones,
   fine-tune on them plus a replay share of reference solutions with TRL, and
   evaluate on the validation split every round,
3. scores the test splits (fresh problems of other seeds, and the held-out
   split) at round 0 and the last round: only reported, never tuned on,
4. prints the per-round tables (validation pass@1/5/10, forgetting probes,
   test splits, what each round learned from), the headline (the fresh test
   split first) and writes the plot, runs/demo/plot.png.

The run directory resumes: stop it at any time and run `make demo` again.
``--fresh`` starts over. Any config key can be overridden: ``python -m
codegen.app.demo rounds=1 sampler=hf``.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from codegen.errors import UserError
from loops.config import load_config
from loops.itertl import run_itertl


def headline(rows: list[dict], splits: list[str], kmax: int) -> list[str]:
    """One line per split: pass@1 and pass@kmax at round 0 and the last round that measured it."""
    lines = []
    for split in splits:
        measured = [r for r in rows if r.get(f"{split}_pass@1") is not None]
        if not measured:
            continue
        first, last = measured[0], measured[-1]
        kind = "validation" if split == "validation" else "test"
        parts = []
        for k in sorted({1, kmax}):
            a, b = first.get(f"{split}_pass@{k}"), last.get(f"{split}_pass@{k}")
            if a is not None and b is not None:
                parts.append(f"pass@{k} {100 * a:.1f}% -> {100 * b:.1f}% ({100 * (b - a):+.1f})")
        lines.append(f"{split} ({kind}), round {first['round']} -> {last['round']}: " + ", ".join(parts))
    return lines


DEMO_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m codegen.app.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(DEMO_CONFIG), help="the loop's YAML config (default: configs/demo.yaml)")
    parser.add_argument("--fresh", action="store_true", help="delete the demo's run directory first and start over")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. rounds=1")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        if args.fresh and cfg.run_dir.exists():
            shutil.rmtree(cfg.run_dir)
        resumed = (cfg.run_dir / "state.json").exists()
        started = time.monotonic()
        run = run_itertl(cfg)
    except UserError as e:
        print(f"demo: error: {e}", file=sys.stderr)
        return 2
    wall = time.monotonic() - started
    print()
    for line in headline(run.metrics(), [*cfg.test_names, "validation"], max(cfg.eval_ks)):
        print(line)
    print(f"wall time: {wall / 60:.1f} min" + (" (resumed: finished stages were not redone)" if resumed else ""))
    print(f"table again: itercode runs show {run.root}; plot: {run.root / 'plot.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
