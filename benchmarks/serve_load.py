"""Load on the reranked server: 32 concurrent clients for 60 s on loopback.

    .venv/bin/python benchmarks/serve_load.py [--model PATH] [--backend vllm|hf] [--clients 32]
        [--duration 60] [--windows 6] [--n-candidates 4] [--max-tokens 64] [--no-peer] [--peer-stock] [--json]

Each client sends /v1/completions requests one after another (a held-out
synthetic prompt each time) until the time is up; the load is bounded: at most
``--clients`` requests are in flight. Requirement: zero 5xx and zero
connection errors (429 is allowed: that is the server saying "later"). The
table gives requests/s (answered with 200), p50 and p99 latency.

The peer, in the same run, is vLLM's own OpenAI server (`vllm serve`) on the
same model with the same generation work per request (``n`` = our
``n_candidates``, same max_tokens, temperature, top_p and stop, the sampled
token's log-prob that itercode's ranking needs, and on the CPU the
whole-prefill scheduling itercode's engine uses), which returns the candidates
without scoring or choosing; the ratio shows what reranking and the extra
bookkeeping cost. --peer-stock runs the peer with vLLM's defaults and no
log-probs instead (then the ratio also holds those differences). Without
--model the quick starter model is built once into .itercode-cache/bench/.

Both servers run side by side and the load alternates between them in
``--windows`` windows of duration / windows seconds each (A B B A ...; a few
seconds of unmeasured warm-up first): on a shared machine the other jobs'
load changes by the minute (and vLLM's CPU worker pins itself to the same
core in every engine), so two back-to-back minutes differ by more than the
servers do; alternating windows give both the same conditions. Beside req/s
the table gives completion tokens per request (the same work must give about
the same), and the CPU milliseconds each server's processes spent per
answered request, split into the API process (HTTP, requests, vLLM's output
processing) and the engine's processes: that split does not depend on the
machine's load the way throughput does. itercode's own per-stage wall times
(`itercode_request_stage_seconds` from its /metrics) close the report.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve_common import ITERCODE, Served, model_path, percentile  # noqa: E402
from codegen.app.server.metrics import STAGES  # noqa: E402
from codegen.samplers import LOCAL_BACKENDS, SamplingParams  # noqa: E402


@dataclass
class Tally:
    """What the windows of load on one server added up to."""

    statuses: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    tokens: int = 0  # completion tokens over all candidates (usage.completion_tokens)
    errors: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: Counter = field(default_factory=Counter)  # "api" (the server process) and "engine" (the rest of its group)

    def summary(self) -> dict:
        ok = self.statuses.get(200, 0)
        per_req = (lambda x: round(1000 * x / ok, 1)) if ok else (lambda x: float("nan"))
        return {
            "requests": sum(self.statuses.values()), "ok": ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items(), key=str)},
            "wall_s": round(self.wall_s, 2), "rps": round(ok / self.wall_s, 3) if self.wall_s else 0.0,
            "p50_s": round(percentile(self.latencies, 50), 3), "p99_s": round(percentile(self.latencies, 99), 3),
            "tokens_per_request": round(self.tokens / ok, 1) if ok else float("nan"),
            "cpu_ms_per_request": {"api": per_req(self.cpu_s["api"]), "engine": per_req(self.cpu_s["engine"])},
            "five_xx": sum(v for k, v in self.statuses.items() if isinstance(k, int) and k >= 500),
            "conn_errors": self.statuses.get("conn_error", 0), "errors": self.errors,
        }


async def load(base: str, body_for, clients: int, duration_s: float, timeout_s: float, tally: Tally) -> None:
    """``clients`` loops posting to ``base``/v1/completions for ``duration_s``; adds what happened to ``tally``."""
    import httpx

    stop_at = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s, limits=limits) as client:

        async def worker(w: int) -> None:
            i = w
            while time.monotonic() < stop_at:
                t0 = time.monotonic()
                try:
                    r = await client.post("/v1/completions", json=body_for(i))
                    tally.statuses[r.status_code] += 1
                    if r.status_code == 200:
                        tally.latencies.append(time.monotonic() - t0)
                        tally.tokens += r.json()["usage"]["completion_tokens"]
                    elif r.status_code == 429:
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                    elif len(tally.errors) < 5:  # 4xx other than 429, and 5xx: keep the first few bodies
                        tally.errors.append(f"{r.status_code}: {r.text[:300]}")
                except httpx.HTTPError as e:
                    tally.statuses["conn_error"] += 1
                    if len(tally.errors) < 5:
                        tally.errors.append(f"{type(e).__name__}: {e}")
                i += clients

        t0 = time.monotonic()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        tally.wall_s += time.monotonic() - t0


def group_cpu_s(pid: int) -> Counter:
    """CPU seconds so far of a server (``api``: process ``pid``) and the rest of its process group (``engine``)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Counter = Counter()
    group = os.getpgid(pid)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[2]) == group:  # fields[2] is the pgrp; [11], [12]: utime, stime in ticks
            out["api" if int(entry) == pid else "engine"] += (int(fields[11]) + int(fields[12])) / tick
    return out


