"""`itercode complete --repo DIR --file F --line N`: complete one line of any repository, RLCoder-style.

The generator (``--model``) and the retriever (``--retriever``) default to
those of a finished ``itercode loop rlcoder`` run (``--run``, default
runs/rlcoder). Without a retriever the blocks are BM25's; ``--retriever
copy_rule`` takes the block holding a near copy of the line before the cursor,
or none (no learning; the benchmark's copy_rule arm). Prints the
completed line, then the blocks that were in the prompt (``--json``: one
object with both).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from codegen.errors import UserError

NAMED_RETRIEVERS = ("bm25", "copy_rule")  # arms that need no trained retriever
HELP = "complete a line of a repository with retrieved cross-file blocks (a model from `itercode loop rlcoder`)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repo", required=True, metavar="DIR", help="the repository's root folder")
    p.add_argument("--file", required=True, metavar="F", help="the file to complete, relative to --repo")
    p.add_argument("--line", required=True, type=int, metavar="N",
                   help="the 1-based line to write: lines 1..N-1 are the context")
    p.add_argument("--run", default="runs/rlcoder", help="a finished rlcoder run whose generator and retriever "
                                                         "to use (default runs/rlcoder)")
    p.add_argument("--model", default=None, metavar="M", help="a generator directory instead of the run's")
    p.add_argument("--retriever", default=None, metavar="R",
                   help="a retriever directory instead of the run's; 'bm25' for BM25's blocks; 'copy_rule' "
                        "for the block holding a near copy of the line before the cursor, or none")
    p.add_argument("--top-k", type=int, default=2, help="blocks in the prompt at most (default 2)")
    p.add_argument("--no-stop", action="store_true", help="ignore the retriever's stop block")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _artifacts(args: argparse.Namespace) -> tuple[Path, Path | None]:
    # optional: the run's layout lives with the loop (train and retrieval extras)
    from loops.rlcoder import run_artifacts

    if args.model and args.retriever:
        return Path(args.model), _retriever_dir(args.retriever)
    try:
        model, retriever = run_artifacts(args.run)
    except UserError:
        if not args.model:
            raise UserError(f"no generator: --run {args.run!r} is not a finished rlcoder run; pass --model DIR "
                            "(a generator directory) or run `itercode loop rlcoder` first") from None
        model, retriever = Path(args.model), None
    model = Path(args.model) if args.model else model
    return model, _retriever_dir(args.retriever) if args.retriever else retriever


def _retriever_dir(name: str) -> Path | None:
    """``--retriever``'s directory, or None for a named arm that needs no trained retriever."""
    return None if name in NAMED_RETRIEVERS else Path(name)


def run(args: argparse.Namespace) -> int:
    # optional: the retrieval and train extras
    from codegen.repo.retriever import Retriever
    # optional: as above
    from codegen.repo.tasks import file_task
    # optional: as above
    from loops.rlcoder import Scorer, arm_blocks

    if args.top_k < 0:
        raise UserError(f"--top-k {args.top_k}: must be >= 0")
    model, retriever_dir = _artifacts(args)
    if not (model / "config.json").is_file():
        raise UserError(f"--model {str(model)!r} holds no model (config.json); give a generator directory")
    task = file_task(args.repo, args.file, args.line)
    scorer = Scorer(model)
    if retriever_dir is None:
        arm, retriever = (args.retriever if args.retriever in NAMED_RETRIEVERS else "bm25"), None
    else:
        arm, retriever = ("rlcoder_no_stop" if args.no_stop else "rlcoder"), Retriever.load(retriever_dir)
    blocks = arm_blocks(arm, task, retriever, None, args.top_k)
    prompt, n_block = scorer.builder.prompt(task, blocks)
    line = scorer.complete([prompt], args.max_new_tokens)[0]
    out = {"file": task.path, "line": args.line, "completion": line, "retrieval": arm,
           "retrieved_tokens": n_block, "blocks": [{"id": b["id"], "text": b["text"]} for b in blocks]}
    if args.json:
        print(json.dumps(out))
    else:
        print(line)
        for b in blocks:
            print(f"--- block {b['id']}")
            print(b["text"])
    return 0
