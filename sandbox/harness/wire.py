"""Length-prefixed frames: the one wire format between every pair of parties
(host and worker, worker and judge, judge and candidate, the Docker backend
and its container server). A frame is a 4-byte big-endian length and that
many bytes. Standard library only: this file also runs inside containers.
"""
from __future__ import annotations

import os
import select
import struct
import time

MAX_CONTROL_FRAME = 256 << 20  # jobs and verdicts between trusted parties
MAX_DATA_FRAME = 32 << 20  # one call or one result crossing between judge and candidate
_HEAD = struct.Struct(">I")


class FrameTooLarge(Exception):
    pass


def encode_frame(payload: bytes) -> bytes:
    return _HEAD.pack(len(payload)) + payload


def write_frame(fd: int, payload: bytes) -> None:
    """Write one frame to ``fd``, retrying short writes."""
    view = memoryview(encode_frame(payload))
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("no frame before the deadline")
        chunk = os.read(fd, min(n - got, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, max_len: int = MAX_CONTROL_FRAME, deadline: float | None = None) -> bytes | None:
    """Read one frame; None on a clean end of file. Refuses frames over
    ``max_len``; raises TimeoutError when ``deadline`` (monotonic) passes."""
    head = _read_exact(fd, 4, deadline)
    if head is None:
        return None
    (n,) = _HEAD.unpack(head)
    if n > max_len:
        raise FrameTooLarge(f"frame of {n} bytes exceeds the cap of {max_len}")
    return _read_exact(fd, n, deadline)


def take_frame(buf: bytearray, max_len: int = MAX_CONTROL_FRAME) -> bytes | None:
    """Remove and return the first whole frame in ``buf`` (None: not yet complete)."""
    if len(buf) < 4:
        return None
    (n,) = _HEAD.unpack(buf[:4])
    if n > max_len:
        raise FrameTooLarge(f"frame of {n} bytes exceeds the cap of {max_len}")
    if len(buf) < 4 + n:
        return None
    body = bytes(buf[4:4 + n])
    del buf[:4 + n]
    return body
