"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

``FakeUpstream`` speaks the provider's wire format (``https://platform.qubrid.com/v1``, OpenAI
chat completions) over real HTTP/1.1 with keep-alive: JSON bodies with ``Content-Length``, and
Server-Sent Events in chunked transfer encoding, each event written to the socket as it is made.
How it answers ``POST /v1/chat/completions`` is a *scenario*, named by the request header
``X-Fake-Scenario`` or else by ``FakeUpstream.default_scenario`` (see ``SCENARIOS``).

Usage numbers start from counts made independently of costkit's counter (``tests/reference_counts.py``:
plain tiktoken and the OpenAI cookbook rules). By default the fake then *disagrees* with any
count costkit could make, as the real provider does (``FakeUpstream.disagree``): a prompt offset
that changes from request to request, hidden reasoning tokens inside ``completion_tokens``, and
a warm prompt cache. Each recorded request keeps the exact usage object it was answered with
(``RecordedRequest.usage``), so a test reads what the provider said instead of recomputing it.

In-thread::

    with FakeUpstream() as upstream:
        client = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)

As a process (``python -m tests.fakeupstream [--port N]``), it prints
``READY http://127.0.0.1:PORT/v1`` and serves until SIGTERM or SIGINT; each request then
chooses its scenario and knobs with the ``X-Fake-*`` headers.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import unquote

from tests.reference_counts import (
    DEFAULT_COMPLETION_TEXT,
    Completion,
    completion_text_of_words,
    count_completion,
    count_prompt,
    count_text,
    reference_encoding,
)

__all__ = [
    "DEFAULT_COMPLETION_TEXT",
    "DEFAULT_TOOL_ARGUMENTS",
    "MODEL_IDS",
    "SCENARIOS",
    "Completion",
    "FakeUpstream",
    "RecordedRequest",
    "completion_text_of_words",
    "count_completion",
    "count_prompt",
    "count_text",
    "disagreement",
    "reference_encoding",
    "warm_cache_tokens",
]

SCENARIOS = frozenset(
    {
        "auto",
        "json",
        "json_x_metrics",
        "json_no_usage",
        "json_tool_calls",
        "sse",
        "sse_usage_on_choice",
        "sse_no_usage",
        "sse_tool_calls",
        "sse_cut",
        "sse_malformed",
        "sse_malformed_after_id",
        "sse_error_event",
        "json_not_json",
        "json_error_200",
        "status_429",
        "status_500",
        "status_400",
        "slow",
    }
)
MODEL_IDS = ("openai/gpt-4.1", "openai/gpt-4.1-mini", "openai/gpt-4.1-nano")
DEFAULT_TOOL_NAME = "get_current_weather"
DEFAULT_TOOL_ARGUMENTS = '{"location":"Boston, MA","unit":"celsius"}'
SCENARIO_HEADER = "x-fake-scenario"
WORDS_HEADER = "x-fake-completion-words"
CHUNK_DELAY_HEADER = "x-fake-chunk-delay-ms"
DELAY_HEADER = "x-fake-delay-ms"
CACHED_HEADER = "x-fake-cached-tokens"
EXTRA_PROMPT_HEADER = "x-fake-extra-prompt-tokens"
GZIP_HEADER = "x-fake-gzip"
ENCODING_HEADER = "x-fake-encoding"
FORCE_ENCODING_HEADER = "x-fake-force-encoding"
USAGE_HEADER = "x-fake-usage"
DISAGREE_HEADER = "x-fake-disagree"
"""``X-Fake-Disagree: 0`` reports usage costkit could compute itself; ``1`` the disagreeing usage."""
SEQUENCE_HEADER = "x-fake-sequence"
"""``X-Fake-Sequence: N`` answers as the N-th chat answer would (the same disagreement), without
taking a number: two requests with the same N get the same usage."""
CACHE_MIN_TOKENS, CACHE_STEP_TOKENS = 1024, 128
"""The provider's prompt cache: nothing below 1024 prompt tokens, then prefixes in steps of 128."""
X_METRICS_HEADER = "x-fake-x-metrics"
LINE_ENDING_HEADER = "x-fake-line-ending"
WRITE_SIZE_HEADER = "x-fake-write-size"
ERROR_MESSAGE_HEADER = "x-fake-error-message"
"""JSON string: the message of ``sse_error_event`` and ``json_error_200`` (hostile text, ``\\u0000``...)."""
STATUS_HEADER = "x-fake-status"
"""``X-Fake-Status: 401`` answers 401 and echoes the caller's key in the message, as some providers do."""
ABSENT = "$absent"
"""In ``X-Fake-Usage``, a field whose value is this string is left out of the usage object."""
ENCODINGS = ("gzip", "deflate", "deflate-raw", "br", "zstd", "x-unknown")
"""``deflate-raw`` is sent as ``deflate`` without the zlib wrapper (as some servers do);
``x-unknown`` is a coding no client knows (gzip bytes under another name)."""

