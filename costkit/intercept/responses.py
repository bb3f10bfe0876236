"""Reading a chat-completions response on the side, while it is forwarded to the caller.

``ResponseReader.feed`` takes each raw chunk as it arrives and returns the bytes
to forward (the same bytes, except a usage-only chunk costkit itself asked for).
Whether the response streams is read from its ``Content-Type``, never assumed
from the request. Usage is taken from whichever chunk carries it; without it,
output is estimated from what streamed.
"""

from __future__ import annotations

import json
import re
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from costkit.counting.tokens import count_text
from costkit.intercept.sse import DONE, SSEScanner

_USAGE_OBJECT = re.compile(rb'"usage"\s*:\s*\{')
_EVENT_END = re.compile(rb"\r?\n\r?\n")


def _end_of_last_event(buf: bytes) -> int:
    """The offset just past the last blank line in ``buf`` (0 if none)."""
    if b"\r" not in buf:
        return buf.rfind(b"\n\n") + 2 if b"\n\n" in buf else 0
    end = 0
    for match in _EVENT_END.finditer(buf):
        end = match.end()
    return end


@dataclass(frozen=True, slots=True)
class Usage:
    """The provider's own count: the truth, when present."""

    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


def _int(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def parse_usage(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    return Usage(_int(usage.get("prompt_tokens")), _int(cached), _int(usage.get("completion_tokens")))


class _Decoder:
    """Undo Content-Encoding on our side copy (the caller's httpx client decodes its own)."""

    def __init__(self, encoding: str) -> None:
        self._decompress: Callable[[bytes], bytes] | None = None
        codings = [c.strip().lower() for c in encoding.split(",") if c.strip() and c.strip() != "identity"]
        self.supported = len(codings) <= 1
        if not codings or not self.supported:
            return
        coding = codings[0]
        if coding in ("gzip", "x-gzip"):
            self._decompress = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress
        elif coding == "deflate":
            self._decompress = zlib.decompressobj().decompress
        elif coding == "br":
            try:
                import brotli  # type: ignore[import-not-found,unused-ignore]

                self._decompress = brotli.Decompressor().process
            except ImportError:
                self.supported = False
        elif coding == "zstd":
            try:
                import zstandard  # type: ignore[import-not-found,unused-ignore]

                self._decompress = zstandard.ZstdDecompressor().decompressobj().decompress
            except ImportError:
                self.supported = False
        else:
            self.supported = False

    def __call__(self, chunk: bytes) -> bytes:
        if self._decompress is None:
            return chunk
        try:
            return self._decompress(chunk)
        except Exception:  # corrupt: stop reading our copy, never the caller's
            self.supported = False
            self._decompress = None
            return b""


class ResponseReader:
    """Reads one response's body as it passes; ``close`` calls ``on_close(self)`` once."""

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
        self._decode = _Decoder(content_encoding)
        self._drop = drop_usage_chunk and self.is_sse and self._decode._decompress is None and status < 400
        self._t0 = t0
        self._on_close = on_close
        self._closed = False
        self._segments: list[bytes] = []  # the SSE body so far, in runs of whole events
        self._tail = b""  # an SSE event not yet complete
        self._body: list[bytes] = []  # a non-SSE body, decoded
        self.done = False  # saw [DONE]
        self.malformed = False
        self.failed = False
        self.exhausted = False
        self.ttft_us: int | None = None
        self.usage: Usage | None = None
        self.response_id: str | None = None
        self.x_metrics: dict[str, Any] | None = None
        self._json: Any = None
        self._parsed_json = False

    # -- while streaming ---------------------------------------------------------------

    def feed(self, chunk: bytes) -> bytes:
        """Read a copy of ``chunk``; returns what the caller should get.

        Work per chunk is a few byte searches; events are parsed only where an id or
        usage is to be read (the first chunk, the usage chunk) and, after the body, for
        an estimate.
        """
        if not chunk:
            return chunk
        data = self._decode(chunk) if self._decode.supported else b""
        if not self.is_sse:
            self._body.append(data)
            return chunk
        buf = self._tail + data if self._tail else data
        end = _end_of_last_event(buf)
        if end <= 0:  # no whole event yet: hold it (only while we may need to drop one)
            self._tail = buf
            return b"" if self._drop else chunk
        segment, self._tail = (buf, b"") if end == len(buf) else (buf[:end], buf[end:])
        self._segments.append(segment)
        if self.ttft_us is None:
            self.ttft_us = int((time.perf_counter() - self._t0) * 1_000_000)
        if (
            self.response_id is not None
            and segment.startswith(b"data: {")
            and segment.endswith(b"}\n\n")
            and segment.find(b"\n\n") == len(segment) - 2
            and (b'"usage"' not in segment or b'"usage":null' in segment)
        ):
            pass  # the common case: one ordinary JSON chunk, nothing to read from it now
        else:
            segment = self._read_events(segment)
        if not self._drop:
            return chunk
        # Asking for usage makes every chunk carry "usage":null; the caller did not ask.
        return segment.replace(b',"usage":null', b"") if b',"usage":null' in segment else segment

    def _read_events(self, segment: bytes) -> bytes:
        """Read [DONE], ids, usage and the shape of whole events; returns them without the
        usage-only chunk costkit asked for (when it did)."""
        kept: list[bytes] = []
        for raw, payload in SSEScanner().feed(segment):
            if payload is not None:
                if payload == DONE:
                    self.done = True
                elif payload[:1] != b"{" or payload[-1:] != b"}":
                    self.malformed = True  # a cheap shape check; the caller's parser will say more
                elif (
                    (self.response_id is None or _USAGE_OBJECT.search(payload))
                    and self._inspect(payload)
                    and self._drop
                ):
                    continue
            kept.append(raw)
        return b"".join(kept)

    def _inspect(self, payload: bytes) -> bool:
        """Parse one chunk for its id and usage; True when it is a usage-only chunk."""
        try:
            chunk = json.loads(payload)
        except ValueError:
            self.malformed = True
            return False
        if not isinstance(chunk, dict):
            self.malformed = True
            return False
        if self.response_id is None and isinstance(chunk.get("id"), str):
            self.response_id = chunk["id"]
        usage = parse_usage(chunk.get("usage"))
        if usage is None:
            return False
        self.usage = usage
        return chunk.get("choices") == []

    def fail(self) -> None:
        """The stream broke (connection dropped, timeout): what arrived is all there is."""
        self.failed = True

    def close(self, exhausted: bool) -> None:
        """The caller is done with the body; settle once."""
        if self._closed:
            return
        self._closed = True
        self.exhausted = exhausted
        if self.is_sse:
            if self._tail.strip():  # a last event without its blank line
                last = self._tail + b"\n\n"
                self._segments.append(last)
                self._read_events(last)
            self._tail = b""
        else:
            self._read_json()
        self._on_close(self)

    def _payloads(self) -> list[bytes]:
        """Every data payload of the stream, [DONE] excepted."""
        events = SSEScanner().feed(b"".join(self._segments))
        return [payload for _raw, payload in events if payload is not None and payload != DONE]

    # -- after the body ----------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """Did the caller get the whole response?"""
        if self.failed:
            return False
        if self.is_sse:
            if self.malformed:
                return False
            return self.done or (self.exhausted and self.usage is not None)
        return self.exhausted and isinstance(self._json, dict)

    def _read_json(self) -> None:
        if self._parsed_json:
            return
        self._parsed_json = True
        try:
            self._json = json.loads(b"".join(self._body))
        except (ValueError, RecursionError):
            self._json = None
            return
        body = self._json
        if not isinstance(body, dict):
            return
        if isinstance(body.get("id"), str):
            self.response_id = body["id"]
        self.usage = parse_usage(body.get("usage"))
        metrics = body.get("x_metrics")
        if isinstance(metrics, dict):
            self.x_metrics = metrics

    def _chunks(self) -> list[dict[str, Any]]:
        out = []
        for payload in self._payloads():
            try:
                chunk = json.loads(payload)
            except ValueError:
                continue
            if isinstance(chunk, dict):
                out.append(chunk)
        return out

    def _output_parts(self) -> tuple[str, list[str]]:
        """(completion text, tool-call names and arguments) of what the caller received."""
        text: list[str] = []
        tools: list[str] = []
        if self.is_sse:
            calls: dict[tuple[int, int], list[str]] = {}  # (choice, tool call) -> fragments
            for chunk in self._chunks():
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    if isinstance(delta, dict):
                        _collect_delta(delta, _int(choice.get("index")), text, calls)
            tools = ["".join(parts) for parts in calls.values()]
        elif isinstance(self._json, dict):
            for choice in self._json.get("choices") or ():
                message = choice.get("message") if isinstance(choice, dict) else None
                if isinstance(message, dict):
                    _collect(message, text, tools)
        return "".join(text), tools

    def completion_text(self) -> str:
        return self._output_parts()[0]

    def estimated_output_tokens(self) -> int:
        """Output tokens estimated from the text and tool calls that arrived."""
        text, tools = self._output_parts()
        return count_text(text) + sum(count_text(t) for t in tools)

    def error_text(self) -> str:
        """The provider's error message for a 4xx/5xx response (never request headers)."""
        if self.is_sse:
            return f"HTTP {self.status}"
        self._read_json()
        body = self._json
        if isinstance(body, dict):
            error = body.get("error")
            if isinstance(error, dict) and isinstance(error.get("message"), str):
                return f"HTTP {self.status}: {error['message']}"
            if isinstance(error, str):
                return f"HTTP {self.status}: {error}"
        return f"HTTP {self.status}"


def _collect(message: dict[str, Any], text: list[str], tools: list[str]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        text.append(content)
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        text.append(refusal)
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tools.append(
                "".join(function[k] for k in ("name", "arguments") if isinstance(function.get(k), str))
            )


def _collect_delta(
    delta: dict[str, Any], choice: int, text: list[str], calls: dict[tuple[int, int], list[str]]
) -> None:
    """A streamed delta: text goes to ``text``; tool-call fragments join their call's parts."""
    for key in ("content", "refusal"):
        if isinstance(delta.get(key), str):
            text.append(delta[key])
    for call in delta.get("tool_calls") or ():
        if not isinstance(call, dict):
            continue
        parts = calls.setdefault((choice, _int(call.get("index"))), [])
        function = call.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    parts.append(function[key])
