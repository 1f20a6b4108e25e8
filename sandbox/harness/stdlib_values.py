"""Decoders for the standard-library values of the plain-data codec (the
encoders are in ``plaindata``), and ``MatchSnapshot``, what a returned
``re.Match`` becomes on the other side.

Each decoder checks the shape of what it got and builds only its own fixed
type; names the sender chose are looked up in fixed tables (builtin types,
the default factories a defaultdict may keep), never imported or fetched
with getattr. A named tuple's type name and fields are checked by
``collections.namedtuple`` itself. Modules load on first use.
"""
from __future__ import annotations

import operator

from .plaindata import MAX_NAMEDTUPLE_FIELDS, _BUILTIN_TYPES, _NAMEDTUPLE_TYPES_KEPT, _dec, _fill

MAX_MATCH_GROUPS = 10_000


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"malformed {what}")


def _ints(body, n: int) -> bool:
    return type(body) is list and len(body) == n and all(type(v) is int for v in body)


# ----------------------------------------------------------------- builtins


def _bytearray(body, depth):
    _expect(type(body) is str, "bytearray")
    return bytearray.fromhex(body)


def _ellipsis(body, depth):
    _expect(body is None, "Ellipsis")
    return ...


def _builtin_type(body, depth):
    cls = _BUILTIN_TYPES.get(body) if type(body) is str else None
    _expect(cls is not None, "builtin type")
    return cls


def _big_int(body, depth):
    _expect(type(body) is str and body.lstrip("-").startswith("0x"), "hex int")
    return int(body, 16)


def _view(body, depth):
    """A dict view crosses as its items and arrives as the same view of a rebuilt dict."""
    _expect(type(body) is list and len(body) == 3 and body[0] in ("keys", "values", "items")
            and type(body[1]) is bool and type(body[2]) is list, "dict view")
    kind, ordered, items = body
    if ordered:
        from collections import OrderedDict

        mapping = OrderedDict()
    else:
        mapping = {}
    if kind == "keys":
        for key in items:
            mapping[_dec(key, depth)] = None
        return mapping.keys()
    if kind == "values":
        for i, value in enumerate(items):
            mapping[i] = _dec(value, depth)
        return mapping.values()
    return _fill(mapping, items, depth).items()


# ----------------------------------------------------------------- collections


def _counter(body, depth):
    from collections import Counter

    return _fill(Counter(), body, depth)


def _ordered_dict(body, depth):
    from collections import OrderedDict

    return _fill(OrderedDict(), body, depth)


def _defaultdict(body, depth):
    from collections import Counter, OrderedDict, defaultdict, deque

    _expect(type(body) is list and len(body) == 2, "defaultdict")
    name, pairs = body
    factories = {"Counter": Counter, "OrderedDict": OrderedDict, "deque": deque, "defaultdict": defaultdict}
    factory = None if name is None else factories.get(name) or _BUILTIN_TYPES.get(name) if type(name) is str else None
    _expect(name is None or factory is not None, "defaultdict factory")
    return _fill(defaultdict(factory), pairs, depth)


def _deque(body, depth):
    from collections import deque

    _expect(type(body) is list and len(body) == 2 and type(body[1]) is list, "deque")
    maxlen, items = body
    _expect(maxlen is None or (type(maxlen) is int and 0 <= len(items) <= maxlen), "deque maxlen")
    return deque([_dec(v, depth) for v in items], maxlen)


_NAMEDTUPLE_TYPES: dict = {}


def _namedtuple(body, depth):
    _expect(type(body) is list and len(body) == 3, "named tuple")
    name, fields, values = body
    _expect(type(name) is str and type(fields) is list and type(values) is list and len(fields) == len(values)
            and len(fields) <= MAX_NAMEDTUPLE_FIELDS and all(type(f) is str for f in fields), "named tuple")
    key = (name, tuple(fields))
    cls = _NAMEDTUPLE_TYPES.get(key)
    if cls is None:
        from collections import namedtuple

        cls = namedtuple(name, key[1])  # raises ValueError on a bad name or field
        if len(_NAMEDTUPLE_TYPES) < _NAMEDTUPLE_TYPES_KEPT:
            _NAMEDTUPLE_TYPES[key] = cls  # two results of one type share it, as in-process
    return cls._make([_dec(v, depth) for v in values])


# ----------------------------------------------------------------- numbers, arrays


