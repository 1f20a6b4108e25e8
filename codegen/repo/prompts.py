"""RLCoder's prompts: retrieved blocks and the in-file context under one token budget.

Each block reads as ``# <path>`` and its text, the most useful one last
(nearest the cursor); then ``# <the file's path>`` and the context, cut on
the left at a line boundary. A block that does not fit keeps a window of
whole lines around the line that shares the most words with the context's
last lines (`focus_of`), so the line worth copying survives the cut.
`token_weights` is RLCoder's weighting of the target's tokens.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

from codegen.repo.tasks import Task, words

_IDENT = re.compile(r"[A-Za-z0-9_]")


def block_piece(block: dict[str, Any]) -> str:
    """How one retrieved block reads in the prompt."""
    return f"# {block['path']}\n{block['text']}\n"


class PromptBuilder:
    """Token ids of prompts and targets under a shared budget (tokenizations cached per text)."""

    def __init__(self, tokenizer, budget: int, block_budget: int, target_tokens: int):
        self.tok = tokenizer
        self.budget, self.block_budget, self.target_tokens = budget, block_budget, target_tokens
        self._cache: dict[str, list[int]] = {}
        self.newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]

    def ids(self, text: str) -> list[int]:
        if text not in self._cache:
            if len(self._cache) > 200_000:
                self._cache.clear()
            self._cache[text] = self.tok(text, add_special_tokens=False)["input_ids"]
        return self._cache[text]

    def tail_ids(self, text: str, room: int) -> list[int]:
        """The ids of ``text``'s last whole lines, at least ``room`` tokens of them when the text has that many.

        Tokenizing a long file prefix whole to keep its last few hundred tokens
        is what made building prompts slow; newlines are tokens of their own, so
        a tail cut at a line start tokenizes as the end of the whole does.
        """
        chars = max(64, 8 * room)
        while True:
            if chars >= len(text):
                return self.ids(text)
            tail = text[len(text) - chars:]
            tail = tail[tail.find("\n") + 1:] if "\n" in tail else tail
            ids = self.ids(tail)
            if len(ids) > room:
                return ids
            chars *= 2

    def blocks(self, blocks: Sequence[dict[str, Any]], focus: str = "") -> list[int]:
        """The blocks' ids, in order, within ``block_budget``.

        The budget goes to the *last* block first (the most useful one, nearest
        the cursor), then to the ones before it: a less useful block never
        crowds out a better one. A block that does not fit whole keeps a window
        of its lines (`block_window`) around the line that best matches
        ``focus`` (the in-file context's last lines), so the lines worth copying
        survive the cut; one with no room for its header and a line is left out.
        """
        pieces: list[list[int]] = [[] for _ in blocks]
        room = self.block_budget
        for i in reversed(range(len(blocks))):
            pieces[i] = self.block_window(blocks[i], room, focus)
            room -= len(pieces[i])
        return [t for p in pieces for t in p]

    def block_window(self, block: dict[str, Any], room: int, focus: str = "") -> list[int]:
        """One block's ids within ``room`` tokens: whole, or its header and a window of whole lines.

        The window starts one line above the line sharing the most words with
        ``focus`` (its last line counts double) and runs down as far as room
        allows, then up; with no shared word it is the block's first lines (a
        definition's signature comes first).
        """
        whole = self.ids(block_piece(block))
        if len(whole) <= room:
            return whole
        header = self.ids(f"# {block['path']}\n")
        lines = block["text"].split("\n")
        cost = [len(self.ids(line + "\n")) for line in lines]
        if room - len(header) < min(cost, default=room + 1):
            return []
        lo = max(0, _anchor_line(lines, focus) - 1)
        hi, used = lo, 0
        while hi < len(lines) and used + cost[hi] <= room - len(header):
            used += cost[hi]
            hi += 1
        while lo > 0 and used + cost[lo - 1] <= room - len(header):
            lo -= 1
            used += cost[lo]
        if hi == lo:  # the anchor's line alone is longer than the room
            return []
        ids = self.ids(f"# {block['path']}\n" + "\n".join(lines[lo:hi]) + "\n")
        while len(ids) > room and hi - lo > 1:  # lines tokenize a little differently together: trim the end
            hi -= 1
            ids = self.ids(f"# {block['path']}\n" + "\n".join(lines[lo:hi]) + "\n")
        return ids if len(ids) <= room else []

    def prompt(self, task: Task, blocks: Sequence[dict[str, Any]] = (), focus: str | None = None
               ) -> tuple[list[int], int]:
        """``(prompt ids, retrieved-block tokens)``: the blocks, the file header, the context's end.

        ``focus`` (default: the context's last lines) is what a long block's window is cut around.
        """
        block_ids = self.blocks(blocks, focus_of(task.context) if focus is None else focus)
        header = self.ids(f"# {task.path}\n")
        room = max(0, self.budget - len(block_ids) - len(header))
        context = self.tail_ids(task.context, room)
        if len(context) > room:
            cut = context[len(context) - room:]
            # start at a line boundary: drop the partial first line
            first_nl = next((i for i, t in enumerate(cut) if t == self.newline), len(cut) - 1)
            context = cut[first_nl + 1:]
        return block_ids + header + context, len(block_ids)

    def target(self, task: Task) -> list[int]:
        return self.ids(task.target)[: self.target_tokens]


# Words too common in Python to say which line of a block matters.
_COMMON = frozenset("self cls def return if else elif for in not and or is none true false import from as "
                    "class with try except raise pass lambda yield the".split())


def focus_of(context: str, lines: int = 3) -> str:
    """What a block's window should match: the in-file context's last ``lines`` non-blank lines."""
    return "\n".join([ln for ln in context.splitlines() if ln.strip()][-lines:])


def _anchor_line(lines: Sequence[str], focus: str) -> int:
    """The index of the line sharing the most words with ``focus`` (its last line counts double); 0 if none."""
    focus_lines = focus.splitlines()
    last = {w for w in words(focus_lines[-1])} - _COMMON if focus_lines else set()
    every = {w for w in words(focus)} - _COMMON
    best, best_score = 0, 0
    for i, line in enumerate(lines):
        ws = set(words(line))
        score = 2 * len(ws & last) + len(ws & every)
        if score > best_score:
            best, best_score = i, score
    return best


def token_weights(tokenizer, ids: Sequence[int]) -> list[float]:
    """RLCoder's weighting of the target: the first token and identifier tokens count double."""
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    out = []
    for i, piece in enumerate(pieces):
        w = 1.0 + (1.0 if _IDENT.search(piece or "") else 0.0)
        out.append(w + (1.0 if i == 0 else 0.0))
    return out
