"""`itercode decode`: answer each problem by best-of-N or by iterative decoding (IAD).

Both spend ``--budget`` generations per problem: ``--strategy bon`` draws
them at once and picks the candidate the verifier ranks first; ``--strategy
iad`` draws budget/rounds per round for ``--rounds`` rounds, each later
round's prompt showing the best and worst candidates so far with their
verdicts (`codegen.decoding`). The picks file has one row per problem in
the samples format, so ``itercode eval --problems P --samples picks.jsonl``
gives the pick's pass@1; each row's ``decode`` keeps every round's
candidates and checks. ``--verifier oracle`` grades with the hidden tests:
its picks are labelled analysis-only (``decode.analysis_only``) and the
summary says so.
"""
from __future__ import annotations

import argparse
import sys
import time

from codegen.app.commands.sample import add_engine_arguments, sampler_options
from codegen.datasets import SYNTHETIC_SPEC, load_problems
from codegen.decoding import FEEDBACK_MODES, STRATEGIES, VERIFIERS, DecodeSettings, decode_problems, make_verifier
from codegen.errors import UserError
from codegen.io import write_jsonl_atomic
from codegen.judging import Judge
from codegen.samplers import BACKENDS, HUMANEVAL_STOP, SamplingParams, default_backend, make_sampler
from rerankers.model import Reranker, check_reranker_dir
from sandbox import BACKENDS as SANDBOXES
from sandbox import DEFAULT_BACKEND

HELP = "answer each problem by best-of-N or iterative decoding (IAD) with a verifier; write picks JSONL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = SamplingParams
    p.add_argument("--strategy", default="iad", metavar="|".join(STRATEGIES), help="bon or iad (default iad)")
    p.add_argument("--model", required=True, metavar="PATH_OR_ID",
                   help="local model directory or hub id (for --backend openai: the model name the server serves)")
    p.add_argument("--problems", required=True, metavar="SPEC", help=f"humaneval, {SYNTHETIC_SPEC}, or a problems file")
    p.add_argument("--out", required=True, metavar="FILE", help="picks JSONL to write (one row per problem)")
    p.add_argument("--budget", type=int, default=8, metavar="N", help="generations per problem (default 8)")
    p.add_argument("--rounds", type=int, default=4, metavar="T",
                   help="iad: rounds of budget/T candidates (default 4); bon ignores it")
    p.add_argument("--verifier", default="examples", metavar="|".join(VERIFIERS),
                   help="examples (the docstring's, in the sandbox), reranker, examples+reranker, noisy:P "
                        "(noisy:P:BASE, flip rate P), oracle (the hidden tests: analysis only). Default examples")
    p.add_argument("--reranker", metavar="DIR", default=None, help="the reranker of the reranker verifiers")
    p.add_argument("--feedback", default="verifier", metavar="|".join(FEEDBACK_MODES),
                   help="iad: what later rounds show: the verifier's feedback (default), none (the plain prompt: "
                        "diversity alone), shuffled (another problem's feedback)")
    p.add_argument("--no-early-stop", action="store_true", help="iad: spend every round even once the verifier is satisfied")
    p.add_argument("--backend", default=None, metavar="|".join(BACKENDS),
                   help="the sampling engine (openai needs --base-url); default: the faster for the job")
    p.add_argument("--temperature", type=float, default=d.temperature, help=f"default {d.temperature:g}")
    p.add_argument("--top-p", type=float, default=d.top_p, help=f"default {d.top_p:g}")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens, help=f"tokens per completion at most (default {d.max_tokens})")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (round r samples with seed + r * 1000003)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="decode only the first N problems")
    p.add_argument("--chat-template", action="store_true",
                   help="chat models: the prompt and the feedback go through the tokenizer's chat template")
    add_engine_arguments(p)
    p.add_argument("--tokenizer", default=None, metavar="PATH_OR_ID",
                   help="--backend openai: the served model's tokenizer (a local dir or hub id), to count prompt "
                        "tokens and shrink feedback that would not fit the model's context")
    p.add_argument("--sandbox", default=DEFAULT_BACKEND, metavar="|".join(SANDBOXES),
                   help=f"sandbox of the examples and oracle verifiers (default {DEFAULT_BACKEND})")
    p.add_argument("--sandbox-workers", type=int, default=None, help="parallel sandbox runs (default: the backend's)")


def reranker_scores(reranker: Reranker):
    """A verifier's score function from a loaded reranker: (problem, completion) pairs -> floats."""
    def score(items):
        return reranker.score_texts([p.prompt for p, _ in items], [c for _, c in items])
    return score


