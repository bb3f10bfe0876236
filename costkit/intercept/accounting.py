"""The interceptor's accounting core, independent of the HTTP stack.

A ``Call`` follows one chat-completions request: ``prepare`` parses the body,
runs the pre-flight (raising a declared refusal before anything is sent) and
says which bytes to send instead; ``tap`` reads a copy of the response as it is
forwarded; ``settle`` turns what was seen into one ledger row. Accounting
failures are logged and recorded, never raised into the caller.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

from costkit.errors import ContextWindowExceeded, CostkitError, RequestRefused
from costkit.intercept.attribution import TAGS_HEADER, current_tags, parse_tags_header
from costkit.intercept.responses import ResponseReader
from costkit.ledger.row import Row, Status, new_request_id
from costkit.verdict import DEFAULT_OUTPUT_RESERVE, Preflight, preflight

if TYPE_CHECKING:
    from costkit.pricing import PriceBook

log = logging.getLogger("costkit")

CHAT_COMPLETIONS_SUFFIX = "/chat/completions"
_TAGS_HEADER_BYTES = TAGS_HEADER.encode()
_MAX_ERROR_TEXT = 500


class Recorder(Protocol):
    """Where rows go: ``costkit.Ledger`` or anything with ``record(row)``."""

    def record(self, row: Row) -> None: ...


class Hook(Protocol):
    """The budget seam: ``before_send`` may raise a ``RequestRefused``; ``settled`` sees each row."""

    def before_send(self, call: Call) -> None: ...

    def settled(self, call: Call, row: Row) -> None: ...


_default_lock = threading.Lock()
_default_ledger: Recorder | None = None


def default_ledger() -> Recorder:
    """The process-wide default ledger (the embedded SQLite file), opened on first use."""
    global _default_ledger
    if _default_ledger is None:
        with _default_lock:
            if _default_ledger is None:
                from costkit.ledger import Ledger

                _default_ledger = Ledger()
    return _default_ledger


@dataclass
class Options:
    """What a transport was configured with."""

    ledger: Recorder | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    preflight: bool = True
    context_limit: int | None = None
    default_output_reserve: int = DEFAULT_OUTPUT_RESERVE
    price_book: PriceBook | None = None
    hooks: Sequence[Hook] = ()

    @property
    def recorder(self) -> Recorder:
        return self.ledger if self.ledger is not None else default_ledger()

    @property
    def store_text(self) -> bool:
        """Prompt and completion text are kept only when the ledger opted in (``store_text=True``)."""
        return getattr(self.recorder, "store_text", False) is True

    def record(self, row: Row) -> None:
        try:
            self.recorder.record(row)
        except Exception:  # never into the caller; the ledger spools what it can
            log.exception("costkit: could not record request %s", row.request_id)


def is_chat_completions(method: str, path: str) -> bool:
    return method == "POST" and path.rstrip("/").endswith(CHAT_COMPLETIONS_SUFFIX)


def strip_tags_header(headers: Sequence[tuple[bytes, bytes]]) -> tuple[list[tuple[bytes, bytes]], str | None]:
    """Headers without ``X-Costkit-Tags``, and that header's value if it was there."""
    kept: list[tuple[bytes, bytes]] = []
    value: str | None = None
    for name, val in headers:
        if name.lower() == _TAGS_HEADER_BYTES:
            value = val.decode("latin-1")
        else:
            kept.append((name, val))
    return kept, value


