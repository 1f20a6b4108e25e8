"""Sampling throughput: vLLM against HF transformers generate, in one run.

    .venv/bin/python benchmarks/sampling_throughput.py [--model PATH] [--prompts 16] [--n 16] [--json]

Both backends load the same model, get the same prompts (the first --prompts
held-out synthetic problems) and the same sampling settings (n=16,
temperature 0.8, top-p 0.95, HumanEval stop strings), and run one after the
other, --repeats times alternating, so machine load hits both alike. Timings
exclude engine start-up (reported apart) and a short warm-up call. Prints
samples/s and generated tokens/s for each, the vLLM/HF ratios of this one
run, the load average before and after (figures taken under load do not
carry over), and the job size above which vLLM's faster sampling pays for
its slower start, next to the rule `codegen.samplers.default_backend` uses.
Without --model it uses the full starter model, built once into
.itercode-cache/bench/starter-full (minutes) if missing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from _serve_common import model_path  # noqa: E402 - this folder is on sys.path when run as a script
from codegen.samplers import SamplingParams  # noqa: E402


def timed_generate(sampler, prompts, params) -> dict:
    """One timed generate call: samples, generated tokens, seconds."""
    start = time.perf_counter()
    rows = sampler.generate(prompts, params)
    seconds = time.perf_counter() - start
    return {
        "samples": sum(len(r) for r in rows),
        "tokens": sum(c.num_tokens for r in rows for c in r),
        "seconds": seconds,
    }


def summarize(name: str, runs: list[dict], load_s: float) -> dict:
    """Median rates over the repeats."""
    return {
        "backend": name,
        "load_s": round(load_s, 2),
        "samples": runs[0]["samples"],
        "tokens_per_run": [r["tokens"] for r in runs],
        "seconds_per_run": [round(r["seconds"], 3) for r in runs],
        "samples_per_s": statistics.median(r["samples"] / r["seconds"] for r in runs),
        "tokens_per_s": statistics.median(r["tokens"] / r["seconds"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model path (default: the full starter model, built once)")
    p.add_argument("--quick-model", action="store_true", help="without --model: use the quick starter instead of the full one")
    p.add_argument("--problems", default="synthetic:heldout")
    p.add_argument("--prompts", type=int, default=16, help="number of prompts (default 16)")
    p.add_argument("--n", type=int, default=16, help="samples per prompt (default 16)")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature)
    p.add_argument("--top-p", type=float, default=SamplingParams.top_p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timed runs per backend, alternating (default 2)")
    p.add_argument("--hf-batch-size", type=int, default=256, help="HF sequences per generate call (default 256)")
    p.add_argument("--kv-cache-gib", type=int, default=2, help="vLLM CPU KV cache in GiB (default 2)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = p.parse_args(argv)

    from codegen.datasets import load_problems
    from codegen.samplers import VLLM_MIN_SAMPLES_ON_CPU, make_sampler

    load_before = os.getloadavg()
    model = model_path(args.model, full=not args.quick_model)
    prompts = [pr.prompt for pr in load_problems(args.problems)[: args.prompts]]
    params = SamplingParams(n=args.n, temperature=args.temperature, top_p=args.top_p,
                            max_tokens=args.max_tokens, seed=args.seed)
    warmup = SamplingParams(n=2, temperature=args.temperature, max_tokens=8, seed=args.seed)

    t = time.perf_counter()
    hf = make_sampler("hf", model, batch_size=args.hf_batch_size, seed=args.seed)
    hf_load = time.perf_counter() - t
    t = time.perf_counter()
    vllm = make_sampler("vllm", model, seed=args.seed, kv_cache_gib=args.kv_cache_gib)
    vllm_load = time.perf_counter() - t
    try:
        hf.generate(prompts[:2], warmup)
        vllm.generate(prompts[:2], warmup)
        hf_runs, vllm_runs = [], []
        for i in range(args.repeats):
            print(f"repeat {i + 1}/{args.repeats}: hf...", file=sys.stderr, flush=True)
            hf_runs.append(timed_generate(hf, prompts, params))
            print(f"repeat {i + 1}/{args.repeats}: vllm...", file=sys.stderr, flush=True)
            vllm_runs.append(timed_generate(vllm, prompts, params))
    finally:
        vllm.close()
        hf.close()

    h, v = summarize("hf", hf_runs, hf_load), summarize("vllm", vllm_runs, vllm_load)
    report = {
        "model": model,
        "problems": args.problems,
        "prompts": len(prompts),
        "n": args.n,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "repeats": args.repeats,
        "hf_batch_size": args.hf_batch_size,
        "cpu_count": os.cpu_count(),
        "results": [h, v],
        "ratio_samples_per_s": v["samples_per_s"] / h["samples_per_s"],
        "ratio_tokens_per_s": v["tokens_per_s"] / h["tokens_per_s"],
        "load_average_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "break_even_samples": break_even(h, v),
        "rule_vllm_from_samples_on_cpu": VLLM_MIN_SAMPLES_ON_CPU,
    }
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"model {model}; {len(prompts)} prompts x n={args.n}, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, top_p={args.top_p}; median of {args.repeats} runs each")
    print(f"{'backend':8} {'load s':>7} {'samples':>8} {'samples/s':>10} {'tokens/s':>10}  seconds per run")
    for r in (h, v):
        print(f"{r['backend']:8} {r['load_s']:7.1f} {r['samples']:8d} {r['samples_per_s']:10.1f} "
              f"{r['tokens_per_s']:10.0f}  {r['seconds_per_run']}")
    print(f"vLLM / HF in this run: {report['ratio_samples_per_s']:.2f}x samples/s, "
          f"{report['ratio_tokens_per_s']:.2f}x tokens/s; load average {report['load_average_before_after'][0]} before, "
          f"{report['load_average_before_after'][1]} after, on {os.cpu_count()} CPUs")
    even = report["break_even_samples"]
    print("HF samples at least as fast as vLLM in this run: vLLM never pays for its start-up" if even is None
          else f"start-up plus sampling is shorter with vLLM from about {even:.0f} samples on; "
               f"the default rule picks vLLM on the CPU from {VLLM_MIN_SAMPLES_ON_CPU} samples")
    return 0


def break_even(hf: dict, vllm: dict) -> float | None:
    """Samples from which vLLM's start-up plus sampling takes less time than HF's (None: never)."""
    saved_per_sample = 1 / hf["samples_per_s"] - 1 / vllm["samples_per_s"]
    if saved_per_sample <= 0:
        return None
    return max(0.0, (vllm["load_s"] - hf["load_s"]) / saved_per_sample)


if __name__ == "__main__":
    sys.exit(main())
