"""The RLCoder retriever: a small bi-encoder with a BM25 prior and a learned stop block.

Why not sentence-transformers here: no pretrained encoder can be downloaded
on these machines, and a transformer encoder trained from scratch on a few
thousand labels learns less than a bag of identifier embeddings does. So the
encoder is a mean of hashed identifier-word embeddings (`codegen.repo.tasks.words`:
whole identifiers and their parts, the same words BM25 sees) with a linear
map for queries and one for blocks; a candidate's score is

    scale * (sim * cos(q, b) + w . features(query, block))

where the features are what generalises to repositories never seen (BM25's
score relative to the task's best, the share of the last line's words in the
block, whether the block defines a name used in the last lines, same
directory) and, with ``copy_features``, how closely one of the block's lines
matches the context's last line (`copy_match`): the small generator gains
from a block mostly by copying the line that follows such a match. At
initialisation ``w`` gives BM25's order (near copies raised among it, with
``copy_features``), so training starts from the baseline and moves only where
the generator's losses say so. With ``init="copy_rule"`` (needs ``copy_features``)
it starts as the copy rule instead: the near copy if there is one, else stop.

The stop block is one more candidate whose score is ``scale * (sim * cos(q, s) +
a * log(1 + best BM25) + c)`` with a learned vector ``s``: it learns when no
block lowers the generator's loss. At inference only blocks ranked above it
are used (`Retriever.select`), its score raised by the run's ``stop_bias``.

The query is the context's last lines, as for BM25 (`codegen.repo.tasks.query_of`).
"""
from __future__ import annotations

import json
import math
import random
import re
import zlib
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any, Sequence

from codegen.errors import UserError
from codegen.io import atomic_dir, write_json_atomic
from codegen.repo.tasks import Task, query_of, words

STOP = "<stop>"  # the stop block's id in rankings
COPY_MATCH = 0.8  # a copy_match at least this is a near-copy of the last line (the second copy feature)
COPY_PRIOR = [2.0, 2.0]  # the copy features' initial weights: a near copy scores about as BM25's best does
# init "copy_rule": the copy features' weights and the stop block's constant that make a new retriever pick as
# `loops.rlcoder.copy_rule` does: a near copy scores at least 6 + 1.6 and so above stop (7), any other block at
# most 4 + 1 + 1.6 and so below it (give or take the embedding similarities, near 0 before training)
RULE_PRIOR = {"copy": [2.0, 6.0], "stop_c": 7.0}
INITS = ("bm25", "copy_rule")
_DEF = re.compile(r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_][A-Za-z0-9_]*)", re.M)


# what `train_retriever(features_only=True)` trains: the weights of `features` (the same meaning in every
# project) and the stop block's constants
FEATURE_PARAMS = ("w", "stop_a", "stop_c")


def bag(text: str, buckets: int) -> list[int]:
    """The hashed word ids of ``text`` (crc32: the same in every process, unlike hash())."""
    return [zlib.crc32(w.encode()) % buckets for w in words(text)] or [0]


def copy_match(context: str, block: str) -> float:
    """How closely (0..1, difflib's ratio) a line of ``block`` that has a next line matches the context's last line.

    A block holding the context's last line, or one like it, shows the generator a line to copy next:
    on retriever-training tasks the best candidate by this measure lifted the generated line's edit
    similarity where BM25's best lowered it.
    """
    # the last non-blank line, read from the end: the context is a whole file's prefix, and this runs per candidate
    last = context.rstrip().rsplit("\n", 1)[-1].strip()
    if not last:
        return 0.0
    lines = [ln.strip() for ln in block.splitlines()]
    m = SequenceMatcher(None, autojunk=False)
    m.set_seq2(last)  # SequenceMatcher caches what it learns about its second sequence
    best = 0.0
    for line, following in zip(lines, lines[1:]):
        if not line or not following:
            continue
        m.set_seq1(line)
        if m.real_quick_ratio() > best and m.quick_ratio() > best:  # cheap upper bounds first
            best = max(best, m.ratio())
    return best


def features(task: Task, cand: dict[str, Any], rank: int, best_bm25: float, copy: bool = False) -> list[float]:
    """What the score learns from beside the embeddings; each in about 0..1 (two more with ``copy``)."""
    last_lines = "\n".join(task.context.splitlines()[-3:])
    last_words = set(words(task.context.splitlines()[-1] if task.context.strip() else ""))
    block_words = set(words(cand["text"]))
    defined = set(_DEF.findall(cand["text"]))
    used = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", last_lines))
    same_dir = float(Path(cand["path"]).parent == Path(task.path).parent)
    return [
        cand.get("bm25", 0.0) / best_bm25 if best_bm25 > 0 else 0.0,
        len(last_words & block_words) / max(1, len(last_words)),
        float(bool(defined & used)),
        same_dir,
        1.0 / (1 + rank),
    ] + (_copy_features(task.context, cand["text"]) if copy else [])