def _with_usage_option(raw: bytes, body: dict[str, Any]) -> bytes | None:
    """The body asking for ``stream_options.include_usage``, or None if it already does."""
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    if options is None and "stream_options" not in body:
        text = raw.rstrip()
        if text.endswith(b"}"):  # append the field, leaving the caller's bytes as they were
            sep = b"" if text[:-1].rstrip().endswith(b"{") else b","
            return text[:-1] + sep + b'"stream_options":{"include_usage":true}}'
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
        self.problem: str | None = None  # why the request could not be counted or priced
        self.tags: dict[str, str] = {**options.tags, **current_tags()}
        self._settled = False
        if header_tags is not None:
            try:
                self.tags.update(parse_tags_header(header_tags))
            except CostkitError as exc:
                self.problem = str(exc)

    @property
    def model(self) -> str:
        if self.verdict is not None:
            return self.verdict.model.id
        model = self.body.get("model") if self.body is not None else None
        return model if isinstance(model, str) else "unknown"

    @property
    def request_changed(self) -> bool:
        """Whether the bytes to send differ from the caller's (tags header or usage option)."""
        return self.had_tags_header or self.send_body is not self.body_bytes

    def prepare(self) -> None:
        """Parse and pre-flight the body. Raises only a declared ``RequestRefused``."""
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
            )
        except CostkitError as exc:  # malformed or unknown model: sent as is, recorded as unpriced
            self.problem = str(exc)
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

    def refuse(self, refusal: RequestRefused) -> None:
        """Record the request as blocked, then raise the refusal: nothing has been sent."""
        self._finish(status="blocked", http_status=None, error=str(refusal))
        raise refusal

    def failed(self, exc: BaseException) -> None:
        """The request never got a response (connection error, timeout)."""
        self._finish(status="error", http_status=None, error=f"{type(exc).__name__}: {exc}"[:_MAX_ERROR_TEXT])

    def tap(self, status: int, headers: Mapping[str, str]) -> ResponseReader:
        """A reader for the response body; its ``on_close`` settles this call."""
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
            self._finish(
                status="error",
                http_status=reader.status,
                error=reader.error_text()[:_MAX_ERROR_TEXT],
                reader=reader,
            )
            return
        self._finish(status="ok" if reader.complete else "partial", http_status=reader.status, reader=reader)

    def _estimated_input(self) -> int | None:
        if self.verdict is None:
            return None
        try:
            return self.verdict.input_tokens
        except CostkitError as exc:
            self.problem = str(exc)
            return None

    def _finish(
        self,
        status: Status,
        http_status: int | None,
        error: str | None = None,
        reader: ResponseReader | None = None,
    ) -> None:
        if self._settled:
            return
        self._settled = True
        try:
            row = self._row(status, http_status, error, reader)
        except Exception:  # a bug of ours must not reach the caller; keep what we can
            log.exception("costkit: accounting failed for request %s", self.request_id)
            row = Row(
                model=self.model,
                status=status,
                request_id=self.request_id,
                started_at=self.started_at,
                endpoint_host=self.host,
                error="costkit accounting failed",
            )
        self.options.record(row)
        for hook in self.options.hooks:
            try:
                hook.settled(self, row)
            except Exception:
                log.exception("costkit: a settle hook failed for request %s", self.request_id)

    def _row(
        self, status: Status, http_status: int | None, error: str | None, reader: ResponseReader | None
    ) -> Row:
        finished = time.perf_counter()
        finished_at = datetime.now(timezone.utc)
        estimated_input = self._estimated_input()
        usage = reader.usage if reader is not None and status != "error" else None
        row = Row(
            model=self.model,
            status=status,
            request_id=self.request_id,
            started_at=self.started_at,
            finished_at=finished_at,
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
        if reader is not None:
            row.response_id = reader.response_id
            row.ttft_us = reader.ttft_us
            row.x_metrics = reader.x_metrics
            if self.options.store_text and self.body is not None:
                row.prompt_text = json.dumps(self.body.get("messages"), ensure_ascii=False)
                row.completion_text = reader.completion_text()
        if status in ("blocked", "error"):
            row.input_tokens = estimated_input or 0
            row.usage_source = "estimated"
            return row  # nothing was billed
        if usage is not None:
            row.usage_source = "provider"
            row.input_tokens = usage.prompt_tokens
            row.cached_input_tokens = usage.cached_tokens
            row.output_tokens = usage.completion_tokens
        else:
            row.usage_source = "estimated"
            row.input_tokens = estimated_input or 0
            row.output_tokens = reader.estimated_output_tokens() if reader is not None else 0
        self._price(row)
        return row

    def _price(self, row: Row) -> None:
        from costkit.pricing import cost

        if self.verdict is None:
            row.error = row.error or f"unpriced: {self.problem or 'request could not be read'}"
            return
        try:
            charged = cost(
                self.verdict.model.id,
                row.input_tokens,
                min(row.cached_input_tokens, row.input_tokens),
                row.output_tokens,
                at=self.started_at,
                price_book=self.options.price_book,
            )
        except CostkitError as exc:
            row.error = row.error or f"unpriced: {exc}"
            return
        row.cost_nanousd = charged.nanousd
        row.price_id = charged.price_id


def start_call(options: Options, host: str, headers: Sequence[tuple[bytes, bytes]], body: bytes) -> Call:
    """A prepared ``Call`` for a chat-completions request (see ``is_chat_completions``).

    Raises only a declared ``RequestRefused``, after recording the request as blocked.
    """
    call = Call(options, host, headers, body)
    call.prepare()
    return call
