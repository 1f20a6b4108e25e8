"""The plain-data codec: how arguments and results cross between the judge
and the candidate. Values are rebuilt from a tagged JSON encoding with exact
types, so no object of the candidate's (an always-equal ``__eq__``, an int
subclass) ever reaches the tests. The decoder is the security boundary: it
only builds known types, with depth and size caps.
"""
from __future__ import annotations

import json

MAX_DEPTH = 200  # nesting depth of plain data

class NotPlainData(TypeError):
    """A value that cannot cross between the judge and the candidate."""


_TAGS = ("t", "d", "s", "f", "b", "c", "r", "i")
MAX_ITER_ITEMS = 1_000_000  # an iterator crosses as the items it yields, up to this many


def _enc(x, depth):
    t = type(x)  # exact types only: a subclass could override __eq__
    if t is str or t is int or t is bool or t is float or x is None:
        return x
    if depth > MAX_DEPTH:
        raise NotPlainData("value nested too deeply")
    depth += 1
    if t is list:
        return [_enc(v, depth) for v in x]
    if t is tuple:
        return {"t": [_enc(v, depth) for v in x]}
    if t is dict:
        return {"d": [[_enc(k, depth), _enc(v, depth)] for k, v in x.items()]}
    if t is set:
        return {"s": [_enc(v, depth) for v in x]}
    if t is frozenset:
        return {"f": [_enc(v, depth) for v in x]}
    if t is bytes:
        return {"b": x.hex()}
    if t is complex:
        return {"c": [x.real, x.imag]}
    if t is range:
        return {"r": [x.start, x.stop, x.step]}
    if hasattr(t, "__next__") and hasattr(t, "__iter__"):
        # A generator, map, zip... crosses as its items and arrives as an
        # iterator over them, so `tuple(candidate(x))` works as in-process
        # and `candidate(x) == [..]` stays False, as for a real generator.
        items = []
        for item in x:
            if len(items) >= MAX_ITER_ITEMS:
                raise NotPlainData(f"an iterator yielded more than {MAX_ITER_ITEMS} items")
            items.append(_enc(item, depth))
        return {"i": items}
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def _dec(x, depth):
    t = type(x)
    if t is str or t is int or t is bool or t is float or x is None:
        return x
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    depth += 1
    if t is list:
        return [_dec(v, depth) for v in x]
    if t is dict and len(x) == 1:
        (tag, body), = x.items()
        if tag == "t" and type(body) is list:
            return tuple(_dec(v, depth) for v in body)
        if tag == "d" and type(body) is list:
            out = {}
            for pair in body:
                if type(pair) is not list or len(pair) != 2:
                    raise ValueError("malformed dict entry")
                out[_dec(pair[0], depth)] = _dec(pair[1], depth)
            return out
        if tag == "s" and type(body) is list:
            return {_dec(v, depth) for v in body}
        if tag == "f" and type(body) is list:
            return frozenset(_dec(v, depth) for v in body)
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "r" and type(body) is list and len(body) == 3 and all(type(v) is int for v in body) and body[2]:
            return range(*body)
        if tag == "i" and type(body) is list:
            return iter([_dec(v, depth) for v in body])
        if tag == "c" and type(body) is list and len(body) == 2:
            re_, im = body
            if type(re_) in (int, float) and type(im) in (int, float):
                return complex(re_, im)
    raise ValueError(f"malformed plain-data value of type {t.__name__}")


def dumps(obj) -> bytes:
    """Encode plain data (numbers incl. nan/inf, str, bytes, bool, None, list,
    tuple, dict, set, frozenset, complex, range; an iterator as its items) as
    tagged JSON bytes."""
    return json.dumps(_enc(obj, 0), separators=(",", ":")).encode()


def loads(data: bytes):
    """Decode what ``dumps`` made; any malformed input raises ValueError."""
    try:
        return _dec(json.loads(data), 0)
    except (ValueError, TypeError, RecursionError, MemoryError) as exc:
        raise ValueError(f"undecodable plain data: {type(exc).__name__}: {exc}"[:500]) from None