def _copy_features(context: str, block: str) -> list[float]:
    match = copy_match(context, block)
    return [match, float(match >= COPY_MATCH)]


class Retriever:
    """The model (torch) and what it needs to rank a task's candidates. Build with `Retriever.new` or `load`."""

    def __init__(self, net, settings: dict[str, Any]):
        self.net = net
        self.settings = settings

    @classmethod
    def new(cls, *, dim: int = 64, buckets: int = 1 << 15, scale: float = 2.0, query_lines: int = 10,
            copy_features: bool = False, init: str = "bm25", seed: int = 0) -> "Retriever":
        import torch  # heavy: only when a retriever runs

        if init not in INITS or (init == "copy_rule" and not copy_features):
            raise ValueError(f"init must be one of {INITS} (copy_rule with copy_features), got {init!r}")
        torch.manual_seed(seed)
        settings = {"dim": dim, "buckets": buckets, "scale": scale, "query_lines": query_lines,
                    "copy_features": copy_features, "init": init}
        return cls(_net(settings), settings)

    # ----- scoring
    def _inputs(self, task: Task, cands: Sequence[dict[str, Any]]):
        best = max((c.get("bm25", 0.0) for c in task.candidates), default=0.0)
        ranks = {c["id"]: i for i, c in enumerate(task.candidates)}
        q = bag(query_of(task.context, self.settings["query_lines"]), self.settings["buckets"])
        blocks = [bag(c["text"], self.settings["buckets"]) for c in cands]
        copy = self.settings.get("copy_features", False)  # retrievers saved before the key had none
        feats = [features(task, c, ranks.get(c["id"], len(ranks)), best, copy) for c in cands]
        return q, blocks, feats, math.log1p(best)

    def scores(self, task: Task, cands: Sequence[dict[str, Any]]):
        """A tensor of len(cands) + 1 scores: each candidate's, then the stop block's."""
        return self.net(*self._inputs(task, cands))

    def rank(self, task: Task, cands: Sequence[dict[str, Any]] | None = None, stop_bias: float = 0.0) -> list[str]:
        """Candidate ids (and `STOP`, its score raised by ``stop_bias``) best first."""
        import torch  # heavy: only when a retriever runs

        cands = list(task.candidates if cands is None else cands)
        with torch.no_grad():
            s = self.scores(task, cands).tolist()
        s[-1] += stop_bias
        ids = [c["id"] for c in cands] + [STOP]
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-s[i], i))]

    def select(self, task: Task, k: int, use_stop: bool = True,
               stop_bias: float | None = None) -> list[dict[str, Any]]:
        """The blocks to put in the prompt: the top ``k``, cut at the stop block when ``use_stop``.

        ``stop_bias`` (None: the retriever's own, ``settings["stop_bias"]``, 0 unless a run set it) raises
        the stop block's score before it cuts: a retriever trained on labels from one generator may ask for
        blocks more often than they pay, and how much more is a choice made on validation.
        """
        bias = self.settings.get("stop_bias", 0.0) if stop_bias is None else stop_bias
        by_id = {c["id"]: c for c in task.candidates}
        out = []
        for cid in self.rank(task, stop_bias=bias):  # without use_stop the stop block is skipped, biased or not
            if cid == STOP:
                if use_stop:
                    break
                continue
            out.append(by_id[cid])
            if len(out) >= k:
                break
        return out

    # ----- persistence
    def save(self, out_dir: str | Path, info: dict[str, Any] | None = None) -> Path:
        import torch  # heavy: only when a retriever runs

        with atomic_dir(out_dir) as tmp:
            torch.save(self.net.state_dict(), tmp / "retriever.pt")
            write_json_atomic(tmp / "retriever.json", {"settings": self.settings, "info": info or {}})
        return Path(out_dir)

    @classmethod
    def load(cls, path: str | Path) -> "Retriever":
        import torch  # heavy: only when a retriever runs

        p = Path(path)
        if not (p / "retriever.json").is_file():
            raise UserError(f"{str(p)!r} holds no retriever (retriever.json); give the retriever directory of a "
                            "finished `itercode loop rlcoder` run (runs/NAME/round-K/retriever)")
        settings = json.loads((p / "retriever.json").read_text())["settings"]
        net = _net(settings)
        net.load_state_dict(torch.load(p / "retriever.pt", weights_only=True))
        net.eval()
        return cls(net, settings)


