"""The code generator of RLCoder: a small Llama that completes a file with retrieved blocks in its prompt.

No pretrained code model can be downloaded here, so the generator is trained
from scratch on the generator-training repositories, the way
`codegen.starter` builds its model: a byte-level BPE tokenizer (newlines
isolated, so prompts and targets tokenize the same apart as together) and a
``LlamaForCausalLM`` from a config, trained with a plain torch loop.

The prompt (`codegen.repo.prompts.PromptBuilder`): each retrieved block
under a ``# path`` header, the most useful one last (nearest the cursor),
then ``# <the file's path>`` and the in-file context, cut on the left at a
line boundary. Blocks and context share one token budget, as in RLCoder: a
block costs context.

Why the generator can copy at all: before anything else it trains on copy
drills (`copy_drills`: code lines, other lines, the first ones again), at a
learning rate low enough for the copying (induction) mechanism to form; from
scratch, code alone does not teach it in the steps there are.

Why the generator learns to use blocks: its training prompts carry blocks
found by BM25 with the *target* in the query (`make_tasks(...,
hint=True)`), so the block usually holds the names the next line
needs, and copying from it pays; some prompts carry BM25's ordinary block or
a random one, so it also learns that a block may be useless; half of them
carry a second, random block before the first (evaluation uses up to two).
The loss covers the in-file context and the target, never the blocks, and
weighs the target's tokens ``target_weight`` times more (the context's many
tokens would otherwise drown the few where a block helps).

`target_losses` is what labels the retriever: the weighted loss on the target
(the first token and identifier tokens weigh more, as in RLCoder) with each
candidate block in the prompt. `complete_lines` decodes greedily to the end
of the first line.
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from codegen.hardware import torch_threads
from codegen.io import atomic_dir, write_json_atomic
from codegen.repo.corpus import python_files
from codegen.repo.prompts import PromptBuilder, focus_of, token_weights
from codegen.repo.tasks import Task
from codegen.starter import train_tokenizer



@dataclass(frozen=True)
class GeneratorConfig:
    """Size, prompt budget and training budget of the generator."""

    vocab_size: int = 4096
    hidden_size: int = 192
    intermediate_size: int = 512
    num_layers: int = 4
    num_heads: int = 3  # head_dim 64
    budget: int = 320  # prompt tokens: retrieved blocks and in-file context together
    block_budget: int = 160  # the most the blocks may take of it
    target_tokens: int = 32  # the target's tokens scored and trained on
    steps: int = 1200
    batch_size: int = 8
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.01
    # share of training prompts with: a block found with the target in the query; BM25's top
    # block (context-only query); a random candidate; the rest have none
    p_hint: float = 0.5
    p_bm25: float = 0.2
    p_random: float = 0.1
    p_second: float = 0.5  # of prompts with a block: a second, random one before it
    # a task whose hint holds the target's first line (a real cross-file copy) gets its hint this
    # often, and appears copy_repeat times among the training examples: copying is the skill to learn
    p_copy: float = 0.9
    copy_repeat: int = 1
    # of the other tasks, this share gets a *self-copy* block: the context's last lines and the target, as
    # a block of the same file. Cross-file copies are rare (about 1 task in 8), too rare for a model trained
    # from scratch to learn to copy at all; these teach the mechanism (match the context's end, copy what follows)
    p_self: float = 0.0
    target_weight: float = 4.0  # the training loss weighs the target's tokens this much more than the context's
    # *copy drills* (`copy_drills`: a few code lines, other lines, the first ones again; only the repeat
    # is scored) teach the model to copy what its prompt already holds, the skill a retrieved block is
    # useless without. From scratch it does not come from code alone in the minutes there are (see
    # docs/rlcoder.md): first drill_steps steps of drills alone, at drill_lr (at 3e-3 it had not formed
    # after 1,500 steps of drills), then p_drill of the training examples stay drills so it is kept
    drill_steps: int = 0
    drill_lr: float = 5e-4
    p_drill: float = 0.0


TINY = GeneratorConfig(vocab_size=600, hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2,
                       budget=160, block_budget=80, target_tokens=16, steps=30, batch_size=4, lr=5e-3,
                       warmup_steps=5)


# ----------------------------------------------------------------------------- model
def load_generator(path: str | Path, device: str = "cpu"):
    """``(model, tokenizer)`` from a directory `train_generator` wrote (or any causal LM path), on ``device``."""
    # heavy: transformers loads only when a generator is used
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype="float32").to(device)
    model.eval()
    return model, tok


def _pad(rows: list[list[int]], pad: int, left: bool = False):
    import torch  # heavy: only when a generator runs

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if left:
            ids[i, width - len(r):] = torch.tensor(r)
            mask[i, width - len(r):] = 1
        else:
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
    return ids, mask


def sequence_losses(model, prompts: list[list[int]], targets: list[list[int]], weights: list[list[float]] | None,
                    pad: int, batch_size: int = 16) -> list[float]:
    """Per sequence, the (weighted) mean negative log-likelihood of ``target`` after ``prompt``."""
    import torch  # heavy: only when a generator runs

    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]) + len(targets[i]))  # less padding
    result: dict[int, float] = {}
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            rows = [prompts[i] + targets[i] for i in idx]
            ids, mask = (x.to(model.device) for x in _pad(rows, pad))
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
            for j, i in enumerate(idx):
                p, t = len(prompts[i]), targets[i]
                if not t:
                    result[i] = 0.0
                    continue
                pos = torch.arange(p - 1, p - 1 + len(t), device=model.device)
                nll = -logp[j, pos, torch.tensor(t, device=model.device)]
                w = torch.tensor(weights[i] if weights else [1.0] * len(t), device=model.device)
                result[i] = float((nll * w).sum() / w.sum())
    return [result[i] for i in range(len(prompts))]


def target_losses(model, builder: PromptBuilder, task: Task, block_sets: Sequence[Sequence[dict[str, Any]]],
                  weighted: bool = True, batch_size: int = 16) -> list[float]:
    """The target's loss with each block set in the prompt (``[]`` = no block), in order."""
    target = builder.target(task)
    weights = token_weights(builder.tok, target) if weighted else None
    prompts = [builder.prompt(task, bs)[0] for bs in block_sets]
    return sequence_losses(model, prompts, [target] * len(prompts), [weights] * len(prompts) if weights else None,
                           builder.tok.pad_token_id, batch_size)


