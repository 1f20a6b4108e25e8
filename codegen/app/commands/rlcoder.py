"""`itercode rlcoder fetch|tasks`: the RLCoder corpus and its tasks, outside a loop run.

``fetch`` downloads every pin of a corpus file once (``pip download --no-deps``)
and unpacks it into the cache; ``tasks`` writes RLCoder-style completion tasks
of one split (or of any ``--repos DIR``) as JSONL, to look at them. The whole
pipeline is ``itercode loop rlcoder``; one completion is ``itercode complete``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from codegen.io import write_jsonl_atomic
from codegen.repo.corpus import SPLITS, default_cache, fetch_corpus, load_corpus_spec, repos_in
from codegen.repo.tasks import make_tasks

HELP = "the RLCoder corpus: `rlcoder fetch` downloads the pinned repositories, `rlcoder tasks` writes tasks"
DEFAULT_CORPUS = "configs/rlcoder_corpus.yaml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="rlcoder_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download and unpack every pinned repository of a corpus file")
    fetch.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"corpus YAML (default {DEFAULT_CORPUS})")
    fetch.add_argument("--cache", default=None, help=f"where to unpack (default {default_cache()})")
    tasks = sub.add_parser("tasks", help="write completion tasks of one split (or of --repos DIR) as JSONL")
    tasks.add_argument("--corpus", default=DEFAULT_CORPUS, help=f"corpus YAML (default {DEFAULT_CORPUS})")
    tasks.add_argument("--cache", default=None, help="the corpus cache (default as for fetch)")
    tasks.add_argument("--repos", default=None, metavar="DIR", help="a folder of repositories instead of the corpus")
    tasks.add_argument("--split", choices=SPLITS, default="evaluation")
    tasks.add_argument("--per-repo", type=int, default=10)
    tasks.add_argument("--seed", type=int, default=0)
    tasks.add_argument("--out", required=True, help="JSONL file to write")


def run(args: argparse.Namespace) -> int:
    if args.rlcoder_command == "fetch":
        spec = load_corpus_spec(args.corpus)
        repos = fetch_corpus(spec, args.cache, progress=lambda m: print(m, file=sys.stderr))
        for split, paths in repos.items():
            print(f"{split}: {len(paths)} repositories")
        print(f"cache: {Path(args.cache) if args.cache else default_cache()}")
        return 0
    if args.repos:
        repos = repos_in(args.repos)
    else:
        repos = fetch_corpus(load_corpus_spec(args.corpus), args.cache)[args.split]
    tasks = make_tasks(repos, args.per_repo, args.seed)
    write_jsonl_atomic(args.out, [t.to_dict() for t in tasks])
    print(f"{len(tasks)} tasks from {len(repos)} repositories -> {args.out}")
    return 0