_CHAT_PATH = "/v1/chat/completions"
_MODELS_PATH = "/v1/models"
_FINGERPRINT = "fp_b3f1157249"
_MODEL_CREATED = 1744316542
_COMPLETION_DETAILS = {
    "reasoning_tokens": 0,
    "audio_tokens": 0,
    "accepted_prediction_tokens": 0,
    "rejected_prediction_tokens": 0,
}


def disagreement(sequence: int) -> tuple[int, int]:
    """(prompt offset, hidden reasoning tokens) of the ``sequence``-th chat answer in disagreeing
    mode: never 0, and different from one request to the next (what the provider adds that no
    client sees: its own framing of the prompt, the tokens a model thinks before it answers)."""
    return 5 + sequence % 11, 24 + 8 * (sequence % 7)


def warm_cache_tokens(prompt_tokens: int) -> int:
    """``cached_tokens`` for a prompt whose every prefix is in a warm cache: 0 below 1024 tokens,
    else the longest prefix of 1024 + 128·k tokens (the provider's rule)."""
    if prompt_tokens < CACHE_MIN_TOKENS:
        return 0
    return prompt_tokens - (prompt_tokens - CACHE_MIN_TOKENS) % CACHE_STEP_TOKENS


# ---------------------------------------------------------------- recorded traffic


