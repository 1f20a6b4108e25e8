"""A trained reranker: problem prompt + candidate completion -> one float.

The directory is a plain Hugging Face sequence-classification checkpoint
(``num_labels=1``) with its tokenizer, plus ``reranker.json`` recording how it
was trained. LoRA adapters are merged before saving, so loading needs nothing
but transformers.

Training and scoring encode text with the same function, `encode_candidate`,
so the model sees at scoring time exactly what it saw in training.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from tqdm import tqdm

from codegen.errors import UserError
from codegen.judging import Judge
from codegen.problems import Problem
from rerankers.feedback import ExampleRunner, check_kind, with_feedback
from sandbox import DEFAULT_BACKEND

META_FILE = "reranker.json"
FORMAT_VERSION = 1


class RerankerLoadError(UserError):
    """A reranker directory that does not load."""


FIX = "train one with `itercode reranker train --out DIR` and pass that DIR"


def check_reranker_dir(path, *, parse: bool = True) -> Path:
    """Fail fast, before any sandbox run, when ``path`` cannot be a reranker directory.

    Cheap checks only (no torch): the directory and its config.json exist and,
    with ``parse``, parse. `Reranker.load` does the full check.
    """
    path = Path(path)
    if not path.is_dir():
        raise RerankerLoadError(f"reranker directory {path} does not exist; {FIX}")
    config = path / "config.json"
    if not config.exists():
        raise RerankerLoadError(f"{path} is not a reranker directory (no config.json); {FIX}")
    if parse:
        try:
            json.loads(config.read_text())
        except (OSError, ValueError) as e:
            raise RerankerLoadError(f"{path}/config.json does not parse ({e}); {FIX}") from e
    return path


def encode_candidate(tokenizer: Any, prompt: str, completion: str, max_length: int) -> list[int]:
    """Token ids of ``prompt + completion + EOS``, at most ``max_length`` long.

    When too long, the prompt loses tokens from its left end: the end of the
    prompt (signature and docstring) and the whole completion are what the
    score depends on. A completion longer than the budget keeps its start.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    budget = max_length - len(eos)
    completion_ids = completion_ids[:budget]
    keep = budget - len(completion_ids)
    prompt_ids = prompt_ids[len(prompt_ids) - keep :] if keep > 0 else []
    return prompt_ids + completion_ids + eos


def read_meta(path: Path) -> dict:
    """The ``reranker.json`` of a reranker directory (empty dict if absent)."""
    meta_path = Path(path) / META_FILE
    if not meta_path.exists():
        return {}
    try:
        return json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RerankerLoadError(f"{meta_path} is not valid JSON ({e}); retrain with `itercode reranker train`") from e


class Reranker:
    """Scores candidates of a problem; higher means more likely to pass.

    >>> # rr = Reranker.load("runs/demo/reranker")
    >>> # rr.score(problem, ["    return a + b\\n", "    return a - b\\n"])
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512, meta: dict | None = None,
                 batch_size: int = 16, sandbox: str | None = None, sandbox_workers: int | None = None,
                 judge: Judge | None = None, sandbox_options: dict | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.meta = meta or {}
        self.batch_size = batch_size
        # Rerankers saved before feedback existed read the code alone.
        self.feedback = check_kind(self.meta.get("feedback", "none"))
        # The examples run where the caller says (`itercode serve --sandbox`), else where training ran them.
        backend = sandbox or self.meta.get("config", {}).get("sandbox", DEFAULT_BACKEND)
        self.examples = (ExampleRunner(backend, sandbox_workers, judge=judge, options=sandbox_options)
                         if self.feedback == "examples" else None)

    @classmethod
    def load(cls, path: str | Path, *, batch_size: int = 16, threads: int | None = None, sandbox: str | None = None,
             sandbox_workers: int | None = None, judge: Judge | None = None,
             sandbox_options: dict | None = None) -> "Reranker":
        """Load a reranker saved by `rerankers.train.train_reranker`.

        A missing directory, or one that does not hold a sequence-classification
        model with one output and its tokenizer, raises `RerankerLoadError`
        naming the path and the fix. A reranker trained with example feedback
        runs candidates on their docstring examples when it scores them, in a
        sandbox of its own (stopped by `close`): ``sandbox`` names its backend
        (default: the one it was trained with), ``sandbox_workers`` its width,
        ``sandbox_options`` the backend's options (``sandbox.backend_options``);
        or in ``judge``'s, a running `codegen.judging.Judge` to share (its
        owner closes it).
        """
        path = check_reranker_dir(path, parse=False)  # a config.json that does not parse: the load error below
        meta = read_meta(path)
        # heavy: torch and transformers load only when a reranker is loaded
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            model = AutoModelForSequenceClassification.from_pretrained(str(path), dtype=torch.float32)
        except Exception as e:  # transformers raises many types for a broken checkpoint
            raise RerankerLoadError(f"{path} does not load as a reranker ({type(e).__name__}: {e}); {FIX}") from e
        if model.config.num_labels != 1:
            raise RerankerLoadError(
                f"{path} holds a classifier with {model.config.num_labels} outputs, not a reward model with 1; {FIX}"
            )
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model.eval()
        max_length = int(meta.get("max_length") or getattr(model.config, "max_position_embeddings", 512) or 512)
        return cls(model, tokenizer, max_length=max_length, meta=meta, batch_size=batch_size, sandbox=sandbox,
                   sandbox_workers=sandbox_workers, judge=judge, sandbox_options=sandbox_options)

    def score_texts(self, prompts: Sequence[str], completions: Sequence[str], *, progress: bool = False) -> list[float]:
        """Scores for (prompt, completion) pairs, in batches of ``batch_size``."""
        import torch  # heavy: loaded by load() already

        if self.examples is not None:
            lines = self.examples.lines(prompts, completions)
            completions = [with_feedback(c, line) for c, line in zip(completions, lines)]
        encoded = [encode_candidate(self.tokenizer, p, c, self.max_length) for p, c in zip(prompts, completions)]
        # Longest first within the list keeps padding small; results go back in order.
        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        scores = [math.nan] * len(encoded)
        pad = self.tokenizer.pad_token_id
        batches = range(0, len(order), self.batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="scoring", unit="batch", disable=not progress):
                idx = order[start : start + self.batch_size]
                width = max(len(encoded[i]) for i in idx)
                ids = torch.full((len(idx), width), pad, dtype=torch.long)
                mask = torch.zeros((len(idx), width), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : len(encoded[i])] = torch.tensor(encoded[i])
                    mask[row, : len(encoded[i])] = 1
                logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.squeeze(-1)
                for row, i in enumerate(idx):
                    scores[i] = float(logits[row])
        return scores

    def close(self) -> None:
        """Stop the sandbox that runs the examples, if this reranker started one."""
        if self.examples is not None:
            self.examples.close()

    def score(self, problem: Problem, candidates: Sequence[str]) -> list[float]:
        """One score per candidate completion of ``problem`` (higher is better)."""
        return self.score_texts([problem.prompt] * len(candidates), list(candidates))

    def score_problems(self, items: Sequence[tuple[Problem, Sequence[str]]], *, progress: bool = False) -> list[list[float]]:
        """`score` for many problems at once, batching across problems."""
        prompts, completions, sizes = [], [], []
        for problem, candidates in items:
            prompts += [problem.prompt] * len(candidates)
            completions += list(candidates)
            sizes.append(len(candidates))
        flat = self.score_texts(prompts, completions, progress=progress)
        out, start = [], 0
        for n in sizes:
            out.append(flat[start : start + n])
            start += n
        return out
