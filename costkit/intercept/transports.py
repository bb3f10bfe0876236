"""httpx transports that account for every chat-completions call, and ``wrap(client)``.

The transport wraps another transport (default: the stack's own HTTP
transport). Chat-completions requests are counted, pre-flighted and recorded;
everything else passes through untouched. The caller gets the same status,
headers and body bytes at the same moment: each chunk is forwarded as it
arrives, read on the side. The only exceptions costkit raises are declared
pre-flight refusals (``ContextWindowExceeded``; under ``budgets=``, ``BudgetExceeded``,
``BudgetUnpriced`` and ``BudgetUnavailable``: see ``costkit.budgets.hook``), raised before any byte is sent;
the caller's own exceptions (timeouts, dropped connections) reach it unchanged.

One accounting core (``costkit.intercept.accounting``) serves both HTTP stacks: ``httpx``
(``Transport``, ``AsyncTransport``) and ``httpx2``, on which openai 3.x is built
(``Httpx2Transport``, ``AsyncHttpx2Transport``). ``wrap`` picks the right one.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx

from costkit.errors import RequestRefused
from costkit.intercept import inflight
from costkit.intercept.accounting import Call, is_chat_completions, start_call, strip_tags_header
from costkit.intercept.encoding import CorruptBody
from costkit.intercept.options import Hook, Options, Recorder, default_ledger, log_once
from costkit.intercept.responses import ResponseReader
from costkit.pricing import PriceBook
from costkit.verdict import DEFAULT_OUTPUT_RESERVE

if TYPE_CHECKING:
    from costkit.budgets.budget import Budget
    from costkit.budgets.events import BudgetEvent

log = logging.getLogger("costkit")
_NOT_FORWARDED = frozenset({"content-encoding", "content-length"})


def _options(
    ledger: Recorder | None,
    tags: Mapping[str, str] | None,
    preflight: bool,
    context_limit: int | None,
    default_output_reserve: int,
    price_book: PriceBook | None,
    hooks: Sequence[Hook],
    budgets: Any = None,
    on_unavailable: str = "refuse",
    on_warning: Any = None,
) -> Options:
    """Check and resolve a transport's options at set-up, so nothing of this fails per request.

    Raises ``PriceBookError`` for a ``$COSTKIT_PRICES`` file that cannot be read and
    ``LedgerError`` for a default ledger URL that cannot be right; loads the o200k_base
    encoding. Bad tags are dropped with one warning (and a note on every row).
    """
    from costkit.counting.tokens import get_encoding
    from costkit.intercept.attribution import checked_tags
    from costkit.pricing import default_price_book

    book = price_book if price_book is not None else default_price_book()
    kept, notes = checked_tags(dict(tags or {}), "Transport(tags=)")
    get_encoding()  # here, not at settle time (a stream settled at exit must not load it)
    if ledger is None:
        ledger = default_ledger()  # never waits on its database; a URL that cannot be right raises here
    if budgets is not None:
        from costkit.budgets.hook import budget_hook

        hook = budget_hook(ledger, budgets, on_unavailable, on_warning)
        hooks = (*hooks, hook) if hook is not None else hooks
    inflight.register_exit_settle()
    return Options(
        ledger=ledger,
        tags=kept,
        tag_notes=tuple(notes),
        preflight=preflight,
        context_limit=context_limit,
        default_output_reserve=default_output_reserve,
        price_book=book,
        hooks=tuple(hooks),
    )


def _safe_close(reader: ResponseReader, exhausted: bool | None) -> None:
    try:
        reader.close(exhausted, by_caller=True)
    except Exception as exc:
        log_once(("close", type(exc).__name__), "could not settle a response", exc)
    inflight.forget(reader)


def _begin(options: Options, request: Any, body: bytes) -> Call | None:
    """Start accounting for a chat-completions ``request``; only a declared refusal is raised."""
    try:
        return start_call(options, request.url.host, request.headers.raw, body)
    except RequestRefused:
        raise
    except Exception as exc:
        log_once(("begin", type(exc).__name__), "could not account for a request; sending it as is", exc)
        return None


def _feed_failed(reader: ResponseReader, exc: Exception) -> None:
    """Our bug must not break the caller's stream: stop reading our copy, forward the rest."""
    log_once(
        ("feed", type(exc).__name__), "could not read a response chunk; forwarding the rest untouched", exc
    )
    reader.fail()


