"""`itercode serve`: a reranked, OpenAI-compatible completion endpoint.

    itercode serve --model runs/demo/model --reranker runs/demo/reranker --port 8000

then, from any OpenAI client::

    client = openai.OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    r = client.completions.create(model="runs/demo/model", prompt="def add(a, b):\\n",
                                  extra_body={"n_candidates": 8})
    r.choices[0].text            # the best of 8
    r.model_extra["itercode"]    # every candidate with its score and verdict
"""
from __future__ import annotations

import argparse

from codegen.app.server.config import ServerConfig
from codegen.errors import UserError
from codegen.samplers import LOCAL_BACKENDS, SamplingParams, check_model_reference
from codegen.samplers.vllm_engine import require_vllm
from rerankers.model import check_reranker_dir
from sandbox import BACKENDS, DEFAULT_BACKEND
from sandbox.base import Limits

HELP = "serve an OpenAI-compatible endpoint that answers with the best of n reranked candidates"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="model path or hub id (a local path on offline machines)")
    p.add_argument("--reranker", default=None, help="trained reranker directory; default: rank by mean token log-prob")
    p.add_argument("--backend", default=LOCAL_BACKENDS[0], choices=LOCAL_BACKENDS,
                   help="vllm: one async engine batches all requests (default); hf: transformers, one request at a time")
    p.add_argument("--n-candidates", type=int, default=8, help="candidates per request unless the request says (default 8)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--served-model-name", default=None, help="the model id clients send (default: --model as given)")
    g = p.add_argument_group("request defaults")
    g.add_argument("--temperature", type=float, default=SamplingParams.temperature,
                   help=f"when a request leaves it out (default {SamplingParams.temperature:g})")
    g.add_argument("--top-p", type=float, default=SamplingParams.top_p,
                   help=f"when a request leaves it out (default {SamplingParams.top_p:g})")
    g.add_argument("--default-max-tokens", type=int, default=SamplingParams.max_tokens,
                   help=f"max_tokens when a request leaves it out (default {SamplingParams.max_tokens})")
    g.add_argument("--no-default-stop", action="store_true",
                   help="do not stop at a new top-level statement (HumanEval's stop sequences) when a request sends no `stop`")
    g.add_argument("--decoding", default="bon", choices=["bon", "iad"],
                   help="bon: best of n_candidates; iad: n_candidates over --rounds rounds with the verifier's feedback "
                        "(a request's `decoding` overrides it). Default bon")
    g.add_argument("--rounds", type=int, default=2, help="iad rounds when a request names none (default 2)")
    g = p.add_argument_group("limits")
    g.add_argument("--max-candidates", type=int, default=32, help="most candidates one request may ask for")
    g.add_argument("--max-tokens-limit", type=int, default=1024, help="most max_tokens one request may ask for")
    g.add_argument("--max-body-kb", type=int, default=1024, help="largest request body in KiB (default 1024)")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds per request, queueing included; then 503")
    g.add_argument("--max-concurrent", type=int, default=64, help="requests worked on at once")
    g.add_argument("--max-queue", type=int, default=256, help="requests waiting beyond --max-concurrent; more get 429")
    g.add_argument("--sandbox", default=DEFAULT_BACKEND, choices=BACKENDS,
                   help="sandbox backend for request tests and a reranker's example feedback "
                        f"(default {DEFAULT_BACKEND}; docker needs a reachable dockerd)")
    g.add_argument("--sandbox-timeout", type=float, default=Limits.timeout_s,
                   help=f"seconds per candidate when a request carries tests (default {Limits.timeout_s:g})")
    g.add_argument("--sandbox-workers", type=int, default=None, help="sandbox processes in parallel (default: the CPU count)")
    g.add_argument("--ray-address", default=None, metavar="auto|ray://HOST:PORT",
                   help="--sandbox ray: the cluster to run on (default: $RAY_ADDRESS, else a local Ray runtime)")
    g = p.add_argument_group("engine")
    g.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    g.add_argument("--kv-cache-gib", type=int, default=None,
                   help="vllm on CPU: KV-cache size in GiB (default: $VLLM_CPU_KVCACHE_SPACE or 1)")
    g.add_argument("--dtype", default="auto", help="auto = float32 on CPU, the model's own dtype on GPU")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])


def config_from_args(args: argparse.Namespace):
    """The ServerConfig for parsed arguments, checked (UserError on a bad value)."""
    check_model_reference(args.model)
    if args.reranker:
        check_reranker_dir(args.reranker)
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    cfg = ServerConfig(
        model=args.model, backend=args.backend, reranker=args.reranker, served_model_name=args.served_model_name,
        n_candidates=args.n_candidates, decoding=args.decoding, rounds=args.rounds, temperature=args.temperature, top_p=args.top_p,
        default_max_tokens=args.default_max_tokens, max_candidates=args.max_candidates,
        max_tokens_limit=args.max_tokens_limit, max_body_bytes=args.max_body_kb * 1024,
        request_timeout_s=args.request_timeout, max_concurrent=args.max_concurrent, max_queue=args.max_queue,
        sandbox=args.sandbox, sandbox_timeout_s=args.sandbox_timeout, sandbox_workers=args.sandbox_workers,
        sandbox_ray_address=args.ray_address, max_model_len=args.max_model_len, kv_cache_gib=args.kv_cache_gib,
        dtype=args.dtype, seed=args.seed,
    )
    if args.no_default_stop:
        cfg.default_stop = []
    return cfg.check()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.backend == "vllm":
        require_vllm()  # before the slow imports below
    # optional: the server needs the serve extra (uvicorn, fastapi); `itercode eval` starts without it
    import uvicorn

    from codegen.app.server.app import create_app
    from codegen.app.server.ranking import TestRunner

    tests = TestRunner.for_config(cfg)
    try:
        tests.start()  # before the model loads: a sandbox that cannot run fails in seconds, with its fix
    except ValueError as e:  # DockerUnavailable is one
        tests.close()
        raise UserError(f"--sandbox {cfg.sandbox}: {e}") from None
    app = create_app(cfg, tests=tests)
    print(f"itercode serve: {cfg.backend} engine on {cfg.model}, scorer "
          f"{'reranker ' + cfg.reranker if cfg.reranker else 'mean log-prob'}, "
          f"{cfg.n_candidates} candidates" + (f" over {cfg.rounds} iad rounds" if cfg.decoding == "iad" else "")
          + f", {cfg.sandbox} sandbox; loading, then listening on http://{args.host}:{args.port}/v1", flush=True)
    # One process, one event loop: the engine is shared by every request, which is the point.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0