@dataclass(frozen=True)
class RecordedRequest:
    """One request as it arrived: ``headers`` keep the order and spelling of the wire."""

    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    json: Any
    scenario: str | None
    connection: int
    received_at: float
    sent: dict[str, Any] = dataclass_field(default_factory=dict, compare=False, repr=False)
    """What the answer carried that a test may need to read back: ``"id"`` (a chat answer's id),
    ``"sequence"`` (its number, see ``disagreement``) and ``"usage"`` (once a usage went out)."""

    @property
    def usage(self) -> Any:
        """The exact usage object the answer carried (None when it carried none)."""
        return self.sent.get("usage")

    @property
    def response_id(self) -> str | None:
        """The ``chatcmpl-...`` id of the chat answer (None for any other answer)."""
        return self.sent.get("id")

    @property
    def sequence(self) -> int | None:
        """The number the chat answer was made as (``disagreement(sequence)``); None for others."""
        return self.sent.get("sequence")

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``default``."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return default

    def header_values(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive), in arrival order."""
        lowered = name.lower()
        return [value for key, value in self.headers if key.lower() == lowered]


def _error_body(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return json.dumps({"error": error}, indent=2).encode()


_RATE_LIMIT_BODY = _error_body(
    "Rate limit reached for openai/gpt-4.1 on tokens per min (TPM): Limit 30000, Used 30000, "
    "Requested 120. Please try again in 240ms.",
    "rate_limit_exceeded",
    code="rate_limit_exceeded",
)
_SERVER_ERROR_BODY = _error_body(
    "The server had an error while processing your request. Sorry about that!", "server_error"
)
_BAD_REQUEST_BODY = _error_body(
    "Invalid value for 'temperature': must be between 0 and 2.",
    "invalid_request_error",
    param="temperature",
    code="invalid_value",
)
_CONNECTION_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


# ---------------------------------------------------------------- the HTTP handler


class _Handler(BaseHTTPRequestHandler):
    """One connection; ``handle()`` loops over keep-alive requests."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Events are small writes in a row: Nagle plus a delayed ACK would stall them.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connection_id = self.server.register(self.connection)

    def finish(self) -> None:
        self.server.unregister(self.connection)
        with contextlib.suppress(_CONNECTION_ERRORS):
            super().finish()

    def version_string(self) -> str:
        return "fakeupstream"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a test server does not log every request."""

    # ------------------------------------------------------------ plumbing

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size_line = self.rfile.readline(1024)
                size = int(size_line.split(b";")[0].strip() or b"x", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline(3)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _head(
        self, status: int, content_type: str, extra: Sequence[tuple[str, str]], length: int | None
    ) -> bytes:
        lines = [
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}",
            f"Date: {formatdate(usegmt=True)}",
            f"Content-Type: {content_type}",
            f"Content-Length: {length}" if length is not None else "Transfer-Encoding: chunked",
            "Connection: close" if self.close_connection else "Connection: keep-alive",
            f"Server: {self.version_string()}",
        ]
        lines += [f"{key}: {value}" for key, value in extra]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _send(self, status: int, body: bytes, extra: Sequence[tuple[str, str]] = ()) -> None:
        """A JSON answer: head and body in one write (HEAD gets the head only)."""
        head = self._head(status, "application/json", extra, len(body))
        self.wfile.write(head if self.command == "HEAD" else head + body)

    def _send_error(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        self._send(status, _error_body(message, kind, param), self._api_headers())

    def _send_405(self, allow: str) -> None:
        body = _error_body(f"Method {self.command} not allowed.", "invalid_request_error")
        self._send(405, body, [("Allow", allow), *self._api_headers()])

    def _api_headers(self, processing_ms: int = 0) -> list[tuple[str, str]]:
        return [
            ("access-control-expose-headers", "X-Request-ID"),
            ("openai-organization", "costkit-tests"),
            ("openai-processing-ms", str(processing_ms)),
            ("openai-version", "2020-10-01"),
            ("x-ratelimit-limit-requests", "10000"),
            ("x-ratelimit-limit-tokens", "30000000"),
            ("x-ratelimit-remaining-requests", "9999"),
            ("x-ratelimit-remaining-tokens", "29999000"),
            ("x-ratelimit-reset-requests", "6ms"),
            ("x-ratelimit-reset-tokens", "2ms"),
            ("x-request-id", f"req_{uuid.uuid4().hex}"),
        ]

    # ------------------------------------------------------------ dispatch

    def _dispatch(self) -> None:
        started = time.perf_counter()
        try:
            try:
                raw = self._read_body()
            except ValueError:
                self.close_connection = True
                self._send_error(400, "Malformed chunked request body.", "invalid_request_error")
                return
            try:
                parsed: Any = json.loads(raw) if raw else None
            except ValueError:
                parsed = None
            path = self.path.partition("?")[0]
            scenario = self.headers.get(SCENARIO_HEADER) if path == _CHAT_PATH else None
            recorded = RecordedRequest(
                self.command,
                self.path,
                tuple(self.headers.items()),
                raw,
                parsed,
                scenario or (self.server.upstream.default_scenario if path == _CHAT_PATH else None),
                self.connection_id,
                time.monotonic(),
            )
            self.server.upstream._record(recorded)
            if path == _CHAT_PATH:
                if self.command != "POST":
                    self._send_405("POST")
                    return
                self._chat(raw, parsed, scenario, started, recorded)
            elif path == _MODELS_PATH or path.startswith(_MODELS_PATH + "/"):
                if self.command not in ("GET", "HEAD"):
                    self._send_405("GET")
                    return
                self._models(path)
            else:
                self._send_error(404, f"Invalid URL ({self.command} {path})", "invalid_request_error")
        except _CONNECTION_ERRORS:
            self.close_connection = True
        except Exception as exc:
            self.close_connection = True
            self.server.upstream._record_error(exc)
            traceback.print_exc(file=sys.stderr)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _dispatch

    def _models(self, path: str) -> None:
        models = [
            {"id": model, "object": "model", "created": _MODEL_CREATED, "owned_by": "openai"}
            for model in MODEL_IDS
        ]
        if path == _MODELS_PATH:
            self._send(
                200, json.dumps({"object": "list", "data": models}, indent=2).encode(), self._api_headers()
            )
            return
        wanted = unquote(path[len(_MODELS_PATH) + 1 :])
        for model in models:
            if model["id"] == wanted:
                self._send(200, json.dumps(model, indent=2).encode(), self._api_headers())
                return
        self._send_error(404, f"The model '{wanted}' does not exist", "invalid_request_error", "model")

    # ------------------------------------------------------------ chat completions

    def _int_header(self, name: str, default: int) -> int:
        value = self.headers.get(name)
        return default if value is None else int(value)

    def _chat(
        self, raw: bytes, body: Any, scenario: str | None, started: float, recorded: RecordedRequest
    ) -> None:
        upstream = self.server.upstream
        scenario = scenario or upstream.default_scenario
        if scenario not in SCENARIOS:
            self._send_error(
                400,
                f"Unknown X-Fake-Scenario {scenario!r}; one of {sorted(SCENARIOS)}",
                "invalid_request_error",
            )
            return
        if scenario == "status_429":
            self._send(429, _RATE_LIMIT_BODY, [("retry-after", "0"), *self._api_headers()])
            return
        if scenario == "status_500":
            self._send(500, _SERVER_ERROR_BODY, self._api_headers())
            return
        if scenario == "status_400":
            self._send(400, _BAD_REQUEST_BODY, self._api_headers())
            return
        if self.headers.get(STATUS_HEADER) == "401":
            # As some providers do: the key is echoed back in the message.
            key = self.headers.get("Authorization", "").partition(" ")[2]
            body = _error_body(
                f"Incorrect API key provided: {key}. You can find your API key at "
                "https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                code="invalid_api_key",
            )
            self._send(401, body, self._api_headers())
            return
        if not isinstance(body, dict):
            self._send_error(
                400, "We could not parse the JSON body of your request.", "invalid_request_error"
            )
            return
        for field in ("model", "messages"):
            if field not in body:
                self._send_error(
                    400, f"Missing required parameter: '{field}'.", "invalid_request_error", field
                )
                return
        try:
            prompt = count_prompt(body, raw)
        except (ValueError, TypeError, AttributeError) as exc:
            self._send_error(400, f"Invalid 'messages': {exc}", "invalid_request_error", "messages")
            return
        if scenario == "slow":
            delay_ms = self.headers.get(DELAY_HEADER)
            delay = upstream.delay if delay_ms is None else int(delay_ms) / 1000
            if upstream._stopping.wait(delay):
                self.close_connection = True
                return
            scenario = "auto"
        if scenario == "auto":
            scenario = "json" if body.get("stream") is False else "sse"
        try:
            exchange = _Exchange(self, body, scenario, prompt, started, recorded)
        except ValueError as exc:
            self._send_error(400, f"Invalid X-Fake-* header: {exc}", "invalid_request_error")
            return
        exchange.answer()


class _Exchange:
    """Builds and writes one chat-completions answer."""

    def __init__(
        self,
        handler: _Handler,
        body: dict[str, Any],
        scenario: str,
        prompt: int,
        started: float,
        recorded: RecordedRequest,
    ):
        upstream = handler.server.upstream
        self.handler = handler
        self.body = body
        self.scenario = scenario
        self.started = started
        self.recorded = recorded
        sequence = handler._int_header(SEQUENCE_HEADER, 0) or upstream._next_sequence()
        recorded.sent["sequence"] = sequence  # every chat answer has one, agreeing or not
        disagree = bool(handler._int_header(DISAGREE_HEADER, int(upstream.disagree)))
        offset, self.reasoning = disagreement(sequence) if disagree else (0, 0)
        extra = handler._int_header(EXTRA_PROMPT_HEADER, upstream.extra_prompt_tokens)
        self.prompt = prompt + offset + extra
        cached = upstream.cached_tokens
        if cached is None:
            cached = warm_cache_tokens(self.prompt) if disagree else 0
        self.cached = handler._int_header(CACHED_HEADER, cached)
        self.chunk_delay = handler._int_header(CHUNK_DELAY_HEADER, round(upstream.chunk_delay * 1000)) / 1000
        self.upstream = upstream
        words = handler.headers.get(WORDS_HEADER)
        text = completion_text_of_words(int(words)) if words is not None else upstream.completion_text
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        self.completion = count_completion(text, limit if isinstance(limit, int) else None)
        self.tool_name, self.tool_arguments = self._tool_call()
        self.id = f"chatcmpl-{uuid.uuid4().hex[:29]}"
        recorded.sent["id"] = self.id
        self.created = int(time.time())
        accepted = handler.headers.get("Accept-Encoding", "")
        encoding = handler.headers.get(ENCODING_HEADER, upstream.encoding)
        if encoding is None and handler._int_header(GZIP_HEADER, int(upstream.gzip)):
            encoding = "gzip"
        if encoding is not None and encoding not in ENCODINGS:
            raise ValueError(f"{ENCODING_HEADER} must be one of {', '.join(ENCODINGS)}")
        force = bool(handler._int_header(FORCE_ENCODING_HEADER, int(upstream.force_encoding)))
        wire = "deflate" if encoding == "deflate-raw" else encoding
        self.encoding = encoding if encoding is not None and (force or wire in accepted) else None
        self.usage_override = _json_header(handler, USAGE_HEADER)
        message = _json_header(handler, ERROR_MESSAGE_HEADER)
        self.error_message = "The model overloaded mid-stream." if message is _NO_OVERRIDE else str(message)
        self.x_metrics_override = _json_header(handler, X_METRICS_HEADER)
        self.crlf = handler.headers.get(LINE_ENDING_HEADER, upstream.line_ending) == "crlf"
        self.write_size = handler._int_header(WRITE_SIZE_HEADER, upstream.write_size)

    def _tool_call(self) -> tuple[str, str]:
        for tool in self.body.get("tools") or ():
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if isinstance(function, Mapping) and isinstance(function.get("name"), str):
                return function["name"], DEFAULT_TOOL_ARGUMENTS
        return DEFAULT_TOOL_NAME, DEFAULT_TOOL_ARGUMENTS

    def _usage(self, visible_tokens: int) -> Any:
        """The usage object for a reply of ``visible_tokens`` (plus the hidden reasoning tokens)."""
        completion_tokens = visible_tokens + self.reasoning
        usage: Any = {
            "prompt_tokens": self.prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached, "audio_tokens": 0},
            "completion_tokens_details": {**_COMPLETION_DETAILS, "reasoning_tokens": self.reasoning},
        }
        override = self.usage_override
        if override is _NO_OVERRIDE:
            return usage
        if not isinstance(override, dict):
            return override  # the whole usage replaced: a string, a list, null...
        for key, value in override.items():
            if value == ABSENT:
                usage.pop(key, None)
            else:
                usage[key] = value
        return usage

    def _sent_usage(self, usage: Any) -> None:
        """Keep the usage the answer carries on the recorded request (before it is written)."""
        self.recorded.sent["usage"] = usage

    def _compressor(self) -> Any:
        """A compressobj for ``self.encoding`` (None: identity)."""
        if self.encoding is None:
            return None
        if self.encoding in ("br", "zstd"):
            return _StreamCompressor(self.encoding)
        if self.encoding == "deflate":
            return zlib.compressobj()
        if self.encoding == "deflate-raw":
            return zlib.compressobj(wbits=-zlib.MAX_WBITS)
        return zlib.compressobj(wbits=31)  # gzip, and x-unknown (gzip under a name nobody knows)

    def _encoding_header(self) -> list[tuple[str, str]]:
        if self.encoding is None:
            return []
        return [("Content-Encoding", "deflate" if self.encoding == "deflate-raw" else self.encoding)]

    def _tool_tokens(self) -> int:
        return count_text(self.tool_name) + count_text(self.tool_arguments)

    def answer(self) -> None:
        if self.scenario.startswith("json"):
            self._json()
        else:
            self._sse()

    # ------------------------------------------------------------ JSON

    def _json(self) -> None:
        tools = self.scenario == "json_tool_calls"
        message: dict[str, Any] = {"role": "assistant", "content": None if tools else self.completion.text}
        if tools:
            message["tool_calls"] = [
                {
                    "id": f"call_{uuid.uuid4().hex[:24]}",
                    "type": "function",
                    "function": {"name": self.tool_name, "arguments": self.tool_arguments},
                }
            ]
        message.update(refusal=None, annotations=[])
        completion_tokens = self._tool_tokens() if tools else self.completion.tokens
        response: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "logprobs": None,
                    "finish_reason": "tool_calls" if tools else self.completion.finish_reason,
                }
            ],
        }
        if self.scenario != "json_no_usage":
            response["usage"] = self._usage(completion_tokens)
        response.update(service_tier="default", system_fingerprint=_FINGERPRINT)
        if self.scenario == "json_x_metrics":
            ttft = 0.25
            total = ttft + completion_tokens / 80.0
            response["x_metrics"] = {"ttft_seconds": ttft, "tps": 80.0, "total_time_seconds": round(total, 6)}
        if self.x_metrics_override is not _NO_OVERRIDE:
            response["x_metrics"] = self.x_metrics_override
        payload = json.dumps(response, indent=2, ensure_ascii=False).encode()
        if self.scenario == "json_not_json":
            payload = b"<html><body><h1>502 Bad Gateway</h1></body></html>\n"
        elif self.scenario == "json_error_200":  # some gateways answer errors with 200
            error = {"message": self.error_message, "type": "server_error", "param": None, "code": None}
            payload = json.dumps({"error": error}).encode()
        elif "usage" in response:
            self._sent_usage(response["usage"])
        headers = self.handler._api_headers(self._elapsed_ms())
        compressor = self._compressor()
        if compressor is not None:
            payload = compressor.compress(payload) + compressor.flush()
            headers += self._encoding_header()
        self.handler._send(200, payload, headers)

    def _elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)

    # ------------------------------------------------------------ SSE

    def _sse(self) -> None:
        handler, scenario = self.handler, self.scenario
        options = self.body.get("stream_options")
        options = options if isinstance(options, Mapping) else {}
        asked = options.get("include_usage") is True
        obfuscate = options.get("include_obfuscation") is True
        prefix = (
            f'{{"id":"{self.id}","object":"chat.completion.chunk","created":{self.created},'
            f'"model":{json.dumps(self.body.get("model"))},"service_tier":"default",'
            f'"system_fingerprint":"{_FINGERPRINT}","choices":['
        )
        null_usage = ',"usage":null' if asked and scenario != "sse_no_usage" else ""

        def chunk(choice: str, usage: str = null_usage, pad: bool = obfuscate) -> bytes:
            tail = f',"obfuscation":"{"abcdefghijklmnop"[: 16 - len(choice) % 16]}"' if pad else ""
            return f"data: {prefix}{choice}]{usage}{tail}}}\n\n".encode()

        tools = scenario == "sse_tool_calls"
        if tools:
            first = (
                '{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,'
                f'"id":"call_{uuid.uuid4().hex[:24]}","type":"function","function":{{"name":'
                f'{json.dumps(self.tool_name)},"arguments":""}}}}],"refusal":null}},"logprobs":null,'
                '"finish_reason":null}'
            )
            args = self.tool_arguments
            middle = [
                '{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":'
                f'{json.dumps(args[i : i + 6])}}}}}]}},"logprobs":null,"finish_reason":null}}'
                for i in range(0, len(args), 6)
            ]
            finish, completion_tokens = "tool_calls", self._tool_tokens()
        else:
            first = (
                '{"index":0,"delta":{"role":"assistant","content":"","refusal":null},'
                '"logprobs":null,"finish_reason":null}'
            )
            middle = [
                f'{{"index":0,"delta":{{"content":{delta}}},"logprobs":null,"finish_reason":null}}'
                for delta in self.completion.deltas
            ]
            finish, completion_tokens = self.completion.finish_reason, self.completion.tokens
        last = f'{{"index":0,"delta":{{}},"logprobs":null,"finish_reason":"{finish}"}}'
        usage_object = self._usage(completion_tokens)
        usage = json.dumps(usage_object, separators=(",", ":"))

        events = [chunk(first), *(chunk(choice) for choice in middle)]
        if scenario == "sse_cut":
            self._write_events(events[: 1 + self.upstream.cut_after_words], last_chunk=False)
            handler.close_connection = True
            handler.connection.shutdown(socket.SHUT_RDWR)  # FIN mid-body: no [DONE], no last chunk
            return
        if scenario == "sse_malformed":
            events.insert(min(3, len(events)), b"data: {not json\n\n")
        if scenario == "sse_malformed_after_id":  # shaped like a chunk, but not JSON
            events.insert(min(3, len(events)), b'data: {"id":"' + self.id.encode() + b'",choices}\n\n')
        if scenario == "sse_error_event":
            error = json.dumps({"error": {"message": self.error_message, "type": "server_error"}})
            events.insert(min(3, len(events)), f"data: {error}\n\n".encode())
        if scenario == "sse_usage_on_choice":
            self._sent_usage(usage_object)
            events.append(chunk(last, usage=f',"usage":{usage}'))
        else:
            events.append(chunk(last))
            if asked and scenario != "sse_no_usage":
                self._sent_usage(usage_object)
                events.append(f'data: {prefix}],"usage":{usage}}}\n\n'.encode())
        events.append(b"data: [DONE]\n\n")
        self._write_events(events, last_chunk=True)

    def _write_events(self, events: list[bytes], *, last_chunk: bool) -> None:
        """The head, then one chunk per event, each its own write; the terminating zero-length
        chunk goes out with the last event when ``last_chunk``. With gzip, each event is
        compressed and sync-flushed, so it still arrives whole and at once."""
        handler = self.handler
        headers = handler._api_headers(self._elapsed_ms())
        compressor = self._compressor()
        headers += self._encoding_header()
        write, stopping, delay = handler.wfile.write, self.upstream._stopping, self.chunk_delay
        write(handler._head(200, "text/event-stream; charset=utf-8", headers, None))
        size = self.write_size
        for i, event in enumerate(events):
            if delay and i and stopping.wait(delay):
                handler.close_connection = True
                return
            final = last_chunk and i == len(events) - 1
            if self.crlf:
                event = event.replace(b"\n", b"\r\n")
            if compressor is not None:
                flush = zlib.Z_FINISH if final else zlib.Z_SYNC_FLUSH
                event = compressor.compress(event) + compressor.flush(flush)
            pieces = [event[j : j + size] for j in range(0, len(event), size)] if size > 0 else [event]
            for j, piece in enumerate(pieces):
                end = final and j == len(pieces) - 1
                write(b"%x\r\n%b\r\n%b" % (len(piece), piece, b"0\r\n\r\n" if end else b""))


class _StreamCompressor:
    """zlib's ``compress``/``flush(mode)`` for br (``brotli``) and zstd (``zstandard``)."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "br":
            import brotli

            self._br = brotli.Compressor()
        else:
            import zstandard

            self._zstd = zstandard.ZstdCompressor().compressobj()

    def compress(self, data: bytes) -> bytes:
        return bytes(self._br.process(data) if self.encoding == "br" else self._zstd.compress(data))

    def flush(self, mode: int = zlib.Z_FINISH) -> bytes:
        if self.encoding == "br":
            return bytes(self._br.finish() if mode == zlib.Z_FINISH else self._br.flush())
        import zstandard

        finish = mode == zlib.Z_FINISH
        return bytes(
            self._zstd.flush(
                zstandard.COMPRESSOBJ_FLUSH_FINISH if finish else zstandard.COMPRESSOBJ_FLUSH_BLOCK
            )
        )


