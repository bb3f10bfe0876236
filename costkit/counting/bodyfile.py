"""Reading request bodies from a file: one JSON body, a JSON array of bodies, or JSONL.

A file whose first non-blank line is a complete JSON object is read as JSONL,
one body a line, streamed; anything else is parsed as one JSON document. Errors
name the file and line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from costkit.errors import CostkitError


class InputError(CostkitError, ValueError):
    """A request file that cannot be read; the message starts with ``file:line``."""


def _decode(raw: bytes, name: str, line: int) -> str:
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{name}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _loads(text: str, name: str, line: int) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{name}:{line + exc.lineno - 1}: invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    except RecursionError:
        raise InputError(f"{name}:{line}: invalid JSON: nested too deeply") from None


def iter_bodies(
    stream: IO[bytes], name: str, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[str, Any]]:
    """(where, parsed body) for every request in ``stream``; ``where`` is ``file:line``
    (``file:line[i]`` for the i-th body of a JSON array).

    ``progress`` is called with the bytes consumed as the stream is read.
    """
    line_no = 0
    first: bytes = b""
    for raw in stream:
        line_no += 1
        if progress is not None:
            progress(len(raw))
        if raw.strip():
            first = raw
            break
    if not first:
        raise InputError(f"{name}: no request bodies in the file")

    first_text = _decode(first, name, line_no)
    try:
        parsed = json.loads(first_text)
    except (json.JSONDecodeError, RecursionError):
        parsed = None
    if isinstance(parsed, dict):  # JSONL: a complete object on its own line
        yield f"{name}:{line_no}", parsed
        for raw in stream:
            line_no += 1
            if progress is not None:
                progress(len(raw))
            if not raw.strip():
                continue
            yield f"{name}:{line_no}", _loads(_decode(raw, name, line_no).rstrip("\r\n"), name, line_no)
        return

    start = line_no
    rest = stream.read()
    if progress is not None:
        progress(len(rest))
    document = _loads(first_text + _decode(rest, name, start + 1), name, start)
    if isinstance(document, list):
        if not document:
            raise InputError(f"{name}:{start}: an empty array holds no request bodies")
        for i, body in enumerate(document):
            yield f"{name}:{start}[{i}]", body
    else:
        yield f"{name}:{start}", document