def open_verifier(spec: str, judge: Judge, reranker_dir: str | None, seed: int = 0):
    """The verifier ``spec`` names, and the reranker it loaded (None if none; the caller closes it)."""
    wants_reranker = "reranker" in spec or (spec.startswith("noisy:") and spec.count(":") == 1)
    reranker = None
    if wants_reranker:
        if reranker_dir is None:
            raise UserError(f"--verifier {spec} scores with a reranker: pass --reranker DIR "
                            "(from `itercode reranker train`), or use --verifier examples")
        check_reranker_dir(reranker_dir)
        reranker = Reranker.load(reranker_dir, judge=judge)
    elif reranker_dir is not None:
        raise UserError(f"--reranker is for the reranker verifiers, not --verifier {spec}: drop it")
    verifier = make_verifier(spec, judge=judge, score_fn=reranker_scores(reranker) if reranker else None, seed=seed)
    return verifier, reranker


class TokenCounting:
    """A sampler that cannot count tokens (openai), with a local tokenizer that can."""

    def __init__(self, sampler, tokenizer: str):
        from transformers import AutoConfig, AutoTokenizer  # heavy: only with --tokenizer

        self.sampler = sampler
        self.tokenizer_ = AutoTokenizer.from_pretrained(tokenizer)
        config = AutoConfig.from_pretrained(tokenizer)
        self.context_length = int(getattr(config, "max_position_embeddings", 0) or 0)

    def count_tokens(self, prompts):
        return [len(ids) for ids in self.tokenizer_(list(prompts))["input_ids"]]

    def generate(self, prompts, params):
        return self.sampler.generate(prompts, params)

    def close(self) -> None:
        self.sampler.close()


def run(args: argparse.Namespace) -> int:
    settings = DecodeSettings(strategy=args.strategy, budget=args.budget, rounds=args.rounds, feedback=args.feedback,
                              early_stop=not args.no_early_stop, chat_template=args.chat_template).check()
    params = SamplingParams(temperature=args.temperature, top_p=args.top_p, max_tokens=args.max_tokens,
                            seed=args.seed, stop=list(HUMANEVAL_STOP))
    params.check()
    if args.backend is not None and args.backend not in BACKENDS:
        raise UserError(f"unknown --backend {args.backend!r}: choose one of {', '.join(BACKENDS)}")
    if args.limit is not None and args.limit < 1:
        raise UserError(f"--limit must be at least 1 (got {args.limit})")
    problems = load_problems(args.problems)[: args.limit]
    backend = args.backend or default_backend(len(problems) * args.budget)
    options = sampler_options(args, backend)  # a bad backend option fails before a reranker loads
    if args.tokenizer and backend != "openai":
        raise UserError(f"--tokenizer is for --backend openai ({backend} counts with the model's own): drop it")
    judge = Judge(args.sandbox, args.sandbox_workers)
    verifier, reranker = open_verifier(args.verifier, judge, args.reranker, seed=args.seed)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rounds, per_round = settings.plan
    log(f"decoding {len(problems)} problems: {args.strategy}, {rounds} round(s) x {per_round} candidates, "
        f"verifier {verifier.name}" + (" (ORACLE: the hidden tests; analysis only)" if verifier.analysis_only else "")
        + f"; sampling with {backend}")
    started = time.perf_counter()
    sampler = make_sampler(backend, args.model, **options)
    if args.tokenizer:
        sampler = TokenCounting(sampler, args.tokenizer)
    try:
        rows = decode_problems(sampler, problems, verifier, settings, params, model_name=args.model, log=log)
    finally:
        sampler.close()
        if reranker is not None:
            reranker.close()
        judge.close()
    for row in rows:
        row["meta"]["backend"] = backend
    write_jsonl_atomic(args.out, rows)
    generations = sum(r["decode"]["generations"] for r in rows)
    satisfied = sum(r["decode"]["pick"]["check"]["satisfied"] for r in rows)
    log(f"wrote {len(rows)} picks to {args.out}: {generations} generations "
        f"({generations / len(rows):.1f} per problem of a budget of {args.budget}); verifier satisfied on "
        f"{satisfied}/{len(rows)}; {time.perf_counter() - started:.1f} s. Score the picks with "
        f"`itercode eval --problems {args.problems} --samples {args.out}`"
        + (" (ORACLE verifier: analysis only, not a deployable result)" if verifier.analysis_only else ""))
    return 0
