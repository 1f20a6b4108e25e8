"""The GPU path in one short run: HF sampling and TRL training in bf16 on CUDA.

CI has no GPU, so this is checked by hand on a lent GPU machine:

    python benchmarks/gpu_check.py --out /tmp/gpu-check

It builds the quick starter model on the GPU, samples with the HF backend in
bf16 (and, for comparison, in fp32), then runs a few steps of each trainer
the loops use: the ITERTL policy trainer (TRL SFTTrainer), the reranker
trainer (TRL RewardTrainer), GRPO on the execution reward (TRL GRPOTrainer,
``num_iterations=2`` so the clipped objective acts) and DPO on (passing,
failing) pairs (TRL DPOTrainer). Each must pick bf16 on the GPU by itself
(codegen.hardware). GRPO generates with vLLM colocated on the GPU when vLLM
is importable (``--vllm auto``, the default; ``--vllm on`` makes its absence a
failure), else with transformers; the JSON line says which. It prints one
JSON line per check and exits non-zero if a check fails. On a machine
without CUDA it says so and exits 2.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path


def _report(name: str, ok: bool, **figures) -> bool:
    print(json.dumps({"check": name, "ok": ok, **figures}), flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check", help="scratch directory for the models")
    parser.add_argument("--prompts", type=int, default=32, help="held-out prompts to sample")
    parser.add_argument("--n", type=int, default=8, help="samples per prompt")
    parser.add_argument("--device", default="cuda", help="cuda (the point of this check) or cpu (a dry run of the script)")
    parser.add_argument("--vllm", choices=("auto", "on", "off"), default="auto",
                        help="GRPO generation by vLLM colocated on the GPU: auto (when vllm imports), on, off")
    parser.add_argument("--rl-steps", type=int, default=4, help="optimizer steps of the GRPO and DPO checks")
    args = parser.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; run it on a GPU machine", file=sys.stderr)
        return 2
    from codegen.hardware import trainer_precision
    from codegen.samplers import SamplingParams
    from codegen.samplers.hf_backend import HFSampler
    from codegen.starter import build_starter
    from codegen.synthetic import load_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    ok = _report("device", True, device=name, torch=torch.__version__,
                 precision=trainer_precision())

    t0 = time.monotonic()
    model = build_starter(out / "starter", seed=0, quick=True, device=args.device, progress=False)
    ok &= _report("starter_on_device", (model / "config.json").exists(), seconds=round(time.monotonic() - t0, 1))

    heldout = load_split("heldout")[: args.prompts]
    prompts = [p.prompt for p in heldout]
    greedy = SamplingParams(n=1, temperature=0.0, max_tokens=96, seed=0)
    texts = {}
    for dtype in ("bfloat16", "float32"):
        sampler = HFSampler(str(model), dtype=dtype, device=args.device, batch_size=256, seed=0)
        t0 = time.monotonic()
        outs = sampler.generate(prompts, SamplingParams(n=args.n, max_tokens=96, seed=0))
        seconds = time.monotonic() - t0
        flat = [c for row in outs for c in row]
        finite = all(c.mean_logprob is not None and math.isfinite(c.mean_logprob) for c in flat if c.num_tokens)
        texts[dtype] = [row[0].text for row in sampler.generate(prompts, greedy)]
        ok &= _report(f"hf_sampler_{dtype}", len(flat) == len(prompts) * args.n and finite,
                      param_dtype=str(next(sampler.model.parameters()).dtype),
                      samples=len(flat), samples_per_s=round(len(flat) / seconds, 1),
                      nonempty=sum(bool(c.text.strip()) for c in flat))
        sampler.close()
    agree = sum(a == b for a, b in zip(texts["bfloat16"], texts["float32"])) / len(prompts)
    _report("greedy_bf16_vs_fp32_agreement", True, share=round(agree, 3))

    # Policy: a few SFT steps on reference solutions through the loop's own trainer.
    from loops.config import ITERTLConfig
    from loops.trainers import train_sft

    reference = load_split("reference")[:64]
    rows = [{"prompt": p.prompt, "completion": p.canonical_solution} for p in reference]
    cfg = ITERTLConfig(batch_size=8, max_length=512, progress=False)
    t0 = time.monotonic()
    info = train_sft(str(model), rows, out / "sft", steps=10, cfg=cfg, learning_rate=5e-4, seed=0,
                     scratch=out / "sft-scratch")
    ok &= _report("sft_bf16", (out / "sft" / "config.json").exists() and math.isfinite(info["train_loss"]),
                  seconds=round(time.monotonic() - t0, 1), train_loss=info["train_loss"])

    # Reranker: a short RewardTrainer run on (canonical, broken) pairs.
    from rerankers.data import Pair
    from rerankers.train import TrainConfig, train_reranker

    pairs = [Pair(task_id=p.task_id, prompt=p.prompt, chosen=p.canonical_solution,
                  rejected="    return None\n") for p in reference]
    t0 = time.monotonic()
    result = train_reranker(pairs, str(model), out / "reranker",
                            TrainConfig(epochs=1, min_steps=0, batch_size=8, progress=False))
    ok &= _report("reward_model_bf16", result.path.exists(), seconds=round(time.monotonic() - t0, 1),
                  stats={k: v for k, v in result.stats.items() if isinstance(v, (int, float))})
    ok &= _grpo_check(str(model), reference, out, args)
    ok &= _dpo_check(str(model), reference, out, args)
    return 0 if ok else 1


def _vllm_colocate(choice: str, device: str) -> dict | None:
    """TRL's arguments for vLLM generation inside the trainer's process, or None for transformers."""
    if choice == "off" or device != "cuda":
        return None
    try:
        import vllm  # noqa: F401  (only whether it imports matters)
    except ImportError:
        if choice == "on":
            raise SystemExit("gpu_check: --vllm on, but vllm does not import here; install vllm or use --vllm auto")
        return None
    # Colocated vLLM joins a torch.distributed group of one (its external launcher):
    # a plain `python` run has no launcher's variables, so give them.
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29511"}.items():
        os.environ.setdefault(key, value)
    # A small share of the GPU: the policy, its optimizer and the reference live there too.
    return {"use_vllm": True, "vllm_mode": "colocate", "vllm_gpu_memory_utilization": 0.2,
            "vllm_enable_sleep_mode": False}


def _grpo_check(model: str, problems, out: Path, args) -> bool:
    """A few GRPO steps whose reward runs every completion against the hidden tests in the sandbox."""
    from codegen.execution_rewards import execution_reward
    from codegen.judging import Judge
    from codegen.samplers import HUMANEVAL_STOP
    from loops.trainers import RLMonitor, train_grpo

    colocate = _vllm_colocate(args.vllm, args.device)
    rows = [{"prompt": p.prompt, "task_id": p.task_id} for p in problems]
    t0 = time.monotonic()
    with Judge("process", 4, cache=False) as judge:
        reward = execution_reward("pass", judge, problems, stop=HUMANEVAL_STOP)
        summary = train_grpo(model, rows, out / "grpo", reward_funcs=[reward], steps=args.rl_steps,
                             scratch=out / "grpo-scratch", num_generations=8, prompts_per_step=4,
                             num_iterations=2, max_completion_length=96, seed=0, monitor=RLMonitor(),
                             threads=None, trl_args=colocate)
    rewards = summary["rewards"]
    return _report("grpo_bf16", (out / "grpo" / "config.json").exists() and bool(rewards)
                   and all(math.isfinite(r) for r in rewards),
                   generation="vllm-colocate" if colocate else "transformers",
                   seconds=round(time.monotonic() - t0, 1), rewards=[round(r, 3) for r in rewards],
                   completions=summary["completions"], train_loss=summary["train_loss"])


def _dpo_check(model: str, problems, out: Path, args) -> bool:
    """A few DPO steps on (canonical, broken) pairs against the starter as reference."""
    from loops.trainers import train_dpo

    pairs = [{"prompt": p.prompt, "chosen": p.canonical_solution, "rejected": "    return None\n"} for p in problems]
    t0 = time.monotonic()
    summary = train_dpo(model, pairs, out / "dpo", ref_model=model, steps=args.rl_steps, beta=0.1,
                        learning_rate=5e-5, seed=0, scratch=out / "dpo-scratch", threads=None)
    return _report("dpo_bf16", (out / "dpo" / "config.json").exists() and math.isfinite(summary["train_loss"]),
                   seconds=round(time.monotonic() - t0, 1), train_loss=summary["train_loss"],
                   reward_margin=summary.get("reward_margin"), reward_accuracy=summary.get("reward_accuracy"))


if __name__ == "__main__":
    sys.exit(main())