class _Configured:
    """The options every costkit transport takes; ``inner`` defaults to the stack's own transport."""

    _default_inner: Any

    def __init__(
        self,
        inner: Any = None,
        *,
        ledger: Recorder | None = None,
        tags: Mapping[str, str] | None = None,
        preflight: bool = True,
        context_limit: int | None = None,
        default_output_reserve: int = DEFAULT_OUTPUT_RESERVE,
        price_book: PriceBook | None = None,
        hooks: Sequence[Hook] = (),
        budgets: Sequence[Budget] | str | None = None,
        on_unavailable: str = "refuse",
        on_warning: Callable[[BudgetEvent], Any] | None = None,
    ) -> None:
        self.options = _options(
            ledger,
            tags,
            preflight,
            context_limit,
            default_output_reserve,
            price_book,
            hooks,
            budgets,
            on_unavailable,
            on_warning,
        )
        self.inner = inner if inner is not None else self._default_inner()
        # A budget's reservation waits for its database: off the event loop for asyncio clients.
        self._begins_in_thread = any(getattr(h, "waits_for_database", False) for h in self.options.hooks)


@functools.cache
def transport_classes(hx: ModuleType) -> tuple[type, type]:
    """(sync, async) costkit transports for one httpx-shaped module (``httpx`` or ``httpx2``)."""

    class _Stream(hx.SyncByteStream):  # type: ignore[name-defined,misc]
        """The response body as the caller reads it: each chunk read on the side and forwarded."""

        def __init__(self, inner: Any, reader: ResponseReader) -> None:
            self._inner = inner
            self._reader = reader

        def __iter__(self) -> Iterator[bytes]:
            reader = self._reader
            feed = reader.feed
            try:
                for chunk in self._inner:
                    try:
                        out = feed(chunk)
                    except CorruptBody as exc:
                        raise hx.DecodingError(str(exc)) from None
                    except Exception as exc:
                        _feed_failed(reader, exc)
                        feed = reader.passthrough
                        out = feed(chunk)
                    if out:
                        yield out
            except GeneratorExit:  # the caller stopped reading early
                raise
            except BaseException:
                reader.fail()
                raise
            reader.ended = True
            rest = reader.pending()
            if rest:
                yield rest

        def close(self) -> None:
            try:
                self._inner.close()
            finally:
                _safe_close(self._reader, None)

    class _AsyncStream(hx.AsyncByteStream):  # type: ignore[name-defined,misc]
        """The asyncio twin of ``_Stream``."""

        def __init__(self, inner: Any, reader: ResponseReader) -> None:
            self._inner = inner
            self._reader = reader

        async def __aiter__(self) -> AsyncIterator[bytes]:
            reader = self._reader
            feed = reader.feed
            try:
                async for chunk in self._inner:
                    try:
                        out = feed(chunk)
                    except CorruptBody as exc:
                        raise hx.DecodingError(str(exc)) from None
                    except Exception as exc:
                        _feed_failed(reader, exc)
                        feed = reader.passthrough
                        out = feed(chunk)
                    if out:
                        yield out
            except GeneratorExit:
                raise
            except BaseException:
                reader.fail()
                raise
            reader.ended = True
            rest = reader.pending()
            if rest:
                yield rest

        async def aclose(self) -> None:
            try:
                await self._inner.aclose()
            finally:
                _safe_close(self._reader, None)

    def _rebuild(request: Any, call: Call) -> Any:
        headers = [(k, v) for k, v in call.headers if k.lower() != b"content-length"]
        headers.append((b"Content-Length", str(len(call.send_body)).encode()))
        return hx.Request(
            request.method,
            request.url,
            headers=headers,
            content=call.send_body,
            extensions=request.extensions,
        )

    def _without_tags(request: Any) -> Any:
        kept, value = strip_tags_header(request.headers.raw)
        if value is None:
            return request
        return hx.Request(
            request.method, request.url, headers=kept, stream=request.stream, extensions=request.extensions
        )

    def _response(response: Any, call: Call, stream_class: Any) -> Any:
        reader = call.tap(response.status_code, response.headers)
        headers = response.headers
        if reader.forwards_decoded:  # the caller gets the decoded bytes its httpx would have made
            headers = [(k, v) for k, v in headers.raw if k.decode("latin-1").lower() not in _NOT_FORWARDED]
        stream = stream_class(response.stream, reader)
        inflight.track(stream, reader)
        return hx.Response(
            status_code=response.status_code,
            headers=headers,
            stream=stream,
            extensions=response.extensions,
        )

    class SyncTransport(_Configured, hx.BaseTransport):  # type: ignore[name-defined,misc]
        __doc__ = f"""A ``{hx.__name__}`` transport that counts, pre-flights and records chat completions.

        Closing the response stream (the client does it) settles and records the request.
        ``handle_request`` raises ``ContextWindowExceeded`` before sending a request
        that cannot fit; every other exception is the inner transport's, unchanged.
        """

        _default_inner = hx.HTTPTransport

        def handle_request(self, request: Any) -> Any:
            if not is_chat_completions(request.method, request.url.path):
                return self.inner.handle_request(_without_tags(request))
            call = _begin(self.options, request, request.read())
            if call is None:
                return self.inner.handle_request(_without_tags(request))
            if call.request_changed:
                request = _rebuild(request, call)
            try:
                response = self.inner.handle_request(request)
            except BaseException as exc:
                call.failed(exc)
                raise
            return _response(response, call, _Stream)

        def close(self) -> None:
            self.inner.close()

    class AsyncTransport(_Configured, hx.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        __doc__ = f"""The asyncio twin of ``{hx.__name__}`` ``Transport``; the same contract."""

        _default_inner = hx.AsyncHTTPTransport

        async def handle_async_request(self, request: Any) -> Any:
            if not is_chat_completions(request.method, request.url.path):
                return await self.inner.handle_async_request(_without_tags(request))
            body = await request.aread()
            if self._begins_in_thread:
                import anyio.to_thread  # its worker threads see the caller's contextvars (costkit.tags)

                call = await anyio.to_thread.run_sync(_begin, self.options, request, body)
            else:
                call = _begin(self.options, request, body)
            if call is None:
                return await self.inner.handle_async_request(_without_tags(request))
            if call.request_changed:
                request = _rebuild(request, call)
            try:
                response = await self.inner.handle_async_request(request)
            except BaseException as exc:
                call.failed(exc)
                raise
            return _response(response, call, _AsyncStream)

        async def aclose(self) -> None:
            await self.inner.aclose()

    SyncTransport.__qualname__ = SyncTransport.__name__ = "Transport"
    AsyncTransport.__qualname__ = AsyncTransport.__name__ = "AsyncTransport"
    return SyncTransport, AsyncTransport


Transport, AsyncTransport = transport_classes(httpx)


def _httpx2() -> ModuleType | None:
    try:
        import httpx2
    except ImportError:
        return None
    return httpx2


def __getattr__(name: str) -> Any:
    if name in ("Httpx2Transport", "AsyncHttpx2Transport"):
        hx2 = _httpx2()
        if hx2 is None:
            raise AttributeError(f"{name} needs httpx2: pip install httpx2")
        sync, asynchronous = transport_classes(hx2)
        return sync if name == "Httpx2Transport" else asynchronous
    raise AttributeError(f"module 'costkit.intercept.transports' has no attribute {name!r}")


def _install(http_client: Any, transport_cls: type, options: dict[str, Any]) -> None:
    """Put a costkit transport around the client's own transport and every mounted one."""

    def wrapped(inner: Any) -> Any:
        return inner if isinstance(inner, transport_cls) else transport_cls(inner, **options)

    http_client._transport = wrapped(http_client._transport)
    mounts = getattr(http_client, "_mounts", None)
    if isinstance(mounts, dict):
        for pattern, inner in list(mounts.items()):
            if inner is not None:
                mounts[pattern] = wrapped(inner)


def wrap(client: Any, **options: Any) -> Any:
    """Install costkit in ``client`` and return it: an ``openai.OpenAI``/``AsyncOpenAI`` client,
    or an ``httpx``/``httpx2`` ``Client``/``AsyncClient``. ``options`` are ``Transport``'s.

    The client keeps its own settings (timeouts, limits, proxies): its transports are
    wrapped in place, so wrapping twice changes nothing.
    """
    http_client = client
    inner = getattr(client, "_client", None)  # the openai SDK keeps its HTTP client here
    if inner is not None and not _is_http_client(client):
        http_client = inner
    for module in (httpx, _httpx2()):
        if module is None:
            continue
        sync, asynchronous = transport_classes(module)
        if isinstance(http_client, module.Client):
            _install(http_client, sync, options)
            return client
        if isinstance(http_client, module.AsyncClient):
            _install(http_client, asynchronous, options)
            return client
    raise TypeError(
        "costkit.wrap takes an openai client or an httpx/httpx2 Client or AsyncClient, "
        f"not {type(client).__name__}"
    )


def _is_http_client(obj: Any) -> bool:
    modules = [m for m in (httpx, _httpx2()) if m is not None]
    return any(isinstance(obj, (m.Client, m.AsyncClient)) for m in modules)
