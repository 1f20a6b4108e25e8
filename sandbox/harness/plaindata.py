"""The plain-data codec: how arguments and results cross between the judge
and the candidate. Values are rebuilt from a tagged JSON encoding with exact
types, so no object of the candidate's (an always-equal ``__eq__``, an int
subclass) ever reaches the tests. The decoder is the security boundary: it
only builds known types, with depth and size caps (the size cap is the frame
cap of ``wire``), and never imports or looks up a name the sender chose beyond
fixed allow-lists.

Besides the builtin containers, the standard library's value types cross by
value with their type kept, so equality behaves as in one process: the
``collections`` types (Counter, OrderedDict, defaultdict, deque, named
tuples), ``re.Match`` (as a read-only snapshot) and ``re.Pattern``, the
``datetime`` types, ``Decimal``, ``Fraction``, ``array.array``, ``bytearray``,
dict views, builtin types as values and ``Ellipsis``. Ints too long for JSON's
decimal form cross in hex. Subclasses of these types do not cross (a subclass
could override ``__eq__``); a named tuple crosses as a fresh
``collections.namedtuple`` of the same name and fields, without its methods.

Cost: the common types (str, int, float, list, tuple, dict) are tested first;
the others are looked up by exact type afterwards, and their modules are only
touched once a value of theirs is seen.
"""
from __future__ import annotations

import builtins
import json
import sys

MAX_DEPTH = 200  # nesting depth of plain data

class NotPlainData(TypeError):
    """A value that cannot cross between the judge and the candidate."""


MAX_ITER_ITEMS = 1_000_000  # an iterator crosses as the items it yields, up to this many
MAX_NAMEDTUPLE_FIELDS = 1000
_NAMEDTUPLE_TYPES_KEPT = 1024  # rebuilt named-tuple types cached per (name, fields)

# Builtin types that cross as values (``return int``) and as a defaultdict's
# default_factory, by name; taken once, before any program runs.
_BUILTIN_TYPES = {name: obj for name, obj in vars(builtins).items() if type(obj) is type}
_BUILTIN_TYPES["NoneType"] = type(None)
_BUILTIN_TYPE_NAMES = {obj: name for name, obj in _BUILTIN_TYPES.items()}


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
    return _enc_other(x, t, depth)


def _enc_other(x, t, depth):
    """The rarer types, after the common ones: standard-library values by
    exact type, iterators as their items, named tuples by structure."""
    enc = _ENCODERS.get(t) or _resolve(t)
    if enc is not None:
        return enc(x, depth)
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
    fields = _namedtuple_fields(t, x) if issubclass(t, tuple) else None
    if fields is not None:  # crosses by value: the class's own methods (and __eq__) stay behind
        return {"nt": [t.__name__, list(fields), [_enc(v, depth) for v in tuple.__iter__(x)]]}
    raise NotPlainData(f"a value of type {t.__module__}.{t.__qualname__} is not plain data")


def _namedtuple_fields(t, x):
    """The field names of a named tuple type that the decoder can rebuild, else None."""
    fields, name = getattr(t, "_fields", None), t.__name__
    if type(fields) is not tuple or len(fields) != tuple.__len__(x) or len(fields) > MAX_NAMEDTUPLE_FIELDS:
        return None
    from keyword import iskeyword  # collections imported it already

    names = (name, *fields)
    if any(type(n) is not str or not n.isidentifier() or iskeyword(n) for n in names):
        return None
    if any(f.startswith("_") for f in fields) or len(set(fields)) != len(fields):
        return None
    return fields


# ----------------------------------------------------------------- encoders by type
# Filled per module on the first value of one of its types (_resolve), so a
# program that returns none of them never touches decimal, datetime...

_ENCODERS: dict = {}


def _pairs(m, depth):
    return [[_enc(k, depth), _enc(v, depth)] for k, v in m.items()]


