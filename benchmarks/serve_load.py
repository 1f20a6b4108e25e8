"""Load on the reranked server: 32 concurrent clients for 60 s on loopback.

    .venv/bin/python benchmarks/serve_load.py [--model PATH] [--backend vllm|hf] [--clients 32]
        [--duration 60] [--n-candidates 4] [--max-tokens 64] [--no-peer] [--peer-stock] [--json]

Each client sends /v1/completions requests one after another (a held-out
synthetic prompt each time) until the time is up; the load is bounded: at most
``--clients`` requests are in flight. Requirement: zero 5xx and zero
connection errors (429 is allowed: that is the server saying "later"). The
table gives requests/s (answered with 200), p50 and p99 latency.

The peer, in the same run, is vLLM's own OpenAI server (`vllm serve`) on the
same model with the same generation work per request (``n`` = our
``n_candidates``, same max_tokens, temperature and stop, the sampled token's
log-prob that itercode's ranking needs, and on the CPU the whole-prefill
scheduling itercode's engine uses), which returns the candidates without
scoring or choosing; the ratio shows what reranking and the extra bookkeeping
cost. --peer-stock runs the peer with vLLM's defaults and no log-probs
instead (then the ratio also holds those differences). Without --model the
quick starter model is built once into .itercode-cache/bench/.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve_common import ITERCODE, Served, model_path, percentile  # noqa: E402
from codegen.samplers import LOCAL_BACKENDS, SamplingParams  # noqa: E402


async def load(base: str, body_for, clients: int, duration_s: float, timeout_s: float) -> dict:
    """``clients`` loops posting to ``base``/v1/completions for ``duration_s``; statuses and latencies."""
    import httpx

    statuses: Counter = Counter()
    latencies: list[float] = []
    errors: list[str] = []
    stop_at = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:

        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    r = await client.post("/v1/completions", json=body_for(i))
                    statuses[r.status_code] += 1
                    if r.status_code == 200:
                        latencies.append(time.monotonic() - t0)
                    elif r.status_code == 429:
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    elif len(errors) < 5:  # 4xx other than 429, and 5xx: keep the first few bodies
                        errors.append(f"{r.status_code}: {r.text[:300]}")
                except httpx.HTTPError as e:
                    statuses["conn_error"] += 1
                    if len(errors) < 5:
                        errors.append(f"{type(e).__name__}: {e}")
                i += clients

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        wall = time.monotonic() - t0
    ok = statuses.get(200, 0)
    return {
        "requests": sum(statuses.values()), "ok": ok, "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)},
        "wall_s": round(wall, 2), "rps": round(ok / wall, 3), "p50_s": round(percentile(latencies, 50), 3),
        "p99_s": round(percentile(latencies, 99), 3),
        "five_xx": sum(v for k, v in statuses.items() if isinstance(k, int) and k >= 500),
        "conn_errors": statuses.get("conn_error", 0), "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: the quick starter, built once)")
    p.add_argument("--full-starter", action="store_true", help="without --model, build/use the full-size starter")
    p.add_argument("--backend", default=LOCAL_BACKENDS[0], choices=LOCAL_BACKENDS)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--n-candidates", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature)
    p.add_argument("--timeout", type=float, default=120.0, help="client timeout and the server's --request-timeout")
    p.add_argument("--no-peer", action="store_true", help="skip the `vllm serve` peer")
    p.add_argument("--peer-stock", action="store_true",
                   help="peer with vLLM's default scheduling and no log-probs (not the same generation work)")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = p.parse_args(argv)

    from codegen.samplers import HUMANEVAL_STOP
    from codegen.synthetic import load_split

    model = model_path(args.model, args.full_starter)
    prompts = [pr.prompt for pr in load_split("heldout")]
    # OpenAI (and `vllm serve`) take at most 4 stop sequences: both servers get the same 4.
    gen = {"max_tokens": args.max_tokens, "temperature": args.temperature, "stop": HUMANEVAL_STOP[:4]}

    def ours(i: int) -> dict:
        return {"model": "served", "prompt": prompts[i % len(prompts)], "n_candidates": args.n_candidates, **gen}

    def peer(i: int) -> dict:
        body = {"model": "served", "prompt": prompts[i % len(prompts)], "n": args.n_candidates, **gen}
        return body if args.peer_stock else {**body, "logprobs": 0}

    setting = (f"{args.clients} clients x {args.duration:g} s, {args.n_candidates} candidates x {args.max_tokens} tokens, "
               f"T={args.temperature}, model={model}, backend={args.backend}, "
               f"peer={'stock vLLM settings' if args.peer_stock else 'same generation work'}")
    print(f"serve_load: {setting}", flush=True)
    results = {}
    cmd = [ITERCODE, "serve", "--model", model, "--served-model-name", "served", "--backend", args.backend,
           "--n-candidates", str(args.n_candidates), "--request-timeout", str(args.timeout), "--log-level", "warning"]
    with Served(cmd, label="itercode") as s:
        print(f"itercode serve ready in {s.startup_s:.0f} s; loading...", flush=True)
        results["itercode serve"] = asyncio.run(load(s.base, ours, args.clients, args.duration, args.timeout))
    if not args.no_peer:
        peer_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name",
                    "served", "--host", "127.0.0.1", "--dtype", "float32", "--seed", "0"]
        if not args.peer_stock:
            peer_cmd += peer_scheduling_flags(model)
        with Served(peer_cmd, label="vllm-serve") as s:
            print(f"vllm serve ready in {s.startup_s:.0f} s; loading...", flush=True)
            results["vllm serve (peer, no rerank)"] = asyncio.run(load(s.base, peer, args.clients, args.duration, args.timeout))

    print()
    print(f"{'server':30s} {'requests':>8s} {'200':>6s} {'429':>5s} {'5xx':>5s} {'conn err':>8s} {'req/s':>8s} {'p50 s':>7s} {'p99 s':>7s}")
    for name, r in results.items():
        print(f"{name:30s} {r['requests']:8d} {r['ok']:6d} {r['statuses'].get('429', 0):5d} {r['five_xx']:5d} "
              f"{r['conn_errors']:8d} {r['rps']:8.2f} {r['p50_s']:7.2f} {r['p99_s']:7.2f}")
    ours_r = results["itercode serve"]
    if len(results) == 2:
        peer_r = results["vllm serve (peer, no rerank)"]
        ratio = ours_r["rps"] / peer_r["rps"] if peer_r["rps"] else float("nan")
        work = "vLLM's defaults, no log-probs" if args.peer_stock else "the same generation work per request"
        print(f"\nthroughput ratio itercode/vllm-serve: {ratio:.2f} (peer: {work})")
        results["ratio_rps"] = round(ratio, 3)
    for name, r in results.items():
        if isinstance(r, dict) and r.get("errors"):
            print(f"{name} errors (first few): {r['errors']}")
    results["setting"] = setting
    if args.json:
        print(json.dumps(results, indent=2))
    failed = ours_r["five_xx"] or ours_r["conn_errors"] or not ours_r["ok"]
    print("\nPASS: zero 5xx, zero connection errors" if not failed else "\nFAIL: 5xx or connection errors (or nothing answered)")
    peer_r = results.get("vllm serve (peer, no rerank)")
    if peer_r is not None and not peer_r["ok"]:
        print("FAIL: the peer answered no request, so there is no comparison (its errors are above)")
        return 1
    return 1 if failed else 0


def peer_scheduling_flags(model: str) -> list[str]:
    """`vllm serve` flags for the scheduling itercode's engine uses here (whole prefills on the CPU)."""
    import torch

    from codegen.samplers.vllm_engine import cpu_scheduling_options

    if torch.cuda.is_available():
        return []
    options = cpu_scheduling_options(model, None, {})
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(options["max_num_batched_tokens"])]


if __name__ == "__main__":
    sys.exit(main())