def _net(settings: dict[str, Any]):
    """The torch module (built here so that torch loads only when a retriever is used)."""
    # heavy: torch loads only when a retriever is used
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            d = settings["dim"]
            self.emb = nn.EmbeddingBag(settings["buckets"], d, mode="mean")
            nn.init.normal_(self.emb.weight, std=0.1)
            self.q = nn.Linear(d, d)
            self.b = nn.Linear(d, d)
            # BM25's order, with a near copy of the context's last line put near the top: the labels of
            # round 1 come from this ranking's top (RLCoder labels what its retriever retrieves), so a prior of
            # 0 would leave the near copies BM25 ranks low unlabelled, and so unlearnt.
            rule = settings.get("init", "bm25") == "copy_rule"  # retrievers saved before the key: bm25
            copy = (RULE_PRIOR["copy"] if rule else COPY_PRIOR) if settings.get("copy_features", False) else []
            self.w = nn.Parameter(torch.tensor([4.0, 0.0, 0.0, 0.0, 1.0] + copy))
            self.stop = nn.Parameter(torch.zeros(d))
            self.stop_a = nn.Parameter(torch.tensor(0.0))
            # bm25: below every block at first (they score >= -1), so stop never cuts; copy_rule: see RULE_PRIOR
            self.stop_c = nn.Parameter(torch.tensor(RULE_PRIOR["stop_c"] if rule else -3.0))
            # The similarity's weight is learned, from small: a random encoder must not reorder BM25's ranking.
            self.sim = nn.Parameter(torch.tensor(1.0))
            self.scale = settings["scale"]  # multiplies the whole score: the softmax temperature

        def _embed(self, bags: list[list[int]]):
            flat = torch.tensor([i for b in bags for i in b], dtype=torch.long)
            offsets = torch.tensor([0] + [len(b) for b in bags[:-1]], dtype=torch.long).cumsum(0)
            return self.emb(flat, offsets)

        def forward(self, q_bag, block_bags, feats, log_best):
            q = nn.functional.normalize(self.q(self._embed([q_bag])), dim=-1)[0]
            parts = []
            if block_bags:
                b = nn.functional.normalize(self.b(self._embed(block_bags)), dim=-1)
                parts.append(self.sim * (b @ q) + torch.tensor(feats, dtype=torch.float32) @ self.w)
            stop_dir = nn.functional.normalize(self.stop + 1e-6, dim=0)
            stop = self.sim * (stop_dir @ q) + self.stop_a * log_best + self.stop_c
            parts.append(stop.reshape(1))
            return self.scale * torch.cat(parts)

    return Net()


def train_retriever(retriever: Retriever, examples: Sequence[tuple[Task, list[dict[str, Any]], Any]], *,
                    epochs: int = 3, lr: float = 3e-3, seed: int = 0, objective: str = "label",
                    features_only: bool = False) -> list[float]:
    """Train ``retriever`` in place on each example's scores (candidates then stop); returns each epoch's mean loss.

    ``examples``: ``(task, candidates, label)``. With ``objective="label"`` the loss is cross-entropy and the
    label an index (``len(cands)`` is stop) or a distribution over the candidates then stop. With
    ``objective="gain"`` the label is each choice's gain (candidates then stop) and the loss is minus the
    expected gain of the retriever's softmax choice: a mean over tasks, where the best of a few noisy gains
    (the hard label) is biased toward blocks that won by chance. ``features_only`` trains the weights of the
    features and the stop block's constants alone (`FEATURE_PARAMS`), never the word embeddings, whose
    words are the training projects' own.
    """
    import torch  # heavy: only when a retriever runs

    rng = random.Random(seed)
    torch.manual_seed(seed)
    net = retriever.net
    net.train()
    opt = torch.optim.Adam([p for name, p in net.named_parameters() if not features_only or name in FEATURE_PARAMS],
                           lr=lr)
    inputs = [(retriever._inputs(task, cands), label) for task, cands, label in examples]
    history = []
    for _ in range(epochs):
        order = list(range(len(inputs)))
        rng.shuffle(order)
        total = 0.0
        for i in order:
            (q, blocks, feats, log_best), label = inputs[i]
            s = net(q, blocks, feats, log_best)
            if objective == "gain":
                loss = -(torch.softmax(s, 0) @ torch.tensor(label, dtype=torch.float32))
            else:
                target = torch.tensor([label], dtype=torch.long if isinstance(label, int) else torch.float32)
                loss = torch.nn.functional.cross_entropy(s.unsqueeze(0), target)
            loss.backward()
            opt.step()
            net.zero_grad(set_to_none=True)  # every parameter's: with features_only, the frozen ones' would pile up
            total += loss.item()
        history.append(total / max(1, len(inputs)))
    net.eval()
    return history