def _enc_builtin_type(x, depth):
    name = _BUILTIN_TYPE_NAMES.get(x)
    if name is None:
        raise NotPlainData(f"the class {x.__qualname__} is not plain data (only builtin types are)")
    return {"y": name}


def _register_builtins():
    _ENCODERS.update({
        bytearray: lambda x, d: {"ba": x.hex()},
        type(...): lambda x, d: {"E": None},
        type: _enc_builtin_type,
        type({}.keys()): lambda x, d: {"v": ["keys", False, [_enc(k, d) for k in x]]},
        type({}.values()): lambda x, d: {"v": ["values", False, [_enc(v, d) for v in x]]},
        type({}.items()): lambda x, d: {"v": ["items", False, [[_enc(k, d), _enc(v, d)] for k, v in x]]},
    })


def _register_collections():
    from collections import Counter, OrderedDict, defaultdict, deque

    factories = {**_BUILTIN_TYPE_NAMES, Counter: "Counter", OrderedDict: "OrderedDict", deque: "deque",
                 defaultdict: "defaultdict"}

    def enc_defaultdict(x, d):
        # the factory is kept when the decoder knows it by name; any other crosses as None
        factory = x.default_factory
        return {"dd": [factories.get(factory) if type(factory) is type else None, _pairs(x, d)]}

    od = OrderedDict()
    _ENCODERS.update({
        Counter: lambda x, d: {"C": _pairs(x, d)},
        OrderedDict: lambda x, d: {"od": _pairs(x, d)},
        defaultdict: enc_defaultdict,
        deque: lambda x, d: {"dq": [x.maxlen, [_enc(v, d) for v in x]]},
        type(od.keys()): lambda x, d: {"v": ["keys", True, [_enc(k, d) for k in x]]},
        type(od.values()): lambda x, d: {"v": ["values", True, [_enc(v, d) for v in x]]},
        type(od.items()): lambda x, d: {"v": ["items", True, [[_enc(k, d), _enc(v, d)] for k, v in x]]},
    })


def _register_re():
    import re

    def enc_match(m, d):
        if type(m.string) not in (str, bytes, bytearray):
            raise NotPlainData(f"a match on a {type(m.string).__name__} is not plain data")
        pattern = m.re
        return {"m": [_enc(m.string, d), _enc(pattern.pattern, d), pattern.flags, m.pos, m.endpos, m.lastindex,
                      [list(span) for span in m.regs], list(pattern.groupindex.items())]}

    _ENCODERS.update({
        re.Match: enc_match,
        re.Pattern: lambda p, d: {"p": [_enc(p.pattern, d), p.flags]},
    })


def _register_datetime():
    import datetime as dt

    def enc_tz(tz, d):
        return {"tz": [_enc(arg, d) for arg in tz.__getinitargs__()]}  # (offset,) or (offset, name)

    _ENCODERS.update({
        dt.date: lambda x, d: {"date": [x.year, x.month, x.day]},
        dt.datetime: lambda x, d: {"dt": [x.year, x.month, x.day, x.hour, x.minute, x.second, x.microsecond,
                                          x.fold, _enc(x.tzinfo, d)]},
        dt.time: lambda x, d: {"tm": [x.hour, x.minute, x.second, x.microsecond, x.fold, _enc(x.tzinfo, d)]},
        dt.timedelta: lambda x, d: {"td": [x.days, x.seconds, x.microseconds]},
        dt.timezone: enc_tz,
    })


def _register_zoneinfo():
    from zoneinfo import ZoneInfo

    def enc_zone(z, d):
        if type(z.key) is not str:
            raise NotPlainData("a ZoneInfo made from a file (no key) is not plain data")
        return {"zi": z.key}

    _ENCODERS[ZoneInfo] = enc_zone


def _register_numbers():
    if "decimal" in sys.modules:
        _ENCODERS[sys.modules["decimal"].Decimal] = lambda x, d: {"dec": str(x)}
    if "fractions" in sys.modules:
        _ENCODERS[sys.modules["fractions"].Fraction] = lambda x, d: {"fr": [x.numerator, x.denominator]}


