"""The interceptor's accounting core, independent of the HTTP stack.

A ``Call`` follows one chat-completions request: ``prepare`` parses the body,
runs the pre-flight and the hooks (raising only a declared ``RequestRefused``,
before anything is sent) and says which bytes to send instead; ``tap`` reads a
copy of the response as it is forwarded; settling turns what was seen into
exactly one ledger row (a lock makes a second settle a no-op). Accounting
failures, and bugs in hooks, are logged and noted on the row, never raised into
the caller. Error text and notes are redacted of the caller's credentials and
anything key-shaped before they are stored or logged.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from functools import cached_property
from typing import Any

from costkit.counting.requests import count_request
from costkit.errors import ContextWindowExceeded, CostkitError, RequestRefused
from costkit.intercept.attribution import (
    TAGS_HEADER,
    current_tag_notes,
    current_tags,
    parse_tags_header,
)
from costkit.intercept.options import Options, log_once
from costkit.intercept.redact import redact, secrets_of
from costkit.intercept.responses import MAX_ERROR_TEXT, ResponseReader
from costkit.intercept.usage import charged_tokens
from costkit.ledger.lifecycle import settling
from costkit.ledger.row import Row, Status, new_request_id
from costkit.pricing import canonical_model, cost
from costkit.verdict import Preflight, preflight

log = logging.getLogger("costkit")

CHAT_COMPLETIONS_SUFFIX = "/chat/completions"
_TAGS_HEADER_BYTES = TAGS_HEADER.encode()
_MAX_NOTES_TEXT = 2000


def is_chat_completions(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/").endswith(CHAT_COMPLETIONS_SUFFIX)


def strip_tags_header(headers: Sequence[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], str | None]:
    """Headers without ``X-Costkit-Tags``, and that header's value (UTF-8, else Latin-1) if it was there."""
    kept: list[tuple[bytes, bytes]] = []
    values: list[str] = []
    for name, val in headers:
        if name.lower() == _TAGS_HEADER_BYTES:
            try:
                values.append(val.decode("utf-8"))
            except UnicodeDecodeError:
                values.append(val.decode("latin-1"))
        else:
            kept.append((name, val))
    return kept, ",".join(values) if values else None