_NO_OVERRIDE: Any = object()


def _json_header(handler: _Handler, name: str) -> Any:
    """A header's value parsed as JSON, or ``_NO_OVERRIDE`` when the header is absent."""
    raw = handler.headers.get(name)
    if raw is None:
        return _NO_OVERRIDE
    return json.loads(raw, parse_constant=lambda c: float(c))  # NaN and Infinity too


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], upstream: FakeUpstream):
        self.upstream = upstream
        self._connections: dict[socket.socket, int] = {}
        self._conn_lock = threading.Lock()
        self.connections_opened = 0
        super().__init__(address, _Handler)

    def register(self, sock: socket.socket) -> int:
        with self._conn_lock:
            self.connections_opened += 1
            self._connections[sock] = self.connections_opened
            return self.connections_opened

    def unregister(self, sock: socket.socket) -> None:
        with self._conn_lock:
            self._connections.pop(sock, None)

    def close_connections(self) -> None:
        with self._conn_lock:
            socks = list(self._connections)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # a client that went away
            super().handle_error(request, client_address)


# ---------------------------------------------------------------- the public face


class FakeUpstream:
    """A threaded HTTP/1.1 server on ``127.0.0.1`` answering like the provider.

    Settings (plain attributes, read per request, safe to change while serving):
    ``default_scenario`` (``"auto"``), ``delay`` (seconds before ``slow`` answers, 2.0),
    ``completion_text``, ``disagree`` (see below; True), ``extra_prompt_tokens`` (added to the
    counted prompt, 0), ``cached_tokens`` (reported ``prompt_tokens_details.cached_tokens``;
    None: 0, or the warm cache's share when disagreeing), ``chunk_delay``
    (seconds between SSE events, 0.0), ``cut_after_words`` (content events ``sse_cut`` sends, 3)
    ``gzip`` (compress chat answers for clients that accept gzip, as a CDN would; False),
    ``encoding`` (one of ``ENCODINGS``, for clients that accept it; None), ``force_encoding``
    (compress even for a client that asked for ``identity``, as a misbehaving proxy would;
    False), ``line_ending`` (``"crlf"`` for SSE lines ending in CR LF; ``"lf"``) and
    ``write_size`` (split each SSE event into writes of this many bytes, each its own HTTP
    chunk; 0: one write per event). The ``X-Fake-*`` request headers override them per
    request; ``X-Fake-Usage`` (JSON: an object's fields replace the usage's, ``"$absent"``
    removes one; anything else replaces the whole usage) and ``X-Fake-X-Metrics`` (JSON)
    shape hostile answers.

    ``disagree`` (header ``X-Fake-Disagree: 0|1``) makes the usage one costkit cannot derive,
    as the provider's is: ``prompt_tokens`` is the counted prompt plus an offset that changes
    from request to request, ``completion_tokens`` the visible reply plus hidden reasoning
    tokens (also in ``completion_tokens_details.reasoning_tokens``; see ``disagreement``), and
    ``prompt_tokens_details.cached_tokens`` what a warm cache serves (``warm_cache_tokens``: 0
    below 1024 prompt tokens, else 1024 + 128·k). The other knobs apply on top: the extra
    prompt tokens are added, a set ``cached_tokens`` replaces the cache's share, and
    ``X-Fake-Usage`` edits the result. Chat answers are numbered from 1 (``reset()`` starts
    again; ``X-Fake-Sequence: N`` answers as number N would); ``RecordedRequest.usage`` is the
    usage each answer carried, exactly as sent, and ``RecordedRequest.sequence`` its number.

    ``start()``/``stop()`` or use as a context manager; ``stop()`` also closes open keep-alive
    connections and aborts pending ``slow`` waits.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        default_scenario: str = "auto",
        delay: float = 2.0,
        completion_text: str = DEFAULT_COMPLETION_TEXT,
        disagree: bool = True,
        extra_prompt_tokens: int = 0,
        cached_tokens: int | None = None,
        chunk_delay: float = 0.0,
        cut_after_words: int = 3,
        gzip: bool = False,
        encoding: str | None = None,
        force_encoding: bool = False,
        line_ending: str = "lf",
        write_size: int = 0,
        record: bool = True,
    ) -> None:
        if default_scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario {default_scenario!r}; one of {sorted(SCENARIOS)}")
        self._settings = {
            "default_scenario": default_scenario,
            "delay": delay,
            "completion_text": completion_text,
            "disagree": disagree,
            "extra_prompt_tokens": extra_prompt_tokens,
            "cached_tokens": cached_tokens,
            "chunk_delay": chunk_delay,
            "cut_after_words": cut_after_words,
            "gzip": gzip,
            "encoding": encoding,
            "force_encoding": force_encoding,
            "line_ending": line_ending,
            "write_size": write_size,
        }
        self.default_scenario = default_scenario
        self.delay = delay
        self.completion_text = completion_text
        self.disagree = disagree
        self.extra_prompt_tokens = extra_prompt_tokens
        self.cached_tokens = cached_tokens
        self.chunk_delay = chunk_delay
        self.cut_after_words = cut_after_words
        self.gzip = gzip
        self.encoding = encoding
        self.force_encoding = force_encoding
        self.line_ending = line_ending
        self.write_size = write_size
        self.record = record
        self._port = port
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._sequence = 0
        self._errors: list[BaseException] = []
        self._arrived = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life cycle

    def start(self) -> FakeUpstream:
        """Bind, load the encoding, and serve on a daemon thread. Returns ``self``."""
        if self._server is not None:
            raise RuntimeError("already started")
        reference_encoding()  # before the first request, so no request pays for it
        count_completion(self.completion_text)
        self._stopping.clear()
        self._server = _Server(("127.0.0.1", self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fakeupstream",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, drop open connections, release the port. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.server_close()
        server.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------ what clients use

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``: the SDK's ``base_url``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def connections_opened(self) -> int:
        """TCP connections accepted since ``start()`` (keep-alive reuse keeps this low)."""
        return 0 if self._server is None else self._server.connections_opened

    # ------------------------------------------------------------ what arrived

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received, in arrival order (a new list on each access)."""
        with self._lock:
            return list(self._requests)

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions the server itself raised while answering (a healthy run has none)."""
        with self._lock:
            return list(self._errors)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``n`` requests arrived; raises ``TimeoutError`` after ``timeout``."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"{len(self._requests)} requests arrived, expected {n}")
            return list(self._requests)

    def reset(self) -> None:
        """Forget recorded requests and errors; restore the constructor's settings."""
        with self._lock:
            self._requests.clear()
            self._errors.clear()
            self._sequence = 0
        for name, value in self._settings.items():
            setattr(self, name, value)

    def _record(self, request: RecordedRequest) -> None:
        if self.record:
            with self._arrived:
                self._requests.append(request)
                self._arrived.notify_all()

    def _next_sequence(self) -> int:
        """1, 2, 3...: the number of this chat answer since ``start()`` or ``reset()``."""
        with self._lock:
            self._sequence += 1
            return self._sequence

    def _record_error(self, exc: BaseException) -> None:
        with self._lock:
            self._errors.append(exc)


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m tests.fakeupstream``: serve until SIGTERM/SIGINT, after printing READY."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.fakeupstream", description="An OpenAI-compatible server on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: any free one)")
    parser.add_argument("--scenario", default="auto", choices=sorted(SCENARIOS), help="default scenario")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds the slow scenario waits")
    parser.add_argument("--record", action="store_true", help="keep every request in memory")
    parser.add_argument(
        "--agree", action="store_true", help="report usage costkit could compute (no disagreeing usage)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with FakeUpstream(
        port=args.port,
        default_scenario=args.scenario,
        delay=args.delay,
        record=args.record,
        disagree=not args.agree,
    ) as up:
        print(f"READY {up.base_url}", flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