def _decimal(body, depth):
    from decimal import Decimal

    _expect(type(body) is str, "Decimal")
    return Decimal(body)


def _fraction(body, depth):
    from fractions import Fraction

    _expect(type(body) is list and len(body) == 2, "Fraction")
    terms = [_dec(v, depth) for v in body]  # a term over 64 bits crosses in hex
    _expect(_ints(terms, 2), "Fraction")
    return Fraction(*terms)


def _array(body, depth):
    from array import array

    _expect(type(body) is list and len(body) == 2 and type(body[0]) is str and type(body[1]) is str, "array")
    out = array(body[0])
    out.frombytes(bytes.fromhex(body[1]))
    return out


# ----------------------------------------------------------------- datetime


def _tzinfo(value, depth):
    import datetime as dt

    tz = _dec(value, depth)
    _expect(tz is None or isinstance(tz, dt.tzinfo), "tzinfo")  # only timezone or ZoneInfo decode as one
    return tz


def _date(body, depth):
    import datetime as dt

    _expect(_ints(body, 3), "date")
    return dt.date(*body)


def _datetime(body, depth):
    import datetime as dt

    _expect(type(body) is list and len(body) == 9 and _ints(body[:8], 8), "datetime")
    *fields, fold, tz = body
    return dt.datetime(*fields, tzinfo=_tzinfo(tz, depth), fold=fold)


def _time(body, depth):
    import datetime as dt

    _expect(type(body) is list and len(body) == 6 and _ints(body[:5], 5), "time")
    *fields, fold, tz = body
    return dt.time(*fields, tzinfo=_tzinfo(tz, depth), fold=fold)


def _timedelta(body, depth):
    import datetime as dt

    _expect(_ints(body, 3), "timedelta")
    return dt.timedelta(days=body[0], seconds=body[1], microseconds=body[2])


def _timezone(body, depth):
    import datetime as dt

    _expect(type(body) is list and len(body) in (1, 2), "timezone")
    offset = _dec(body[0], depth)
    _expect(type(offset) is dt.timedelta, "timezone offset")
    if len(body) == 1:
        return dt.timezone(offset)
    _expect(type(body[1]) is str, "timezone name")
    return dt.timezone(offset, body[1])


def _zoneinfo(body, depth):
    from zoneinfo import ZoneInfo  # refuses keys that leave the time-zone directories

    _expect(type(body) is str, "ZoneInfo key")
    return ZoneInfo(body)


# ----------------------------------------------------------------- re


def _pattern(body, depth):
    import re

    _expect(type(body) is list and len(body) == 2 and type(body[1]) is int, "pattern")
    text = _dec(body[0], depth)
    _expect(type(text) in (str, bytes), "pattern text")
    return re.compile(text, body[1])


def _match(body, depth):
    _expect(type(body) is list and len(body) == 8, "match")
    string, pattern = _dec(body[0], depth), _dec(body[1], depth)
    flags, pos, endpos, lastindex, regs, groupindex = body[2:]
    _expect(type(string) in (str, bytes, bytearray) and type(pattern) in (str, bytes)
            and (type(string) is str) == (type(pattern) is str), "match string")
    _expect(type(flags) is int and type(pos) is int and type(endpos) is int and 0 <= pos <= endpos <= len(string),
            "match positions")
    _expect(type(regs) is list and 1 <= len(regs) <= MAX_MATCH_GROUPS and all(_ints(r, 2) for r in regs)
            and all(r == [-1, -1] or 0 <= r[0] <= r[1] <= len(string) for r in regs) and regs[0][0] >= 0,
            "match spans")
    ngroups = len(regs) - 1
    _expect(type(groupindex) is list and all(type(p) is list and len(p) == 2 and type(p[0]) is str
                                             and type(p[1]) is int and 1 <= p[1] <= ngroups for p in groupindex),
            "match group names")
    _expect(lastindex is None or (type(lastindex) is int and 1 <= lastindex <= ngroups), "match lastindex")
    return MatchSnapshot(string, pattern, flags, pos, endpos, lastindex,
                         tuple(tuple(r) for r in regs), dict(groupindex))


