"""Policy methods at one budget of sampled completions, one starter, over seeds.

    .venv/bin/python benchmarks/policy.py --starter PATH --seeds 3 --budget 4800 --json policy.json \\
        [--methods itertl,grpo,rloo,dpo,rewardranker] [--runs-dir runs/policy] [--set METHOD:key=value ...]

Each method runs from its own config file (configs/demo.yaml for ITERTL,
configs/grpo.yaml for GRPO and RLOO, configs/dpo.yaml for DPO, configs/rewardranker.yaml: the settings
chosen on validation), with the starter checkpoint as its base model, the
synthetic family's practice pool as its unlabeled problems, and as many
sampled completions as ``--budget`` (`loops.policy_compare`). The table and
the JSON give, per method, pass@1 and pass@10 on the fresh test split
(held-out beside it), reference pass@1 (forgetting), completions sampled and
wall time, mean ± sd over seeds, then the targets as MET or MISSED. Every run
directory resumes, so a second invocation only prints.

Without ``--starter`` the starter is built once into ``<runs-dir>/starter``
(codegen.starter, several minutes).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _report import emit_result  # this folder is on sys.path when run as a script


def _sets(values: list[str]) -> dict[str, list[str]]:
    """``--set grpo:learning_rate=5e-5`` -> {"grpo": ["learning_rate=5e-5"]}."""
    out: dict[str, list[str]] = {}
    for value in values:
        method, sep, override = value.partition(":")
        if not sep or "=" not in override:
            raise SystemExit(f"--set {value!r}: write METHOD:key=value, e.g. grpo:learning_rate=5e-5")
        out.setdefault(method, []).append(override)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--starter", help="the starter checkpoint every method starts from (default: build one)")
    parser.add_argument("--methods", default="itertl,grpo,rloo,dpo,rewardranker", help="comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per method (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--budget", type=int, default=4800,
                        help="sampled completions each method learns from (default 4800: ITERTL's 3 rounds x "
                             "200 problems x 8 samples)")
    parser.add_argument("--runs-dir", default="runs/policy", help="one resumable run directory per method and seed")
    parser.add_argument("--set", action="append", default=[], metavar="METHOD:key=value",
                        help="override a method's config key (repeatable), e.g. grpo:sampler=hf")
    parser.add_argument("--json", metavar="FILE", help="also write the summary as JSON to FILE")
    args = parser.parse_args(argv)

    from codegen.errors import UserError
    from loops.policy_compare import format_summary, methods, run_method, summarize

    try:
        known = methods()
        chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
        unknown = [m for m in chosen if m not in known]
        if unknown or not chosen:
            raise UserError(f"--methods: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(known)}")
        if args.seeds < 1:
            raise UserError(f"--seeds must be >= 1, got {args.seeds}")
        sets = _sets(args.set)
        starter = args.starter or _build_starter(Path(args.runs_dir) / "starter")
        results = [arm for name in chosen for i in range(args.seeds)  # one result per arm (RewardRanker: two)
                   for arm in run_method(name, known[name], seed=args.seed + i, budget=args.budget, starter=starter,
                                         runs_dir=args.runs_dir, overrides=sets.get(name, []))]
        summary = summarize(results, args.budget)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print()
    print(format_summary(summary))
    emit_result(summary, args.json, "summary")
    return 0


def _build_starter(out: Path) -> str:
    """The starter, built once (a finished build is reused)."""
    from codegen.starter import build_starter

    if (out / "config.json").exists():
        return str(out)
    return str(build_starter(out, seed=0))


if __name__ == "__main__":
    sys.exit(main())
