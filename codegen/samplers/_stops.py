"""Cutting a generated token sequence the way vLLM does, for backends that
generate past the end (HF pads finished rows; a batch runs to its longest row).

vLLM ends a completion at the first token that is EOS or that completes a stop
string; the returned text drops EOS and the stop string, while the token count
and log-probs include that last token. `cut_completion` reproduces this so the
HF engine reports the same text, ``num_tokens``, ``mean_logprob`` and
``finish_reason``. `first_stop` is the one stop-string search of the project
(the HF engine and the OpenAI backend cut with it).
"""
from __future__ import annotations

from typing import Callable, Sequence


def first_stop(text: str, stops: Sequence[str]) -> int:
    """Index in ``text`` of the earliest stop string, or -1."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else -1


def cut_completion(
    token_ids: Sequence[int],
    decode: Callable[[Sequence[int]], str],
    stops: Sequence[str],
    eos_ids: set[int],
) -> tuple[str, int, str]:
    """Return (text, number of tokens kept, finish reason) for one generated sequence.

    The finish reason is vLLM's: "stop" for EOS or a stop string, else "length".

    >>> ids = [1, 2, 3, 4]; table = {1: "a", 2: "\\n", 3: "def", 4: "x"}
    >>> cut_completion(ids, lambda t: "".join(table[i] for i in t), ["\\ndef"], set())
    ('a', 3, 'stop')
    >>> cut_completion([1, 9, 4], lambda t: "".join(table.get(i, "") for i in t), [], {9})
    ('a', 2, 'stop')
    >>> cut_completion([1, 4], lambda t: "".join(table.get(i, "") for i in t), [], {9})
    ('ax', 2, 'length')
    """
    end, reason = len(token_ids), "length"
    for i, tok in enumerate(token_ids):
        if tok in eos_ids:
            end, reason = i + 1, "stop"  # EOS counts as a generated token, its text is empty
            break
    ids = list(token_ids[:end])
    text = decode(ids)
    if first_stop(text, stops) < 0:
        # A byte-level token sequence can end inside a UTF-8 character; vLLM's
        # incremental detokenizer holds those bytes back, a full decode shows U+FFFD.
        return text.rstrip("\ufffd"), end, reason
    # The shortest prefix whose text holds a stop string: decoding a longer
    # prefix only appends text, so "holds a stop" is monotone in the length.
    lo, hi = 1, end
    while lo < hi:
        mid = (lo + hi) // 2
        if first_stop(decode(ids[:mid]), stops) >= 0:
            hi = mid
        else:
            lo = mid + 1
    text = decode(ids[:lo])
    return text[: first_stop(text, stops)], lo, "stop"