class MatchSnapshot:
    """A ``re.Match`` the candidate returned, as a read-only snapshot: the same
    string, spans, group names and positions, so every method of a real match
    (group, groups, groupdict, span, start, end, ``m[g]``, expand, string,
    re, pos, endpos, lastindex, lastgroup, regs) answers as the original
    would. ``isinstance(m, re.Match)`` holds; ``type(m)`` is this class (a
    real Match cannot be made without running the pattern, which could be
    slow on purpose). ``re`` is compiled on first use."""

    __slots__ = ("_string", "_pattern", "_flags", "_pos", "_endpos", "_lastindex", "_regs", "_groupindex", "_re")

    def __init__(self, string, pattern, flags, pos, endpos, lastindex, regs, groupindex):
        for name, value in (("_string", string), ("_pattern", pattern), ("_flags", flags), ("_pos", pos),
                            ("_endpos", endpos), ("_lastindex", lastindex), ("_regs", regs),
                            ("_groupindex", groupindex), ("_re", None)):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"readonly attribute {name!r} of a match")

    __delattr__ = __setattr__

    @property
    def __class__(self):  # makes isinstance(m, re.Match) true, as for the original
        import re

        return re.Match

    string = property(lambda self: self._string)
    pos = property(lambda self: self._pos)
    endpos = property(lambda self: self._endpos)
    lastindex = property(lambda self: self._lastindex)
    regs = property(lambda self: self._regs)

    @property
    def lastgroup(self):
        for name, index in self._groupindex.items():
            if index == self._lastindex:
                return name
        return None

    @property
    def re(self):
        if self._re is None:
            import re

            object.__setattr__(self, "_re", re.compile(self._pattern, self._flags))
        return self._re

    def _index(self, group) -> int:
        if isinstance(group, str):
            index = self._groupindex.get(group, -1)
        else:
            try:
                index = operator.index(group)
            except TypeError:
                index = -1
        if not 0 <= index < len(self._regs):
            raise IndexError("no such group")
        return index

    def _text(self, index: int, default=None):
        start, end = self._regs[index]
        if start < 0:
            return default
        text = self._string[start:end]
        return bytes(text) if type(text) is bytearray else text

    def group(self, *groups):
        if not groups:
            return self._text(0)
        if len(groups) == 1:
            return self._text(self._index(groups[0]))
        return tuple(self._text(self._index(g)) for g in groups)

    def __getitem__(self, group):
        return self._text(self._index(group))

    def groups(self, default=None):
        return tuple(self._text(i, default) for i in range(1, len(self._regs)))

    def groupdict(self, default=None):
        return {name: self._text(index, default) for name, index in self._groupindex.items()}

    def span(self, group=0):
        return self._regs[self._index(group)]

    def start(self, group=0):
        return self._regs[self._index(group)][0]

    def end(self, group=0):
        return self._regs[self._index(group)][1]

    def expand(self, template):
        return self._replica().expand(template)

    def _replica(self):
        """A real Match with the same group texts and names, so that re's own
        template parser does the expanding: the whole match is consumed, and
        each group captures a copy of its text inside a lookahead."""
        import re

        as_bytes = not isinstance(self._string, str)
        texts = [self._text(i) for i in range(len(self._regs))]
        if as_bytes:
            texts = [None if t is None else t.decode("latin-1") for t in texts]
        names = {index: name for name, index in self._groupindex.items()}
        parts = []
        for index in range(1, len(texts)):
            head = f"(?P<{names[index]}>" if index in names else "("
            # an unmatched group stays unset: the branch that holds it fails first
            parts.append(f"(?:(?!){head}))?" if texts[index] is None else head + re.escape(texts[index]) + ")")
        pattern = re.escape(texts[0]) + "(?=" + "".join(parts) + ")"
        subject = "".join(t for t in texts if t is not None)
        if as_bytes:
            pattern, subject = pattern.encode("latin-1"), type(self._string)(subject.encode("latin-1"))
        return re.match(pattern, subject)

    def __repr__(self):
        return f"<re.Match object; span={self.span()!r}, match={self.group()!r}>"

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self


DECODERS = {
    "ba": _bytearray, "E": _ellipsis, "y": _builtin_type, "n": _big_int, "v": _view,
    "C": _counter, "od": _ordered_dict, "dd": _defaultdict, "dq": _deque, "nt": _namedtuple,
    "dec": _decimal, "fr": _fraction, "a": _array,
    "date": _date, "dt": _datetime, "tm": _time, "td": _timedelta, "tz": _timezone, "zi": _zoneinfo,
    "p": _pattern, "m": _match,
}