def complete_lines(model, builder: PromptBuilder, prompts: list[list[int]], max_new_tokens: int = 24,
                   batch_size: int = 16) -> list[str]:
    """Greedy completion of each prompt up to the end of its first line (the line, without "\\n")."""
    return [lines[0] for lines in _first_lines(model, builder, prompts, max_new_tokens, batch_size, do_sample=False)]


def sample_lines(model, builder: PromptBuilder, prompts: list[list[int]], n: int, temperature: float,
                 max_new_tokens: int = 24, seed: int = 0, batch_size: int = 16) -> list[list[str]]:
    """``n`` first lines sampled at ``temperature`` for each prompt (seeded: the same lines on a rerun)."""
    import torch  # heavy: only when a generator runs

    torch.manual_seed(seed)
    return _first_lines(model, builder, prompts, max_new_tokens, max(1, batch_size // n), do_sample=True,
                        temperature=temperature, top_k=0, num_return_sequences=n)


def _first_lines(model, builder: PromptBuilder, prompts: list[list[int]], max_new_tokens: int, batch_size: int,
                 **generate) -> list[list[str]]:
    """Each prompt's generated first lines (``num_return_sequences`` of them, default 1), in prompt order."""
    import torch  # heavy: only when a generator runs

    n = generate.get("num_return_sequences", 1)
    out: list[list[str]] = [[] for _ in prompts]
    tok = builder.tok
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    with torch.no_grad():
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            ids, mask = (x.to(model.device) for x in _pad([prompts[i] for i in idx], tok.pad_token_id, left=True))
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 eos_token_id=[tok.eos_token_id, builder.newline], pad_token_id=tok.pad_token_id,
                                 **generate)
            for j, row in enumerate(gen):  # a prompt's n sequences are consecutive rows
                new = row[ids.shape[1]:].tolist()
                out[idx[j // n]].append(tok.decode(new, skip_special_tokens=True).split("\n", 1)[0])
    return out


# ----------------------------------------------------------------------------- training
def _batches(examples, cfg: GeneratorConfig, seed: int, pad_id: int):
    """``cfg.steps`` padded batches ``(ids, labels, mask, weights)``, reshuffled each epoch.

    ``weights`` is ``cfg.target_weight`` on the target's tokens, 1 on the
    context's and 0 where there is no label: the target is where a block
    helps, and the context's many tokens would otherwise drown it.
    """
    import torch  # heavy: only when a generator is trained

    if not examples:
        raise ValueError("no training examples: the generator split gave no task; check its repositories")
    gen = torch.Generator().manual_seed(seed)
    size = min(cfg.batch_size, len(examples))
    step = 0
    while True:
        order = torch.randperm(len(examples), generator=gen).tolist()
        for start in range(0, len(order) - size + 1, size):
            chunk = [examples[i] for i in order[start:start + size]]
            width = max(len(ids) for ids, _, _ in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            weights = torch.zeros((len(chunk), width))
            for row, (x, y, n_target) in enumerate(chunk):
                ids[row, : len(x)] = torch.tensor(x)
                labels[row, : len(y)] = torch.tensor(y)
                mask[row, : len(x)] = 1
                weights[row, : len(x)] = torch.tensor([float(v != -100) for v in y])
                weights[row, len(x) - n_target: len(x)] *= cfg.target_weight
            yield ids, labels, mask, weights
            step += 1
            if step >= cfg.steps:
                return


def _training_blocks(task: Task, rng: random.Random, cfg: GeneratorConfig, hint: dict | None) -> list[dict]:
    """The blocks (if any) one training prompt carries: see the module docstring.

    Half the prompts with a block get a second, random candidate before it:
    evaluation prompts carry up to ``top_k`` blocks, the most useful last.
    """
    u = rng.random()
    main = None
    copyable = hint is not None and holds_target(task, hint)
    if copyable and rng.random() < cfg.p_copy:
        main = hint
    elif not copyable and cfg.p_self and rng.random() < cfg.p_self:
        main = self_copy_block(task, rng)
    elif hint is not None and u < cfg.p_hint:
        main = hint
    elif task.candidates and u < cfg.p_hint + cfg.p_bm25:
        main = task.candidates[0]
    elif task.candidates and u < cfg.p_hint + cfg.p_bm25 + cfg.p_random:
        main = rng.choice(task.candidates)
    if main is None:
        return []
    others = [c for c in task.candidates if c["id"] != main["id"]]
    if others and rng.random() < cfg.p_second:
        return [rng.choice(others), main]
    return [main]


def self_copy_block(task: Task, rng: random.Random) -> dict[str, Any]:
    """A block of the task's own file: its context's last 2-8 lines and the target (generator training only)."""
    k = rng.randint(2, 8)
    lines = task.context.splitlines()[-k:] + task.target.splitlines()
    return {"id": f"{task.path}:self", "path": task.path, "text": "\n".join(lines), "bm25": 0.0}


def holds_target(task: Task, block: dict[str, Any]) -> bool:
    """Whether ``block`` has a line equal to the target's first line (ignoring indentation)."""
    first = task.first_line.strip()
    return bool(first) and first in (ln.strip() for ln in block["text"].split("\n"))


def training_examples(builder: PromptBuilder, tasks: Sequence[Task], cfg: GeneratorConfig,
                      seed: int) -> list[tuple[list[int], list[int], int]]:
    """``(ids, labels, target length)`` per task: labels cover the in-file context and the target, not the blocks."""
    rng = random.Random(seed)
    out = []
    for task in (t for t in tasks for _ in range(cfg.copy_repeat if t.hint and holds_target(t, t.hint) else 1)):
        blocks = _training_blocks(task, rng, cfg, task.hint)
        # a copy prompt's window keeps the target's line (evaluation cuts around the context's end, which in
        # a block holding the next line is usually the line above it)
        copy = blocks and (blocks[-1] is task.hint or blocks[-1]["id"].endswith(":self"))
        focus = focus_of(task.context) + "\n" + task.first_line if copy else None
        prompt, n_block = builder.prompt(task, blocks, focus)
        target = builder.target(task)
        ids = prompt + target
        labels = [-100] * n_block + ids[n_block:]
        out.append((ids, labels, len(target)))
    return out


def code_lines(builder: PromptBuilder, texts: Iterable[str]) -> list[list[int]]:
    """The token ids of every non-blank line of ``texts`` (with its newline)."""
    return [builder.ids(line + "\n") for text in texts for line in text.split("\n") if line.strip()]


def copy_drills(n: int, lines: Sequence[list[int]], rng: random.Random) -> list[tuple[list[int], list[int], int]]:
    """``n`` copy drills ``(ids, labels, 0)``: 1-3 code lines, 1-6 others, the first ones again.

    Only the repeat is labelled (from its second token: the first cannot be
    known), and the surest way to predict it is to find its earlier copy and
    read on from there: the induction mechanism that copying a line out of a
    retrieved block needs. Real code lines, not random tokens, so that the
    skill transfers to the tokens that prompts hold.
    """
    if not lines:
        raise ValueError("copy drills need code lines: the generator split has no Python file")
    out = []
    for _ in range(n):
        start = rng.randrange(len(lines))
        span = [t for line in lines[start:start + rng.randint(1, 3)] for t in line][:32]
        other = rng.randrange(len(lines))
        filler = [t for line in lines[other:other + rng.randint(1, 6)] for t in line][:80]
        ids = span + filler + span
        out.append((ids, [-100] * (len(span) + len(filler) + 1) + span[1:], 0))
    return out


def _drill_phase(model, drills, cfg: GeneratorConfig, seed: int, pad_id: int, device: str, log) -> float:
    """``cfg.drill_steps`` steps on copy drills alone, at ``cfg.drill_lr`` (its own optimizer); the last loss."""
    import torch  # heavy: only when a generator is trained

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.drill_lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
    losses: list[float] = []
    phase = dataclasses.replace(cfg, steps=cfg.drill_steps)
    for step, (ids, labels, mask, _) in enumerate(_batches(drills, phase, seed, pad_id)):
        ids, labels, mask = (x.to(device) for x in (ids, labels, mask))
        losses.append(_optimizer_step(model, opt, model(input_ids=ids, attention_mask=mask, labels=labels).loss))
        if log and (step + 1) % max(1, cfg.drill_steps // 10) == 0:
            log(f"copy drill step {step + 1}/{cfg.drill_steps}: loss {_recent_mean(losses):.3f}")
    return _recent_mean(losses)


def _optimizer_step(model, opt, loss) -> float:
    """One clipped AdamW step on ``loss``; its value."""
    import torch  # heavy: only when a generator is trained

    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def _recent_mean(losses: Sequence[float]) -> float:
    """The mean of the last 20 losses: what the logs and generator_info.json report."""
    return sum(losses[-20:]) / max(1, len(losses[-20:]))


def train_generator(out_dir: str | Path, repos: Sequence[Path], tasks: Sequence[Task], cfg: GeneratorConfig, *,
                    seed: int = 0, threads: int | None = 1, device: str = "cpu", log=None) -> dict[str, Any]:
    """Train the tokenizer on ``repos`` and the Llama on ``tasks`` (made with ``hint=True``); save to ``out_dir``.

    Deterministic in ``seed`` on the CPU; ``device="cuda"`` trains the same
    recipe on a GPU. The directory appears whole or not
    at all. Returns the info dict it also writes to ``generator_info.json``.
    """
    with torch_threads(threads):
        return _train(Path(out_dir), repos, tasks, cfg, seed, device, log)


def _train(out_dir: Path, repos, tasks, cfg: GeneratorConfig, seed: int, device: str, log) -> dict[str, Any]:
    # heavy: torch and transformers load only when a generator is trained
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    started = time.time()
    torch.manual_seed(seed)
    texts = [t for repo in repos for t in python_files(repo).values()]  # read once: tokenizer and drills
    tok = train_tokenizer(texts, cfg.vocab_size)  # the starter's byte-level BPE, newlines isolated
    builder = PromptBuilder(tok, cfg.budget, cfg.block_budget, cfg.target_tokens)
    examples = training_examples(builder, tasks, cfg, seed)
    drill_rng = random.Random(seed + 1)
    lines = code_lines(builder, texts) if cfg.p_drill or cfg.drill_steps else []
    if cfg.p_drill:
        examples += copy_drills(round(len(examples) * cfg.p_drill / (1 - cfg.p_drill)), lines, drill_rng)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads, num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.budget + cfg.target_tokens + 64, tie_word_embeddings=True,
        bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))

    def lr_at(step: int) -> float:  # warm-up, then cosine to 10%
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    drill_loss = None
    if cfg.drill_steps:
        drills = copy_drills(cfg.drill_steps * cfg.batch_size, lines, drill_rng)
        drill_loss = _drill_phase(model, drills, cfg, seed, tok.pad_token_id, device, log)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    losses: list[float] = []
    for step, (ids, labels, mask, weights) in enumerate(_batches(examples, cfg, seed, tok.pad_token_id)):
        ids, labels, mask, weights = (x.to(device) for x in (ids, labels, mask, weights))
        # the vocabulary projection costs more than the layers at this width: apply it only where a label is
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state[:, :-1]
        keep = labels[:, 1:] != -100
        logits = model.lm_head(hidden[keep])
        nll = torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep], reduction="none")
        w = weights[:, 1:][keep]
        losses.append(_optimizer_step(model, opt, (nll * w).sum() / w.sum()))
        sched.step()
        if log and (step + 1) % max(1, cfg.steps // 10) == 0:
            log(f"generator step {step + 1}/{cfg.steps}: loss {_recent_mean(losses):.3f}")
    model.eval()
    model.to("cpu")
    model.generation_config = GenerationConfig(bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                                               pad_token_id=tok.pad_token_id)
    info = {"seed": seed, "config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
            "train_examples": len(examples), "repos": len(list(repos)),
            "final_loss": _recent_mean(losses), "drill_loss": drill_loss,
            "train_seconds": round(time.time() - started, 1)}
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        write_json_atomic(tmp / "generator_info.json", info)
    return info


def builder_for(tokenizer, cfg: GeneratorConfig | dict[str, Any]) -> PromptBuilder:
    """The `PromptBuilder` of a trained generator's config (its info file's ``config``)."""
    c = cfg if isinstance(cfg, GeneratorConfig) else GeneratorConfig(**cfg)
    return PromptBuilder(tokenizer, c.budget, c.block_budget, c.target_tokens)