def stage_totals(base: str) -> dict[str, tuple[float, float]]:
    """itercode's per-stage (seconds, calls) so far, from its /metrics."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(httpx.get(base + "/metrics", timeout=30).text):
        if family.name == "itercode_request_stage_seconds":
            for sample in family.samples:
                kind = "sum" if sample.name.endswith("_sum") else "count" if sample.name.endswith("_count") else None
                if kind:
                    totals.setdefault(sample.labels["stage"], [0.0, 0.0])[kind == "count"] = sample.value
    return {stage: (v[0], v[1]) for stage, v in totals.items()}


@dataclass
class Target:
    """One server under load: where it answers, what it is sent, and what it did."""

    name: str
    served: Served
    body_for: object
    tally: Tally = field(default_factory=Tally)

    def run_window(self, clients: int, seconds: float, timeout_s: float, measured: bool = True) -> None:
        tally = self.tally if measured else Tally()
        before = group_cpu_s(self.served.proc.pid)
        asyncio.run(load(self.served.base, self.body_for, clients, seconds, timeout_s, tally))
        if measured:
            tally.cpu_s.update(group_cpu_s(self.served.proc.pid) - before)


def run_windows(targets: list[Target], args) -> dict[str, tuple[float, float]]:
    """Warm every server up, then alternate the load over them; itercode's stage totals over the measured windows."""
    window = args.duration / args.windows
    for t in targets:
        t.run_window(args.clients, min(5.0, window), args.timeout, measured=False)  # first shapes, caches
    stages_before = stage_totals(targets[0].served.base)
    for w in range(args.windows):
        for t in targets if w % 2 == 0 else targets[::-1]:  # A B, B A, ...: a trend in the load hits both alike
            print(f"  window {w + 1}/{args.windows}: {t.name} ({window:g} s, load average {os.getloadavg()[0]:.1f})",
                  flush=True)
            t.run_window(args.clients, window, args.timeout)
    after = stage_totals(targets[0].served.base)
    return {k: (after[k][0] - stages_before.get(k, (0, 0))[0], after[k][1] - stages_before.get(k, (0, 0))[1])
            for k in after}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: the quick starter, built once)")
    p.add_argument("--full-starter", action="store_true", help="without --model, build/use the full-size starter")
    p.add_argument("--backend", default=LOCAL_BACKENDS[0], choices=LOCAL_BACKENDS)
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measured load per server")
    p.add_argument("--windows", type=int, default=6, help="alternating windows the duration is split into")
    p.add_argument("--n-candidates", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature)
    p.add_argument("--top-p", type=float, default=SamplingParams.top_p)
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
    # OpenAI (and `vllm serve`) take at most 4 stop sequences: both servers get the same 4. top_p is
    # sent to both: left out, itercode samples with its default (0.95) and vLLM with 1.0.
    gen = {"max_tokens": args.max_tokens, "temperature": args.temperature, "top_p": args.top_p,
           "stop": HUMANEVAL_STOP[:4]}

    def ours(i: int) -> dict:
        return {"model": "served", "prompt": prompts[i % len(prompts)], "n_candidates": args.n_candidates, **gen}

    def peer(i: int) -> dict:
        body = {"model": "served", "prompt": prompts[i % len(prompts)], "n": args.n_candidates, **gen}
        return body if args.peer_stock else {**body, "logprobs": 0}

    setting = (f"{args.clients} clients x {args.duration:g} s in {args.windows} alternating windows, "
               f"{args.n_candidates} candidates x {args.max_tokens} tokens, T={args.temperature}, top_p={args.top_p}, "
               f"model={model}, backend={args.backend}, "
               f"peer={'stock vLLM settings' if args.peer_stock else 'same generation work'}")
    print(f"serve_load: {setting}; load average {os.getloadavg()[0]:.1f} before", flush=True)
    cmd = [ITERCODE, "serve", "--model", model, "--served-model-name", "served", "--backend", args.backend,
           "--n-candidates", str(args.n_candidates), "--request-timeout", str(args.timeout), "--log-level", "warning"]
    with contextlib.ExitStack() as stack:
        s = stack.enter_context(Served(cmd, label="itercode"))
        print(f"itercode serve ready in {s.startup_s:.0f} s", flush=True)
        targets = [Target("itercode serve", s, ours)]
        if not args.no_peer:
            peer_cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
                        "--served-model-name", "served", "--host", "127.0.0.1", "--dtype", "float32", "--seed", "0"]
            if not args.peer_stock:
                peer_cmd += peer_scheduling_flags(model)
            s = stack.enter_context(Served(peer_cmd, label="vllm-serve"))
            print(f"vllm serve ready in {s.startup_s:.0f} s", flush=True)
            targets.append(Target(PEER, s, peer))
        stages = run_windows(targets, args)
    load_after = os.getloadavg()[0]
    results = {t.name: t.tally.summary() for t in targets}
    return report(results, stages, setting, load_after, args)


