"""The starter model: a tiny Llama trained offline on the synthetic reference split.

No weights can be downloaded here, so itercode builds its own round-0 model:
a byte-level BPE tokenizer (``tokenizers``) and a few-million-parameter
``LlamaForCausalLM`` (``transformers``), trained with a plain torch loop on
prompt + canonical solution of the reference split, saved with
``save_pretrained`` so that transformers, vLLM and TRL all load it from the path.

Design choices that matter downstream:

- The tokenizer isolates every newline before byte-level BPE, so a prompt that
  ends in "\\n" tokenizes the same whether or not a completion follows. Training
  (prompt and completion tokenized together, as TRL does), HF generate and vLLM
  therefore all see the same token boundary.
- The loss is on the completion only (the solution and the end-of-text token),
  as in ordinary SFT: the model learns to write code, not docstrings.
- Everything is seeded and runs single-process on the CPU in float32, so the
  same seed and thread count give the same weights.

>>> # build_starter("models/starter", quick=True)  # seconds; tests use this
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

import codegen.problems
import codegen.synthetic
import codegen.synthetic_pipelines
from codegen.hardware import torch_threads
from codegen.io import atomic_dir, publish_dir, write_json_atomic
from codegen.synthetic import load_split

EOS = "<|endoftext|>"


@dataclass(frozen=True)
class StarterConfig:
    """Size and training budget of a starter build."""

    vocab_size: int = 1024
    hidden_size: int = 128
    intermediate_size: int = 384
    num_layers: int = 4
    num_heads: int = 2  # head_dim 64: a size vLLM's CPU attention supports
    max_positions: int = 1024
    # ~16 epochs of the 1000 references: enough to compose steps, short of
    # memorising them (which kills sampling diversity), under 10 min on 2 cores.
    steps: int = 1000
    batch_size: int = 16
    lr: float = 3e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01


FULL = StarterConfig()
# Seconds on 2 cores, yet enough steps that greedy output is plausible Python.
QUICK = StarterConfig(
    vocab_size=512, hidden_size=64, intermediate_size=192, num_layers=2, num_heads=2,
    max_positions=512, steps=300, batch_size=16, lr=5e-3, warmup_steps=10,
)


def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer (HF fast tokenizer) whose only special token is EOS."""
    # heavy: tokenizers and transformers load only when a starter is built
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # A newline is always its own pre-token: see the module docstring.
        pre_tokenizers.Split(Regex(r"\n"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=None,
    )


def _examples(tokenizer, problems, max_len: int):
    """(input_ids, labels) per problem; labels mask the prompt with -100."""
    out = []
    for p in problems:
        prompt_ids = tokenizer(p.prompt, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(p.prompt + p.canonical_solution, add_special_tokens=False)["input_ids"]
        # The newline-isolating pre-tokenizer makes the prompt a strict prefix.
        assert full_ids[: len(prompt_ids)] == prompt_ids, p.task_id
        ids = full_ids + [tokenizer.eos_token_id]
        if len(ids) > max_len:
            continue
        labels = [-100] * len(prompt_ids) + ids[len(prompt_ids):]
        out.append((ids, labels))
    return out


def _batches(examples, batch_size: int, steps: int, generator, pad_id: int):
    """``steps`` padded batches, shuffling the examples each epoch."""
    import torch  # heavy: only when a starter is built

    if not examples:
        raise ValueError("no training examples: nothing fits the context, or the data set is empty")
    batch_size = min(batch_size, len(examples))  # else no full batch exists and this never ends
    step = 0
    while True:
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order) - batch_size + 1, batch_size):
            chunk = [examples[i] for i in order[start:start + batch_size]]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, (x, y) in enumerate(chunk):
                ids[row, : len(x)] = torch.tensor(x)
                labels[row, : len(y)] = torch.tensor(y)
                mask[row, : len(x)] = 1
            yield ids, labels, mask
            step += 1
            if step >= steps:
                return


