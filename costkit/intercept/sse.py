"""Reading a server-sent-events byte stream incrementally, as it passes by.

The scanner splits bytes into events at blank lines (``\\n`` or ``\\r\\n`` line
ends; a lone ``\\r`` is not supported) and returns each event's raw bytes with
its ``data`` payload, so a caller can forward events untouched, or drop one,
while reading a copy on the side. Only an incomplete last event is held.
"""

from __future__ import annotations

import re

DONE = b"[DONE]"
_BOUNDARY = re.compile(rb"\r?\n\r?\n")


def _data_of(event: bytes) -> bytes | None:
    """The ``data`` payload of one event (its data lines joined by newlines), or None."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    lines = []
    for line in event.split(b"\n"):
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"data:"):
            lines.append(line[6:] if line.startswith(b"data: ") else line[5:])
    return b"\n".join(lines) if lines else None


class SSEScanner:
    """Incremental SSE event splitter. Not thread-safe; one per response."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes | None]]:
        """Complete events found so far: (raw bytes, data payload or None if it had none)."""
        buf = self._buf + chunk if self._buf else chunk
        events: list[tuple[bytes, bytes | None]] = []
        start = 0
        if b"\r" not in buf:
            find = buf.find
            while (end := find(b"\n\n", start)) != -1:
                events.append((buf[start : end + 2], _data_of(buf[start:end])))
                start = end + 2
        else:
            for match in _BOUNDARY.finditer(buf):
                events.append((buf[start : match.end()], _data_of(buf[start : match.start()])))
                start = match.end()
        self._buf = buf[start:] if start else buf
        return events
