"""The OpenAI-compatible sampler: the completions API of one or many servers.

Point it at a fleet of `vllm serve` endpoints (the way to many GPUs and many
machines): prompts are spread round-robin over the ``base_urls`` and sent
concurrently, one request per prompt with ``n`` choices. Per-token log-probs
are requested (``logprobs=0``: the sampled token only) so samples carry the
same ``mean_logprob`` and ``num_tokens`` as the in-process backends. Request
seeds follow the vLLM backend's rule (prompt ``i`` gets ``seed + i * n``), so
a `vllm serve` of the same model reproduces `make_sampler("vllm")`'s samples.
"""
from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor
from typing import Sequence

from tqdm.auto import tqdm

from codegen.errors import UserError
from codegen.samplers import Completion, SamplingParams, mean_logprob
from codegen.samplers._stops import first_stop

# The completions API accepts at most 4 stop strings (vLLM's server enforces it);
# any further ones are applied here, on the returned text and tokens.
MAX_SERVER_STOPS = 4


class OpenAISampler:
    """Sample ``model`` (the name the servers serve) through ``base_urls`` like ``http://host:8000/v1``."""

    def __init__(
        self,
        model: str,
        *,
        base_urls: str | Sequence[str] = ("http://127.0.0.1:8000/v1",),
        api_key: str = "EMPTY",
        seed: int = 0,
        concurrency_per_url: int = 8,
        timeout_s: float = 600.0,
        progress: bool = False,
    ):
        from openai import OpenAI  # optional: the serve extra; only when this backend is chosen

        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise UserError("the openai backend needs at least one --base-url (e.g. http://127.0.0.1:8000/v1)")
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise UserError(f"--base-url {url!r} is not an http(s) URL: write it like http://127.0.0.1:8000/v1")
        if concurrency_per_url < 1:
            raise UserError(f"concurrency_per_url must be at least 1 (got {concurrency_per_url})")
        self.model_name = model
        self.urls = urls
        self.seed = seed
        self.progress = progress
        self.clients = [OpenAI(base_url=u, api_key=api_key, timeout=timeout_s, max_retries=2) for u in urls]
        self.pool = ThreadPoolExecutor(max_workers=concurrency_per_url * len(urls), thread_name_prefix="openai-sampler")

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[list[Completion]]:
        """For each prompt, ``params.n`` completions; requests run concurrently over all endpoints."""
        params.check()
        base_seed = self.seed if params.seed is None else params.seed
        client_for = itertools.cycle(range(len(self.clients)))
        futures = [
            self.pool.submit(self._request, next(client_for), prompt, params, base_seed + i * params.n)
            for i, prompt in enumerate(prompts)
        ]
        results = []
        for future in tqdm(futures, desc="openai requests", unit="prompt", disable=not self.progress):
            results.append(future.result())
        return results

    def _request(self, which: int, prompt: str, params: SamplingParams, seed: int) -> list[Completion]:
        import openai  # optional: loaded by the constructor already

        url = self.urls[which]
        greedy = params.temperature == 0
        try:
            response = self.clients[which].completions.create(
                model=self.model_name,
                prompt=prompt,
                n=params.n,
                temperature=params.temperature,
                top_p=1.0 if greedy else params.top_p,
                max_tokens=params.max_tokens,
                stop=list(params.stop)[:MAX_SERVER_STOPS] or None,
                seed=seed,
                logprobs=0,
            )
        except openai.APIConnectionError as e:
            raise UserError(
                f"cannot reach {url} ({e}): start a server there (e.g. `vllm serve MODEL --port 8000`) or fix --base-url"
            ) from None
        except openai.NotFoundError as e:
            raise UserError(
                f"{url} does not serve model {self.model_name!r} ({e}): pass --model as the server lists it at {url}/models"
            ) from None
        except openai.BadRequestError as e:
            raise UserError(f"{url} refused the request: {e}") from None
        if len(response.choices) != params.n:
            raise RuntimeError(f"{url} returned {len(response.choices)} choices, expected n={params.n}")
        return [_completion(choice, params.stop) for choice in sorted(response.choices, key=lambda c: c.index)]

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        for client in self.clients:
            client.close()


def _completion(choice, stops: Sequence[str]) -> Completion:
    """One choice as a `Completion`, cut at the stop strings the server was not sent.

    As in the other backends, the token that completes a stop string is kept in
    ``num_tokens`` and ``mean_logprob``, and the text ends before the stop string.
    """
    text = choice.text
    logprobs = choice.logprobs
    token_logprobs = list(logprobs.token_logprobs or []) if logprobs else []
    cut = first_stop(text, stops)
    if cut >= 0 and logprobs:
        stop_end = min(cut + len(s) for s in stops if s and text.startswith(s, cut))
        offsets = list(logprobs.text_offset or [])
        if len(offsets) != len(token_logprobs):  # no offsets: rebuild them from the token strings
            offsets, at = [], 0
            for token in logprobs.tokens or []:
                offsets.append(at)
                at += len(token)
        # Offsets count from the start of the completion; keep the tokens that begin before the stop ends.
        base = offsets[0] if offsets else 0
        token_logprobs = [lp for lp, off in zip(token_logprobs, offsets) if off - base < stop_end]
        text = text[:cut]
    elif cut >= 0:
        text = text[:cut]
    token_logprobs = [lp for lp in token_logprobs if lp is not None]
    n_tok = len(token_logprobs)
    finish = "length" if cut < 0 and getattr(choice, "finish_reason", None) == "length" else "stop"
    return Completion(text=text, mean_logprob=mean_logprob(sum(token_logprobs), n_tok), num_tokens=n_tok, finish_reason=finish)