def _register_array():
    from array import array

    _ENCODERS[array] = lambda x, d: {"a": [x.typecode, x.tobytes().hex()]}


_REGISTRARS = {"builtins": _register_builtins, "collections": _register_collections, "re": _register_re,
               "datetime": _register_datetime, "zoneinfo": _register_zoneinfo, "decimal": _register_numbers,
               "fractions": _register_numbers, "array": _register_array}
_REGISTERED: set = set()


def _resolve(t):
    """The encoder of ``t`` once its module's group is registered. A module is
    only touched when it is loaded already (a value of its type exists)."""
    module = t.__module__
    if type(module) is not str:
        return None
    if module == "builtins" and t.__name__.startswith("odict_"):
        module = "collections"  # OrderedDict's views say builtins
    if module in _REGISTERED or module not in _REGISTRARS or (module != "builtins" and module not in sys.modules):
        return None
    _REGISTERED.add(module)
    _REGISTRARS[module]()
    return _ENCODERS.get(t)


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
            return _fill({}, body, depth)
        if tag == "s" and type(body) is list:
            return {_dec(v, depth) for v in body}
        if tag == "f" and type(body) is list:
            return frozenset(_dec(v, depth) for v in body)
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if tag == "r" and type(body) is list and len(body) == 3:
            bounds = [_dec(v, depth) for v in body]  # a bound over 64 bits crosses in hex
            if all(type(v) is int for v in bounds) and bounds[2]:
                return range(*bounds)
        if tag == "i" and type(body) is list:
            return iter([_dec(v, depth) for v in body])
        if tag == "c" and type(body) is list and len(body) == 2:
            re_, im = body
            if type(re_) in (int, float) and type(im) in (int, float):
                return complex(re_, im)
        dec = DECODERS.get(tag)  # the rarer types
        if dec is not None:
            return dec(body, depth)
    raise ValueError(f"malformed plain-data value of type {t.__name__}")


def _fill(mapping, body, depth):
    """Put the encoded ``[key, value]`` pairs of ``body`` into ``mapping``."""
    if type(body) is not list:
        raise ValueError("malformed mapping")
    for pair in body:
        if type(pair) is not list or len(pair) != 2:
            raise ValueError("malformed dict entry")
        mapping[_dec(pair[0], depth)] = _dec(pair[1], depth)
    return mapping


def _hex_big_ints(tree):
    """``tree`` (encoded) with ints JSON cannot write in decimal (Python's
    int_max_str_digits) as {"n": hex}; the hex form has no such limit."""
    t = type(tree)
    if t is int:
        return {"n": hex(tree)} if tree.bit_length() > 64 else tree
    if t is list:
        return [_hex_big_ints(v) for v in tree]
    if t is dict:
        return {k: _hex_big_ints(v) for k, v in tree.items()}
    return tree


def dumps(obj) -> bytes:
    """Encode plain data (numbers incl. nan/inf, str, bytes, bool, None, list,
    tuple, dict, set, frozenset, complex, range; an iterator as its items; the
    standard-library values listed in the module docstring) as tagged JSON."""
    tree = _enc(obj, 0)
    try:
        return json.dumps(tree, separators=(",", ":")).encode()
    except ValueError:  # an int over int_max_str_digits: rare, so retried rather than checked per int
        return json.dumps(_hex_big_ints(tree), separators=(",", ":")).encode()


def loads(data: bytes):
    """Decode what ``dumps`` made; any malformed input raises ValueError."""
    try:
        return _dec(json.loads(data), 0)
    except Exception as exc:  # noqa: BLE001 - a constructor's own error (OverflowError, re.error...) is malformed input too
        raise ValueError(f"undecodable plain data: {type(exc).__name__}: {exc}"[:500]) from None


from .stdlib_values import DECODERS  # last: it calls back into _dec and _fill
