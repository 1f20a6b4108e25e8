"""RLCoder against BM25 on repositories never trained on: the issue-16 figures.

    .venv/bin/python benchmarks/rlcoder.py --json [--eval-repos DIR] [--config configs/rlcoder.yaml] [key=value ...]
    .venv/bin/python benchmarks/rlcoder.py --tiny --repos DIR --json      # seconds: a smoke run, figures mean nothing

1. the whole `itercode loop rlcoder` run (resumed if its run directory holds
   one): corpus, tasks, the generator, the gate, the retriever's rounds, and
   the evaluation on the evaluation split;
2. with ``--eval-repos DIR``: every repository under DIR (a folder of unpacked
   projects the run never saw) is evaluated instead, with the run's generator
   and last retriever;
3. prints exact match and edit similarity (in %) of the first generated line
   for the arms ``infile`` (no retrieval), ``bm25`` (BM25's top-k),
   ``copy_rule`` (no learning: the block holding a near copy of the context's
   last line, else none), ``rlcoder``, ``rlcoder_no_stop`` and ``oracle`` (the candidate with the
   lowest target loss: the ceiling), the retrieved tokens per example, the
   gate (target loss with the best block, none, a random one), the issue's
   targets as met or missed, and the loop's time against its 45-minute target.

JSON (``--json``): ``{"arms": {ARM: {"em", "es", "retrieved_tokens"}}, "gate": {...},
"examples": N, "targets": {...}, "gate_train": {...}, "loop_seconds": s, ...}``.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from codegen.errors import UserError  # noqa: E402
from codegen.repo.corpus import check_unseen, repos_in  # noqa: E402
from codegen.repo.retriever import Retriever  # noqa: E402
from codegen.repo.tasks import make_tasks  # noqa: E402
from loops.rlcoder import Scorer, evaluate_arms, run_artifacts, run_rlcoder, targets  # noqa: E402
from loops.rlcoder_config import TINY_OVERRIDES, load_rlcoder_config  # noqa: E402
from loops.rundir import RunDir  # noqa: E402

LOOP_TARGET_S = 45 * 60


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default=None, help="the loop's YAML config (default: configs/rlcoder.yaml)")
    p.add_argument("--tiny", action="store_true", help="seconds-scale settings (smoke runs and tests)")
    p.add_argument("--repos", default=None, metavar="DIR",
                   help="a folder of repositories instead of the pinned corpus (split by a hash of each name)")
    p.add_argument("--eval-repos", default=None, metavar="DIR",
                   help="evaluate on every repository under DIR (unseen projects) instead of the evaluation split")
    p.add_argument("--json", action="store_true", help="print one JSON object (else a table)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. name=bench rounds=2")
    return p.parse_args(argv)


def loop_seconds(run_root: Path) -> float:
    """Wall time of the run's stages as recorded (started -> finished, last attempt), summed."""
    total = 0.0
    for entry in RunDir(run_root).state["stages"].values():
        if entry.get("status") == "done" and entry.get("started_at") and entry.get("finished_at"):
            total += (dt.datetime.fromisoformat(entry["finished_at"])
                      - dt.datetime.fromisoformat(entry["started_at"])).total_seconds()
    return total


def figures(args) -> dict:
    """Run (or resume) the loop and evaluate: the JSON the benchmark prints."""
    config = args.config or (None if args.tiny else str(ROOT / "configs" / "rlcoder.yaml"))
    overrides = (TINY_OVERRIDES if args.tiny else []) + (["name=bench-rlcoder-tiny"] if args.tiny else [])
    if args.repos:
        overrides.append(f"repos={args.repos}")
    overrides += args.overrides
    cfg = load_rlcoder_config(config, overrides)
    log = (lambda m: print(f"[bench] {m}", file=sys.stderr, flush=True)) if cfg.progress else None
    result = run_rlcoder(cfg, log=log)
    gate_train = json.loads((cfg.run_dir / "round-0" / "gate" / "gate.json").read_text())
    if args.eval_repos:
        repos = repos_in(args.eval_repos)
        trained = json.loads((cfg.run_dir / "round-0" / "corpus" / "repos.json").read_text())
        check_unseen(repos, [Path(p) for p in trained["generator"] + trained["retriever"]])
        tasks = make_tasks(repos, cfg.eval_tasks_per_repo, seed=cfg.seed * 10 + 2, **cfg.task_options())
        model, retriever = run_artifacts(cfg.run_dir)
        result, _ = evaluate_arms(Scorer(model, cfg.device), Retriever.load(retriever), tasks, top_k=cfg.top_k,
                                  max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, log=log)
        result["targets"] = targets(result)
        result["eval_repos"] = [str(r) for r in repos]
    seconds = loop_seconds(cfg.run_dir)
    return {**result, "gate_train": gate_train, "loop_seconds": round(seconds, 1),
            "loop_within_45_min": "met" if seconds <= LOOP_TARGET_S else "missed",
            "run": str(cfg.run_dir), "tiny": args.tiny, "machine": f"{platform.machine()}, {platform.node()}"}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        out = figures(args)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    seconds = out["loop_seconds"]
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"{'arm':<16} {'EM %':>6} {'ES %':>6} {'retrieved tokens':>16}   ({out['examples']} examples)")
        for arm, r in out["arms"].items():
            print(f"{arm:<16} {r['em']:>6.1f} {r['es']:>6.1f} {r['retrieved_tokens']:>16.1f}")
        g = out["gate"]
        print(f"gate (evaluation, nats): best {g['best']:.3f}  none {g['none']:.3f}  random {g['random']:.3f}")
        print("targets: " + ", ".join(f"{k} {v}" for k, v in out["targets"].items())
              + f", loop {seconds / 60:.1f} min ({out['loop_within_45_min']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