def _with_usage_option(raw: bytes, body: dict[str, Any]) -> bytes | None:
    """The body asking for ``stream_options.include_usage``, or None if it already does."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    if options is None and "stream_options" not in body:
        text = raw.rstrip()
        if text.endswith(b"}"):  # append the field, leaving the caller's bytes as they were
            # a comma always: the object holds "stream" at least, so the field is never its first member
            return text[:-1] + b',"stream_options":{"include_usage":true}}'
    changed = dict(body)
    changed["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(changed, ensure_ascii=False, separators=(",", ":")).encode()


class Call:
    """One chat-completions request, from its body to its ledger row."""

    def __init__(
        self, options: Options, host: str, headers: Sequence[tuple[bytes, bytes]], body: bytes
    ) -> None:
        self.options = options
        self.request_id = new_request_id()
        self.started_at = datetime.now(timezone.utc)
        self._t0 = time.perf_counter()
        self.host = host
        self.headers, header_tags = strip_tags_header(headers)
        self.had_tags_header = header_tags is not None
        self.body_bytes = body
        self.send_body = body
        self.added_usage_option = False
        self.body: dict[str, Any] | None = None
        self.verdict: Preflight | None = None
        self.problem: str | None = None  # why the request could not be counted
        self.notes: list[str] = [*options.tag_notes, *current_tag_notes()]
        self.tags: dict[str, str] = {**options.tags, **current_tags()}
        self._settle_lock = threading.Lock()
        self._settled = False
        if header_tags is not None:
            header, notes = parse_tags_header(header_tags)
            self.tags.update(header)
            self.notes += notes

    @cached_property
    def secrets(self) -> tuple[str, ...]:
        """The caller's credential values, to redact from what is stored or logged (read when needed)."""
        return secrets_of(self.headers)

    @property
    def model(self) -> str:
        if self.verdict is not None:
            return self.verdict.model.id
        model = self.body.get("model") if self.body is not None else None
        return canonical_model(model)[:200] if isinstance(model, str) and model else "unknown"

    @property
    def request_changed(self) -> bool:
        """Whether the bytes to send differ from the caller's (tags header or usage option)."""
        return self.had_tags_header or self.send_body is not self.body_bytes

    def prepare(self) -> None:
        """Parse and pre-flight the body, run the hooks. Raises only a declared ``RequestRefused``."""
        try:
            body = json.loads(self.body_bytes)
        except (ValueError, RecursionError) as exc:
            self.problem = f"request body is not JSON: {exc}"
            return
        if not isinstance(body, dict):
            self.problem = "request body is not a JSON object"
            return
        self.body = body
        try:
            self.verdict = preflight(
                body,
                self.options.context_limit,
                default_output_reserve=self.options.default_output_reserve,
                price_book=self.options.price_book,
                at=self.started_at,
                host=self.host,
            )
        except CostkitError as exc:  # malformed or unknown model: sent as is, priced from usage if it can be
            self.problem = str(exc)
        except Exception as exc:  # a bug of ours: the request is still sent and accounted
            self.problem = f"costkit could not count the request ({type(exc).__name__})"
            log_once(("preflight", type(exc).__name__), "could not count a request", exc, self.secrets)
        if self.options.preflight and self.verdict is not None and not self.verdict.fits:
            verdict = self.verdict
            refusal = ContextWindowExceeded(
                verdict.input_tokens, verdict.context_limit, verdict.overflow, verdict.output_reserve
            )
            self.refuse(refusal)
        for hook in self.options.hooks:
            try:
                hook.before_send(self)
            except RequestRefused as refusal:
                self.refuse(refusal)
            except Exception as exc:
                self._hook_failed(hook, "before_send", exc)
        if body.get("stream") is True:
            try:
                changed = _with_usage_option(self.body_bytes, body)
            except (TypeError, ValueError):
                changed = None
            if changed is not None:
                self.send_body = changed
                self.added_usage_option = True
                # Uncompressed, so the usage chunk costkit asked for can be taken out again.
                self.headers = [(k, v) for k, v in self.headers if k.lower() != b"accept-encoding"]
                self.headers.append((b"Accept-Encoding", b"identity"))

    def _hook_failed(self, hook: object, method: str, exc: Exception) -> None:
        name = f"{type(hook).__qualname__}.{method}"
        self.notes.append(f"hook {name} failed ({type(exc).__name__}); the request was accounted anyway")
        log_once(
            ("hook", name, type(exc).__name__), f"hook {name} failed; accounting goes on", exc, self.secrets
        )

    def refuse(self, refusal: RequestRefused) -> None:
        """Record the request as blocked, then raise the refusal: nothing has been sent."""
        self._finish(status="blocked", http_status=None, error=str(refusal))
        raise refusal

    def failed(self, exc: BaseException) -> None:
        """The request never got a response (connection error, timeout)."""
        self._finish(status="error", http_status=None, error=f"{type(exc).__name__}: {exc}")

    def tap(self, status: int, headers: Mapping[str, str]) -> ResponseReader:
        """A reader for the response body; closing it settles this call."""
        return ResponseReader(
            status=status,
            content_type=headers.get("content-type", ""),
            content_encoding=headers.get("content-encoding", ""),
            drop_usage_chunk=self.added_usage_option,
            t0=self._t0,
            on_close=self._settled_from,
        )

    def _settled_from(self, reader: ResponseReader) -> None:
        if reader.status >= 400:
            self._finish(status="error", http_status=reader.status, error=reader.error_text(), reader=reader)
            return
        status: Status = "ok" if reader.complete else "partial"
        self._finish(status=status, http_status=reader.status, error=reader.stream_error, reader=reader)

    def _estimated_input(self) -> int | None:
        try:
            if self.verdict is not None:
                return self.verdict.input_tokens
            if self.body is not None:  # no verdict (a bad max_tokens, say): the input may still count
                return count_request(self.body).input_tokens
        except CostkitError as exc:
            self.problem = self.problem or str(exc)
        return None

    def _finish(
        self,
        status: Status,
        http_status: int | None,
        error: str | None = None,
        reader: ResponseReader | None = None,
    ) -> None:
        with settling():  # a SIGTERM now waits until the row is in the ledger's hands
            self._finish_once(status, http_status, error, reader)

    def _finish_once(
        self, status: Status, http_status: int | None, error: str | None, reader: ResponseReader | None
    ) -> None:
        with self._settle_lock:
            if self._settled:
                return
            self._settled = True
        try:
            row = self._row(status, http_status, error, reader)
        except Exception as exc:  # a bug of ours must not reach the caller; keep what we can
            log_once(("settle", type(exc).__name__), f"accounting failed for request {self.request_id}", exc)
            row = Row(
                model=self.model,
                status=status,
                request_id=self.request_id,
                started_at=self.started_at,
                endpoint_host=self.host,
                http_status=http_status,
                stream=reader.is_sse if reader is not None else False,
                tags=dict(self.tags),  # who to ask about it, as on any other row
                error="costkit accounting failed",
            )
        _sanitise(row, self.secrets if row.error or row.notes else ())
        self.options.record(row)
        for hook in self.options.hooks:
            try:
                hook.settled(self, row)
            except Exception as exc:
                name = f"{type(hook).__qualname__}.settled"
                log_once(("hook", name, type(exc).__name__), f"hook {name} failed", exc, self.secrets)

    def _row(
        self, status: Status, http_status: int | None, error: str | None, reader: ResponseReader | None
    ) -> Row:
        finished = time.perf_counter()
        estimated_input = self._estimated_input()
        row = Row(
            model=self.model,
            status=status,
            request_id=self.request_id,
            started_at=self.started_at,
            finished_at=datetime.now(timezone.utc),
            endpoint_host=self.host,
            http_status=http_status,
            stream=reader.is_sse
            if reader is not None
            else self.body is not None and self.body.get("stream") is True,
            estimated_input_tokens=estimated_input,
            latency_us=int((finished - self._t0) * 1_000_000),
            tags=dict(self.tags),
            error=error,
        )
        for note in self.notes:
            row.add_note(note)
        if reader is not None:
            row.response_id = reader.response_id
            row.ttft_us = reader.ttft_us
            row.x_metrics = reader.x_metrics
            if reader.interrupted:
                row.add_note(reader.interrupted)
            if self.options.store_text and self.body is not None:
                row.prompt_text = json.dumps(self.body.get("messages"), ensure_ascii=False)
                row.completion_text = reader.completion_text()
        if status in ("blocked", "error"):
            row.input_tokens = estimated_input or 0
            row.usage_source = "estimated"
            self._reader_notes(row, reader)
            return row  # nothing was billed
        charged = charged_tokens(
            reader.usage if reader is not None else None,
            estimated_input,
            reader.estimated_output_tokens if reader is not None else lambda: 0,
        )
        row.input_tokens = charged.input_tokens
        row.cached_input_tokens = charged.cached_input_tokens
        row.output_tokens = charged.output_tokens
        row.usage_source = charged.usage_source
        for note in charged.notes:
            row.add_note(note)
        self._reader_notes(row, reader)
        if not charged.input_known:
            row.add_note(f"unpriced: input tokens unknown ({self.problem or 'request could not be counted'})")
            return row
        self._price(row)
        return row

    @staticmethod
    def _reader_notes(row: Row, reader: ResponseReader | None) -> None:
        for note in reader.notes if reader is not None else ():
            row.add_note(note)

    def _price(self, row: Row) -> None:
        """Price the row's tokens by its model, start time and host; unpriced (with why) if none applies."""
        try:
            charged = cost(
                row.model,
                row.input_tokens,
                row.cached_input_tokens,
                row.output_tokens,
                at=self.started_at,
                price_book=self.options.price_book,
                host=self.host,
            )
        except CostkitError as exc:
            row.add_note(f"unpriced: {exc}")
            return
        row.cost_nanousd = charged.nanousd
        row.price_id = charged.price_id


def _text(value: str, secrets: Sequence[str], limit: int) -> str:
    """Upstream text as the ledger may hold it: redacted, bounded, without NUL (PostgreSQL refuses it)."""
    return redact(value.replace("\x00", ""), secrets)[:limit]


def _sanitise(row: Row, secrets: Sequence[str]) -> None:
    """Every text the upstream or the request could put in a row, made safe to store."""
    if row.error:
        row.error = _text(row.error, secrets, MAX_ERROR_TEXT)
    if row.notes:
        row.notes = _text(row.notes, secrets, _MAX_NOTES_TEXT)
    if row.response_id:
        row.response_id = row.response_id.replace("\x00", "")[:200]
    row.model = row.model.replace("\x00", "")  # (endpoint_host never holds one: httpx refuses it in a URL)
    if row.completion_text:  # (prompt_text is JSON text: json.dumps writes a NUL as \u0000)
        row.completion_text = row.completion_text.replace("\x00", "")


def start_call(options: Options, host: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Call:
    """A prepared ``Call`` for a chat-completions request (see ``is_chat_completions``).

    Raises only a declared ``RequestRefused``, after recording the request as blocked.
    """
    call = Call(options, host, headers, body)
    call.prepare()
    return call