PEER = "vllm serve (peer, no rerank)"


def report(results: dict, stages: dict[str, tuple[float, float]], setting: str, load_after: float, args) -> int:
    print()
    print(f"{'server':30s} {'requests':>8s} {'200':>6s} {'429':>5s} {'5xx':>5s} {'conn err':>8s} {'req/s':>8s} "
          f"{'p50 s':>7s} {'p99 s':>7s} {'tok/req':>8s} {'CPU ms/req api+engine':>22s}")
    for name, r in results.items():
        cpu = r["cpu_ms_per_request"]
        print(f"{name:30s} {r['requests']:8d} {r['ok']:6d} {r['statuses'].get('429', 0):5d} {r['five_xx']:5d} "
              f"{r['conn_errors']:8d} {r['rps']:8.2f} {r['p50_s']:7.2f} {r['p99_s']:7.2f} {r['tokens_per_request']:8.1f} "
              f"{cpu['api']:10.1f} + {cpu['engine']:.1f}")
    ours_r = results["itercode serve"]
    print(f"\nitercode serve, wall time per request by stage (ms, mean over {ours_r['ok']} answered requests; "
          "generate includes the wait for the batch):")
    stages = {k: stages[k] for k in STAGES if k in stages}
    print("  " + ", ".join(f"{stage} {1000 * total / max(ours_r['ok'], 1):.2f}" for stage, (total, _) in stages.items()))
    results["stages_ms_per_request"] = {k: round(1000 * v[0] / max(ours_r["ok"], 1), 3) for k, v in stages.items()}
    if PEER in results:
        peer_r = results[PEER]
        ratio = ours_r["rps"] / peer_r["rps"] if peer_r["rps"] else float("nan")
        work = "vLLM's defaults, no log-probs" if args.peer_stock else "the same generation work per request"
        print(f"\nthroughput ratio itercode/vllm-serve: {ratio:.2f} (peer: {work}); load average {load_after:.1f} after")
        results["ratio_rps"] = round(ratio, 3)
    for name, r in results.items():
        if isinstance(r, dict) and r.get("errors"):
            print(f"{name} errors (first few): {r['errors']}")
    results["setting"] = setting
    if args.json:
        print(json.dumps(results, indent=2))
    failed = ours_r["five_xx"] or ours_r["conn_errors"] or not ours_r["ok"]
    print("\nPASS: zero 5xx, zero connection errors" if not failed else "\nFAIL: 5xx or connection errors (or nothing answered)")
    peer_r = results.get(PEER)
    if peer_r is not None and not peer_r["ok"]:
        print("FAIL: the peer answered no request, so there is no comparison (its errors are above)")
        return 1
    return 1 if failed else 0


def peer_scheduling_flags(model: str) -> list[str]:
    """`vllm serve` flags for the scheduling itercode's engine uses here (whole prefills, wider steps on the CPU)."""
    import torch

    from codegen.samplers.vllm_engine import cpu_scheduling_options

    if torch.cuda.is_available():
        return []
    options = cpu_scheduling_options(model, None, {})
    return ["--no-enable-chunked-prefill", "--max-num-batched-tokens", str(options["max_num_batched_tokens"]),
            "--max-num-seqs", str(options["max_num_seqs"])]


if __name__ == "__main__":
    sys.exit(main())
