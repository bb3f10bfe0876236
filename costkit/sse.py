"""Reading a server-sent-events byte stream incrementally, as it passes by.

The scanner splits bytes into events at blank lines (``\\n`` or ``\\r\\n`` line
ends) and returns each event's raw bytes with its ``data`` payload, so a caller
can forward events untouched, or drop one, while reading a copy on the side.
"""

from __future__ import annotations

DONE = b"[DONE]"


class SSEScanner:
    """Incremental SSE event splitter. Not thread-safe; one per response."""

    __slots__ = ("_buf", "_data", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0  # where the next unread line starts, within _buf
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[tuple[bytes, bytes | None]]:
        """Complete events found so far: (raw bytes, data payload or None if it had none)."""
        buf = self._buf
        buf += chunk
        events: list[tuple[bytes, bytes | None]] = []
        event_start = 0
        pos = self._pos
        while True:
            nl = buf.find(b"\n", pos)
            if nl == -1:
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl  # drop a \r before the \n
            if end == pos:  # blank line: the event is complete
                raw = bytes(buf[event_start : nl + 1])
                events.append((raw, b"\n".join(self._data) if self._data else None))
                self._data = []
                event_start = nl + 1
            elif buf.startswith(b"data:", pos):
                start = pos + 6 if buf.startswith(b"data: ", pos) else pos + 5
                self._data.append(bytes(buf[start:end]))
            pos = nl + 1
        if event_start:
            del buf[:event_start]
            pos -= event_start
        self._pos = pos
        return events

    @property
    def pending(self) -> bytes:
        """Bytes of an event not yet complete."""
        return bytes(self._buf)
