"""Does the reranked answer pass more often than a single plain sample? Through HTTP.

    .venv/bin/python benchmarks/serve_quality.py [--model PATH] [--reranker DIR] [--backend vllm|hf]
        [--n-candidates 8] [--problems 100] [--temperature 0.8] [--json]

On the held-out synthetic problems, every answer comes from `itercode serve`
over HTTP and is judged afterwards on the problem's hidden tests (the full
`check`), in the sandbox, by `codegen.evaluate`:

- single plain sample: a request with ``n_candidates=1``;
- plain pass@1 (estimate): the share of passing candidates among the K drawn
  for the next row, i.e. what one plain sample passes on average;
- reranked by mean log-prob: choice 0 of a K-candidate request (no reranker);
- reranked by the reranker: the same, from a server started with --reranker;
- reranked with public tests: the request carries only the docstring's
  example as ``tests`` (the hidden tests are never sent), so candidates that
  pass the example rank first;
- oracle: any of the K candidates passes (the ceiling of any reranker).

Requests with and without tests use the same seed per problem, so they see
the same K candidates and differ only in how one is chosen. Without --model
the full starter model is built once into .itercode-cache/bench/ (minutes).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _serve_common import ITERCODE, Served, model_path  # noqa: E402
from codegen.doctests import example_tests  # noqa: E402
from codegen.samplers import LOCAL_BACKENDS, SamplingParams  # noqa: E402

async def ask_all(base: str, bodies: list[dict], concurrency: int, timeout_s: float) -> list[dict]:
    """POST every body to /v1/completions (``concurrency`` at a time); the JSON answers in order."""
    import httpx

    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=timeout_s) as client:

        async def one(body):
            async with sem:
                for _attempt in range(5):
                    r = await client.post("/v1/completions", json=body)
                    if r.status_code in (429, 503):
                        await asyncio.sleep(float(r.headers.get("Retry-After", "1")))
                        continue
                    r.raise_for_status()
                    return r.json()
                r.raise_for_status()

        return await asyncio.gather(*(one(b) for b in bodies))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="model to serve (default: the full starter, built once)")
    p.add_argument("--quick-starter", action="store_true", help="without --model, use the quick starter (weak, seconds)")
    p.add_argument("--reranker", default=None, help="a trained reranker directory: adds the reranker row")
    p.add_argument("--backend", default=LOCAL_BACKENDS[0], choices=LOCAL_BACKENDS)
    p.add_argument("--n-candidates", type=int, default=8)
    p.add_argument("--problems", type=int, default=100, help="first N held-out problems")
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)

    from codegen.evaluate import evaluate_samples
    from codegen.samples import Sample
    from codegen.synthetic import load_split
    from sandbox.base import Limits

    model = model_path(args.model, full=not args.quick_starter)
    problems = load_split("heldout")[: args.problems]
    K = args.n_candidates
    gen = {"model": "served", "max_tokens": args.max_tokens, "temperature": args.temperature}

    def body(i, problem, **extra):
        return {**gen, "prompt": problem.prompt, "seed": args.seed * 100_003 + i, **extra}

    plain_bodies = [body(i, pr, n_candidates=1) for i, pr in enumerate(problems)]
    rerank_bodies = [body(i, pr, n_candidates=K) for i, pr in enumerate(problems)]
    test_bodies = []
    for i, pr in enumerate(problems):
        tests = example_tests(pr.prompt, pr.entry_point)  # the docstring examples only, never the hidden tests
        extra = {"tests": {"code": tests, "entry_point": pr.entry_point}} if tests else {}
        test_bodies.append(body(i, pr, n_candidates=K, **extra))
    with_examples = sum("tests" in b for b in test_bodies)

    def serve_cmd(reranker: str | None) -> list[str]:
        cmd = [ITERCODE, "serve", "--model", model, "--served-model-name", "served", "--backend", args.backend,
               "--n-candidates", str(K), "--seed", str(args.seed), "--log-level", "warning"]
        return cmd + (["--reranker", reranker] if reranker else [])

    answers: dict[str, list[dict]] = {}
    with Served(serve_cmd(None), label="itercode") as s:
        print(f"itercode serve ready in {s.startup_s:.0f} s; {len(problems)} problems x 3 requests...", flush=True)
        answers["plain"] = asyncio.run(ask_all(s.base, plain_bodies, args.concurrency, 600))
        answers["logprob"] = asyncio.run(ask_all(s.base, rerank_bodies, args.concurrency, 600))
        answers["tests"] = asyncio.run(ask_all(s.base, test_bodies, args.concurrency, 600))
    if args.reranker:
        with Served(serve_cmd(args.reranker), label="itercode-reranker") as s:
            print(f"itercode serve --reranker ready in {s.startup_s:.0f} s", flush=True)
            answers["reranker"] = asyncio.run(ask_all(s.base, rerank_bodies, args.concurrency, 600))

    # Judge everything on the hidden tests: choice 0 of each arm, and all K candidates of the log-prob arm.
    samples: list[Sample] = []
    for arm, rows in answers.items():
        for pr, a in zip(problems, rows):
            samples.append(Sample(task_id=pr.task_id, completion=a["choices"][0]["text"], sample_id=f"{pr.task_id}#{arm}"))
    for pr, a in zip(problems, answers["logprob"]):
        for c in a["itercode"]["candidates"]:
            samples.append(Sample(task_id=pr.task_id, completion=c["text"], sample_id=f"{pr.task_id}#cand{c['index']}"))
    results = evaluate_samples(problems, samples, limits=Limits(), cache=False, progress=True)
    passed = {r["sample_id"]: r["passed"] for r in results}

    def rate(arm: str) -> float:
        return 100 * sum(passed[f"{pr.task_id}#{arm}"] for pr in problems) / len(problems)

    per_cand = [[passed[f"{pr.task_id}#cand{i}"] for i in range(K)] for pr in problems]
    rows = [
        ("single plain sample (n_candidates=1)", rate("plain")),
        (f"plain pass@1, mean over the {K} candidates", 100 * sum(sum(c) / K for c in per_cand) / len(problems)),
        (f"reranked by mean log-prob (best of {K})", rate("logprob")),
    ]
    if "reranker" in answers:
        rows.append((f"reranked by the reranker (best of {K})", rate("reranker")))
    rows += [
        (f"reranked with public tests (best of {K})", rate("tests")),
        (f"oracle: any of {K} passes", 100 * sum(any(c) for c in per_cand) / len(problems)),
    ]
    print()
    print(f"held-out synthetic problems: {len(problems)} ({with_examples} with a docstring example), K={K}, "
          f"T={args.temperature}, max_tokens={args.max_tokens}, model={model}, backend={args.backend}, "
          f"sandbox=process (5 s), judged on the hidden tests")
    print(f"{'selection':48s} {'pass %':>7s}")
    for name, value in rows:
        print(f"{name:48s} {value:7.1f}")
    if args.json:
        print(json.dumps({"rows": dict(rows), "problems": len(problems), "k": K, "temperature": args.temperature,
                          "model": model, "backend": args.backend}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
