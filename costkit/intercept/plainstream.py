"""A fast proof that an SSE body held nothing but ordinary chunks, for the check after the body.

``ResponseReader`` forwards most events after a few byte checks, without parsing them, so after
the body it must still learn whether every event was a JSON object and whether one was an error.
Parsing every event with ``json`` costs about 2 µs a chunk, as much as the rest of costkit's
work on a stream (and the caller's code is waiting for it). ``plain_events`` proves the common
case in about a fifth of that: the body is ``data: {...}`` events and nothing else (a last
``[DONE]`` aside), each payload one JSON object on one line, valid UTF-8, and no object with an
``error`` set. msgspec checks each payload without building it, keeping only its ``error``.

It only ever answers yes where the exact reading (``output.stream_chunks``) finds no malformed
event and no error; anything it cannot prove plain (comments, event names, multi-line data,
``\\r\\n`` line ends, an escape msgspec will not read) goes to that exact, slower reading.
``tests/test_plainstream.py`` holds it to that with generated bodies.
"""

from __future__ import annotations

from operator import attrgetter
from typing import Any

import msgspec


class _Chunk(msgspec.Struct, gc=False):
    """A chunk's ``error`` field; msgspec checks the rest of the object's syntax without keeping it
    (this also reads a key that spells ``error`` with escapes)."""

    error: Any = None


_DECODE = msgspec.json.Decoder(_Chunk).decode
_ERROR = attrgetter("error")
_DONE = b"data: [DONE]\n\n"
_SEPARATOR = b"\n\ndata: "


def plain_events(body: bytes | bytearray) -> bool:
    """True when every event of ``body`` (whole events) is one ``data: `` line holding a JSON
    object without an error, and the body is UTF-8: what the exact reading would pass."""
    end = len(body) - len(_DONE) if body.endswith(_DONE) else len(body)
    if end < 8 or not body.startswith(b"data: ") or body[end - 2 : end] != b"\n\n":
        return False
    if not body.isascii():
        try:
            body.decode("utf-8")  # msgspec passes over the bytes of a string unread
        except UnicodeDecodeError:
            return False
    payloads = body[6 : end - 2]
    parts = payloads.split(_SEPARATOR)
    if payloads.count(b"\n") != 2 * (len(parts) - 1):
        return False  # a line of its own that is not "data: ", or a blank event: not plain
    try:  # each payload on its own: one object and nothing after it
        chunks = list(map(_DECODE, parts))
    except msgspec.DecodeError:  # malformed JSON, or a payload that is not an object
        return False
    return list(map(_ERROR, chunks)).count(None) == len(chunks)  # (no Python loop: 4,000 chunks a stream)