def build_starter(out_dir, seed: int = 0, quick: bool = False, *, family_seed: int = 0,
                  progress: bool = True, config: StarterConfig | None = None,
                  device: str = "cpu", threads: int | None = None) -> Path:
    """Train the tokenizer and the tiny Llama; save both to ``out_dir`` (HF format).

    ``seed`` drives initialisation and data order (same seed, same weights);
    ``family_seed`` picks the synthetic family whose reference split is the
    training data (0: the splits that ``synthetic:heldout`` evaluates on).
    ``quick`` builds a smaller model in seconds, for tests. ``device`` may be
    "cuda" where one exists (same recipe, faster; bit-identical rebuilds are
    promised on the CPU only, for a fixed thread count: where MKL splits a
    weight gradient's sum over the threads, as on AVX-512 CPUs, one thread
    and two differ in the last bits). ``threads`` sets torch's CPU threads
    (default 1: these small matrices gain little from more threads, and on a
    busy 2-core machine two threads ran 10x slower than one, each step waiting
    for both to be scheduled). The directory is written elsewhere and
    renamed into place, so it is never half-written. Returns ``out_dir``.
    """
    cfg = config or (QUICK if quick else FULL)
    with torch_threads(1 if threads is None else threads):
        return _build(Path(out_dir), seed, quick, family_seed, progress, cfg, device)


def _build(out_dir: Path, seed: int, quick: bool, family_seed: int, progress: bool,
           cfg: StarterConfig, device: str) -> Path:
    # heavy: torch and transformers load only when a starter is built
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    started = time.time()
    torch.manual_seed(seed)

    problems = load_split("reference", seed=family_seed)
    tokenizer = train_tokenizer([p.prompt + p.canonical_solution for p in problems], cfg.vocab_size)
    examples = _examples(tokenizer, problems, cfg.max_positions)

    model_config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(model_config).to(device)
    model.train()

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay,
                                  betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    generator = torch.Generator().manual_seed(seed)
    batches = _batches(examples, cfg.batch_size, cfg.steps, generator, tokenizer.pad_token_id)
    losses = []
    bar = tqdm(batches, total=cfg.steps, desc="training starter", disable=not progress, unit="step")
    for ids, labels, mask in bar:
        ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    model.eval()
    model.to("cpu")

    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    info = {
        "seed": seed,
        "family_seed": family_seed,
        "quick": quick,
        "device": device,
        "threads": torch.get_num_threads(),
        "config": asdict(cfg),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_examples": len(examples),
        "final_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "train_seconds": round(time.time() - started, 1),
    }
    with atomic_dir(out_dir) as tmp:  # a reader never sees half a model
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        write_json_atomic(tmp / "starter_info.json", info)
    return out_dir


def build_key(seed: int = 0, quick: bool = False, family_seed: int = 0) -> str:
    """A short hash of everything that determines a build's weights.

    The code of the builder and of the task family, the library versions and
    the arguments: two builds with the same key are the same model.
    """
    h = hashlib.sha256()
    for module in (codegen.problems, codegen.synthetic, codegen.synthetic_pipelines):
        h.update(Path(module.__file__).read_bytes())
    h.update(Path(__file__).read_bytes())
    for dist in ("torch", "transformers", "tokenizers"):
        h.update(f"{dist}={importlib.metadata.version(dist)};".encode())
    h.update(f"seed={seed};quick={quick};family_seed={family_seed}".encode())
    return h.hexdigest()[:16]


def cached_starter(cache_root, seed: int = 0, quick: bool = False, *, family_seed: int = 0,
                   progress: bool = True) -> Path:
    """``cache_root/<build_key>``, built with `build_starter` only if missing.

    Lets test sessions and demos that run one after another share one build
    (a quick build is a minute of CPU on a busy 2-core machine). Concurrent
    callers may both build; the first to finish publishes, the other's copy is
    discarded, and both return the same deterministic model.
    """
    root = Path(cache_root)
    final = root / build_key(seed, quick, family_seed)
    if (final / "starter_info.json").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build.", dir=root))
    try:
        built = build_starter(staging / "model", seed=seed, quick=quick, family_seed=family_seed, progress=progress)
        publish_dir(built, final)  # if another process published first, theirs is the same model
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final
