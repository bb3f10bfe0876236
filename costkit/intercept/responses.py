"""Reading a chat-completions response on the side, while it is forwarded to the caller.

``ResponseReader.feed`` takes each raw chunk as it arrives and returns the bytes to
forward: the same bytes, except when costkit itself asked for usage (then the
usage-only chunk and the ``"usage":null`` fields it caused are taken out again). If
such a stream arrives compressed anyway (an upstream or proxy ignoring
``Accept-Encoding: identity``), the reader decodes it and forwards the decoded bytes
(``forwards_decoded``: the transport then drops ``Content-Encoding``/``Content-Length``,
so the caller's httpx sees what it would have decoded itself).

Whether the response streams is read from its ``Content-Type``, never assumed from
the request. Usage is taken from whichever chunk carries it (the last one wins). Work
per chunk is a few byte checks; events are parsed only where an id, usage or an error
is to be read, and after the body: every event once, when the answer otherwise looks
complete (a malformed line or an error event that the byte checks passed over makes it
partial), and for an estimate. The side copy keeps at most ``MAX_SIDE_COPY`` bytes: past
that, events are still scanned for usage and the end of the stream, and the row says its
estimate saw only the start.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from costkit.counting.tokens import count_text
from costkit.intercept.encoding import CorruptBody, Decoder
from costkit.intercept.output import message_output, stream_chunks, stream_output
from costkit.intercept.plainstream import plain_events
from costkit.intercept.sse import DONE, SSEScanner
from costkit.intercept.usage import Usage, clean_metrics, parse_usage
from costkit.ledger.lifecycle import settling

MAX_SIDE_COPY = 64 * 1024 * 1024
"""Bytes of a response body kept on the side for its estimate (the caller gets every byte)."""
MAX_ERROR_TEXT = 500
"""The longest error text a row keeps."""
_EVENT_END = re.compile(rb"\r?\n\r?\n")
_NULL_USAGE_LAST = b',"usage":null}\n\n'
_BEFORE_NULL_USAGE = -len(_NULL_USAGE_LAST)
_USAGE_WINDOW = 96  # bytes at the end of a chunk where its "usage":null sits (after choices, before padding)
_close_lock = threading.Lock()


def _end_of_last_event(buf: bytes) -> int:
    """The offset just past the last blank line in ``buf``; 0 or 1 when there is none."""
    if b"\r" not in buf:
        return buf.rfind(b"\n\n") + 2  # -1 + 2: none
    end = 0
    for match in _EVENT_END.finditer(buf):
        end = match.end()
    return end


def _ordinary_events(segment: bytes) -> bool:
    """Whether several whole events, the last an ordinary chunk, hold no usage: every ``"usage"``
    in them is ``"usage":null``. A reader behind a fast network (the proxy reads 64 KiB at a time)
    gets hundreds of events a read; parsing each was most of what the proxy spent on a stream.
    (A ``[DONE]`` before the last event is not looked for, as in a read of one event: the
    provider sends nothing after it, and the caller's SDK reads nothing after it.)"""
    return segment.count(b'"usage"') == segment.count(b'"usage":null')


class ResponseReader:
    """Reads one response's body as it passes; ``close`` calls ``on_close(self)`` exactly once."""

    def __init__(
        self,
        status: int,
        content_type: str,
        content_encoding: str,
        drop_usage_chunk: bool,
        t0: float,
        on_close: Callable[[ResponseReader], None],
    ) -> None:
        self.status = status
        self.is_sse = content_type.split(";")[0].strip().lower() == "text/event-stream"
        decoder = Decoder(content_encoding)
        self.encoding = ", ".join(decoder.codings)
        wants_drop = drop_usage_chunk and self.is_sse and status < 400
        self.forwards_decoded = wants_drop and not decoder.identity and decoder.supported
        self._drop = wants_drop and (decoder.identity or self.forwards_decoded)
        self._decode: Decoder | None = None if decoder.identity else decoder
        self._t0 = t0
        self._on_close = on_close
        self._closed = False
        self._reading = True  # False once costkit stopped reading its copy
        self.exhausted = False
        # The SSE body so far, whole events, in one growing buffer: keeping each chunk as its own
        # bytes object would keep thousands of small blocks alive and every new chunk cold in cache.
        self._side = bytearray()
        self._kept = 0  # bytes kept on the side
        self._tail = b""  # an SSE event not yet complete
        self._unforwarded: bytes | None = None  # decoded bytes of a chunk whose reading failed
        self._body: list[bytes] = []  # a non-SSE body, decoded
        self.notes: list[str] = []
        self.done = False  # saw [DONE]
        self.malformed = False
        self.failed = False
        self.truncated = False  # the side copy stopped at MAX_SIDE_COPY
        self.ended = False  # the body was read to its end
        self.interrupted: str | None = None  # why the caller stopped early, when it did
        self.stream_error: str | None = None  # an error event (or error object) inside a 200 answer
        self.ttft_us: int | None = None
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self.x_metrics: dict[str, float] | None = None
        self._json: Any = None
        self._parsed_json = False
        if not decoder.identity and not decoder.supported:
            self._reading = False
            self.feed = self._feed_opaque  # type: ignore[method-assign]
            self.notes.append(
                f"response encoded as {self.encoding!r}, which costkit cannot decode: forwarded untouched, "
                "not read"
            )
        elif not self.is_sse:
            self.feed = self._feed_body  # type: ignore[method-assign]
        elif self._decode is not None:
            self.feed = self._feed_sse_encoded  # type: ignore[method-assign]
        elif self._drop:  # identity SSE where costkit asked for usage: whole events, without its usage
            self.feed = self._scan  # type: ignore[method-assign,assignment]

    # -- while streaming ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Read a copy of ``chunk``; returns what the caller should get (identity SSE, kept as is)."""
        if chunk:
            self._scan(chunk)
        return chunk

    def _feed_sse_encoded(self, chunk: bytes) -> bytes:
        if not chunk or not self._reading:  # (the transport keeps calling this feed after _stop_reading)
            return chunk
        assert self._decode is not None
        try:
            data = self._decode(chunk)
        except CorruptBody as exc:
            if self.forwards_decoded:
                raise  # the transport fails the reader and raises the DecodingError httpx would
            self._stop_reading(str(exc))
            return chunk
        try:
            out = self._scan(data)
        except Exception:
            if self.forwards_decoded:  # decoded already: passthrough forwards it rather than decode it again
                self._unforwarded = data
            raise
        return out if self.forwards_decoded else chunk

    def _feed_body(self, chunk: bytes) -> bytes:
        if not self._reading:
            return chunk
        data = chunk
        if self._decode is not None and chunk:
            try:
                data = self._decode(chunk)
            except CorruptBody as exc:
                self._stop_reading(str(exc))
                return chunk
        self._kept += len(data)
        if self._kept <= MAX_SIDE_COPY:
            self._body.append(data)
        else:
            self.truncated = True
        return chunk

    def _feed_opaque(self, chunk: bytes) -> bytes:
        return chunk

    def passthrough(self, chunk: bytes) -> bytes:
        """After a failure of costkit's own: forward without reading (decoded, if the caller expects
        that), with any bytes held back first."""
        self._reading = False
        data = chunk
        if self._unforwarded is not None:  # the chunk costkit failed on, decoded before it failed
            data, self._unforwarded = self._unforwarded, None
        elif self.forwards_decoded and self._decode is not None:
            data = self._decode(chunk)  # a CorruptBody: the transport raises the caller's DecodingError
        if self._drop and self._tail:
            data, self._tail = self._tail + data, b""
        return data

    def _stop_reading(self, why: str) -> None:
        self._reading = False
        self.malformed = True
        self.notes.append(f"{why}: the rest was forwarded untouched, not read")

    def _scan(self, data: bytes) -> bytes:
        """Read whole SSE events from ``data``; returns the whole events to forward when dropping.

        The fast path, a few byte checks: ``data`` is whole events (nothing is held back, so it
        starts one) ending in an ordinary JSON chunk, i.e. it ends with ``}`` and a blank line,
        and its ``"usage"`` near the end is ``null``, so its last event carries no usage and is
        no error (an error event has no usage field; a usage object, short or too long for the
        window, sends the read to a full search). The commonest read, one event on one line
        (its first line end is its last) whose last field is ``"usage":null`` (OpenAI's order),
        passes with two checks and has its null cut off by position. Anything else is parsed
        event by event. What the checks cannot see (a line that is not JSON, an error event or
        a comment before the last event of a read) is found after the body, by
        ``_check_events``, in the side copy: once that is full, every later event is parsed as
        it passes instead.
        """
        if not self._tail and self.response_id is not None:
            one_event = data.endswith(_NULL_USAGE_LAST) and data.find(b"\n") == len(data) - 2
            if one_event or (
                data.endswith(b"}\n\n")
                and (at := data.rfind(b'"usage":', len(data) - _USAGE_WINDOW)) >= 0
                and data.startswith(b"null", at + 8)
            ):
                side = self._side
                if len(side) + len(data) <= MAX_SIDE_COPY:
                    side += data
                    if not self._drop:
                        return data
                    # Asking for usage makes every chunk carry "usage":null; the caller did not ask.
                    return (
                        data[:_BEFORE_NULL_USAGE] + b"}\n\n"
                        if one_event
                        else data.replace(b',"usage":null', b"")
                    )
        return self._scan_events(data)

    def _scan_events(self, data: bytes) -> bytes:
        buf = self._tail + data if self._tail else data
        end = _end_of_last_event(buf)
        if end <= 1:  # no whole event yet: hold it (only while we may need to drop one)
            self._tail = buf
            return b""
        segment, rest = (buf, b"") if end == len(buf) else (buf[:end], buf[end:])
        if self.ttft_us is None:
            self.ttft_us = int((time.perf_counter() - self._t0) * 1_000_000)
        at = segment.rfind(b'"usage":', len(segment) - _USAGE_WINDOW)
        kept = len(self._side) + end <= MAX_SIDE_COPY  # else the check after the body cannot see it
        if (
            not kept
            or self.response_id is None
            or not segment.endswith(b"}\n\n")
            or not segment.startswith(b"data: {")
            or (at < 0 and b'"usage"' in segment)
            or (at >= 0 and segment[at + 8 : at + 12] != b"null")
            or b'"error"' in segment
            or (segment.find(b"\n\n") != end - 2 and not _ordinary_events(segment))
        ):
            segment = self._read_events(segment)  # anything but ordinary JSON chunks
        if kept:
            self._side += segment
        else:
            self.truncated = True
        self._tail = rest  # only now: after a failure above, passthrough forwards what was held
        if self._drop and b',"usage":null' in segment:
            return segment.replace(b',"usage":null', b"")
        return segment

    def _read_events(self, segment: bytes) -> bytes:
        """Read [DONE], ids, usage, errors and the shape of whole events; returns them without
        the usage-only chunk costkit asked for (when it did)."""
        kept: list[bytes] = []
        for raw, payload in SSEScanner().feed(segment):
            if payload is not None:
                if payload == DONE:
                    self.done = True
                elif (json_text := payload.strip(b" \t"))[:1] != b"{" or json_text[-1:] != b"}":
                    self.malformed = True  # a cheap shape check; the caller's parser will say more
                elif self._inspect(json_text) and self._drop:
                    continue
            kept.append(raw)
        return b"".join(kept)

    def _inspect(self, payload: bytes) -> bool:
        """Parse one chunk (``{`` to ``}``: JSON, it is an object) for its id, usage and error; True
        when it is a usage-only chunk."""
        try:
            chunk: dict[str, Any] = json.loads(payload)
        except (ValueError, RecursionError):
            self.malformed = True
            return False
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]  # bounded with the row's other text (accounting._sanitise)
        error = chunk.get("error")
        if error is not None and self.stream_error is None:
            self.stream_error = _error_message(error) or "error event in the stream"
        usage = parse_usage(chunk.get("usage"))
        if usage is None:
            return False
        self.usage = usage
        return bool(chunk.get("choices") == [])

    def fail(self) -> None:
        """The stream broke (connection dropped, timeout): what arrived is all there is."""
        self.failed = True

    def close(
        self, exhausted: bool | None = None, interrupted: str | None = None, *, by_caller: bool = False
    ) -> None:
        """The body is done with (or left: ``interrupted`` says why); settle exactly once.

        ``exhausted``: the body was read to its end (default: ``ended``). ``by_caller``: the
        caller closed it; a close while an exception is on its way through the caller's code
        (the SDK closes the response in a ``finally``) means its read did not finish.
        """
        with settling():  # a SIGTERM now waits until the row is made (see ledger.lifecycle)
            with _close_lock:
                if self._closed:
                    return
                self._closed = True
            self._settle(exhausted, interrupted, by_caller)

    def _settle(self, exhausted: bool | None, interrupted: str | None, by_caller: bool) -> None:
        self.exhausted = self.ended if exhausted is None else exhausted
        self.interrupted = interrupted
        if by_caller and interrupted is None and not self.exhausted:
            exc = sys.exc_info()[1]
            if exc is not None and not isinstance(exc, GeneratorExit):
                self.interrupted = f"the caller's read ended in {type(exc).__name__}"
        if self.is_sse:
            if self._tail.strip() and self._reading:  # a last event without its blank line
                last = self._tail + b"\n\n"
                self._side += last
                self._read_events(last)
            self._tail = b""
            if self._reading:  # a partial stream too: an error event it held is the row's error
                self._check_events()
        elif self._reading:
            self._read_json()
        self._on_close(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def pending(self) -> bytes:
        """Bytes held back while dropping (a last event without its blank line), to forward when the
        body ends: read as the last event first, so the usage chunk costkit asked for stays home."""
        if not self._drop or not self._tail:
            return b""
        last, self._tail = self._tail, b""
        if not last.strip():
            return last
        self._side += last + b"\n\n"
        if not self._read_events(last + b"\n\n"):
            return b""  # it was the usage chunk costkit asked for
        return last.replace(b',"usage":null', b"")

    # -- after the body ----------------------------------------------------------------

    def _check_events(self) -> None:
        """Parse every event the caller got: the byte checks let most pass unparsed, so a malformed
        line, or an error event sharing a network read with other events, is found here. The
        common case, ordinary chunks only, is proved without parsing them."""
        if plain_events(self._side):
            return
        for chunk in stream_chunks(self._side):
            if chunk is None:
                self.malformed = True
            elif self.stream_error is None and chunk.get("error") is not None:
                self.stream_error = _error_message(chunk["error"]) or "error event in the stream"

    @property
    def complete(self) -> bool:
        """Did the caller get the whole, well-formed response?"""
        if self.failed or self.malformed or self.interrupted is not None:
            return False
        if self.stream_error is not None:
            return False
        if self.is_sse:
            return self.done or (self.exhausted and self.usage is not None)
        return self.exhausted and isinstance(self._json, dict)

    def _read_json(self) -> None:
        if self._parsed_json:
            return
        self._parsed_json = True
        if self.truncated:
            self.notes.append(f"response body over {MAX_SIDE_COPY} bytes: not read")
            return
        try:
            self._json = json.loads(b"".join(self._body))
        except (ValueError, RecursionError):  # _json stays None
            if self.status < 400:
                self.notes.append("response body is not JSON")
            return
        body = self._json
        if not isinstance(body, dict):
            if self.status < 400:
                self.notes.append("response body is not a JSON object")
            return
        if isinstance(body.get("id"), str):
            self.response_id = body["id"]
        # (whatever the status: a row for an error status takes error_text instead)
        if body.get("error") is not None and "choices" not in body:
            self.stream_error = _error_message(body["error"]) or "error object in a 200 answer"
        self.usage = parse_usage(body.get("usage"))
        self.x_metrics, note = clean_metrics(body.get("x_metrics"))
        if note:
            self.notes.append(note)

    def _output_parts(self) -> tuple[str, list[str]]:
        if self.is_sse:
            return stream_output(self._side)
        return message_output(self._json)

    def completion_text(self) -> str:
        return self._output_parts()[0]

    def estimated_output_tokens(self) -> int:
        """Output tokens estimated from the text and tool calls that arrived."""
        text, tools = self._output_parts()
        if self.truncated:
            self.notes.append(
                f"only the first {MAX_SIDE_COPY} bytes of the response were kept for the estimate"
            )
        return count_text(text) + sum(count_text(t) for t in tools)

    def error_text(self) -> str:
        """The provider's error message for a 4xx/5xx response (never request headers)."""
        if self.is_sse:
            return f"HTTP {self.status}"
        self._read_json()
        body = self._json
        if isinstance(body, dict):
            message = _error_message(body.get("error"))
            if message is not None:
                return f"HTTP {self.status}: {message}"
        return f"HTTP {self.status}"


def _error_message(error: object) -> str | None:
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return str(error["message"])[:MAX_ERROR_TEXT]
    if isinstance(error, str):
        return error[:MAX_ERROR_TEXT]
    return None
