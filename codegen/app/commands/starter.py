"""`itercode starter`: build the round-0 model offline.

Trains a byte-level BPE tokenizer and a tiny Llama on the synthetic reference
split and saves both in HF format to ``--out``, loadable by transformers, vLLM
and TRL from that path (see `codegen.starter`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from codegen.errors import UserError
from codegen.hardware import training_threads
from codegen.starter import FULL, QUICK, build_starter

HELP = "train the starter model (tokenizer + tiny Llama) on the synthetic reference split; save it in HF format"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write the model to (replaced if it holds a model)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data-order seed (default 0): same seed, same weights")
    p.add_argument("--family-seed", type=int, default=0,
                   help="seed of the synthetic family whose reference split is trained on (default 0, the one synthetic:SPLIT loads)")
    p.add_argument("--quick", action="store_true", help="a much smaller, seconds-scale build (for tests and smoke runs)")
    p.add_argument("--steps", type=int, default=None, help="override the number of training steps")
    p.add_argument("--threads", type=threads_arg, default=None,
                   help="torch CPU threads, or auto: one per core idle when training starts (default 1: more train faster on free "
                        "cores, many times slower on shared ones, and another model where rounding differs; "
                        "a fixed N rebuilds bit for bit)")
    p.add_argument("--device", default="cpu", help="cpu (default; bit-reproducible) or cuda")


def threads_arg(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number of threads or auto") from None


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: exists and is not a directory; pass a directory path")
    if out.is_dir() and any(out.iterdir()) and not (out / "config.json").exists():
        raise UserError(f"--out {out}: a non-empty directory that holds no model; pass a new or a model directory")
    config = QUICK if args.quick else FULL
    if args.steps is not None:
        if args.steps < 1:
            raise UserError(f"--steps {args.steps}: must be at least 1")
        config = dataclasses.replace(config, steps=args.steps)
    if args.threads is not None and args.threads != "auto" and args.threads < 1:
        raise UserError(f"--threads {args.threads}: must be at least 1 (or auto)")
    path = build_starter(out, seed=args.seed, quick=args.quick, family_seed=args.family_seed, config=config,
                         device=args.device, threads=training_threads(args.threads))
    info = json.loads((path / "starter_info.json").read_text())
    print(f"starter model saved to {path}: {info['parameters']:,} parameters, "
          f"{info['config']['steps']} steps, final loss {info['final_loss']:.3f}, {info['train_seconds']:.0f} s")
    return 0
