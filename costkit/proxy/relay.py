"""Forwarding a response body to the caller: a stream in batches of what has already arrived.

A task reads the upstream's body (through costkit's transport, which reads each chunk on
the side) into a pipe; the caller's side takes everything the pipe holds whenever it runs
and writes it in one go. Chunks that came in one network read reach the caller in one
write, and a chunk that came alone goes out alone, at once: nothing waits for company, and
the caller (who would otherwise pay one read per upstream chunk) keeps up with the upstream.
The pipe holds at most ``MAX_PENDING`` bytes; past that the reader waits for the caller.

The same pipe hears the caller leave: the stream is then closed at once (not at its next
chunk) and its row says ``ClientDisconnected``. A plain body (not ``text/event-stream``) is
forwarded chunk by chunk as it comes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

import httpx

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_PENDING = 1 << 20
"""Bytes read from the upstream but not yet written to the caller, at most (then the reader waits)."""


class ClientDisconnected(Exception):
    """The caller went away while its stream was being forwarded (its row says so)."""


class _Pipe:
    """Chunks on their way from the reader task to the caller, and what happened on either side."""

    __slots__ = ("chunks", "done", "error", "gone", "ready", "room", "size")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.ready = asyncio.Event()  # something to do: chunks, the end, an error, the caller gone
        self.room = asyncio.Event()
        self.room.set()
        self.done = False
        self.error: BaseException | None = None
        self.gone = False

    def take(self) -> bytes:
        chunks, self.chunks, self.size = self.chunks, [], 0
        self.ready.clear()
        self.room.set()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _fill(pipe: _Pipe, body: AsyncIterator[bytes]) -> None:
    try:
        async for chunk in body:
            pipe.chunks.append(chunk)
            pipe.size += len(chunk)
            pipe.ready.set()
            if pipe.size > MAX_PENDING:
                pipe.room.clear()
                await pipe.room.wait()
    except Exception as exc:  # (CancelledError is the caller's side stopping us: not recorded)
        pipe.error = exc
    pipe.done = True
    pipe.ready.set()


async def _hear_leave(pipe: _Pipe, receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    pipe.gone = True
    pipe.ready.set()


async def relay_stream(response: httpx.Response, receive: Receive, send: Send) -> None:
    """Forward a streamed body; raises ``ClientDisconnected`` or the upstream's ``httpx.HTTPError``."""
    body = _raw(response)
    # The first chunk goes out from here, before any task is started: no task switch delays it.
    try:
        first = await body.__anext__()
    except StopAsyncIteration:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    await send({"type": "http.response.body", "body": first, "more_body": True})
    pipe = _Pipe()
    reader = asyncio.ensure_future(_fill(pipe, body))
    listener = asyncio.ensure_future(_hear_leave(pipe, receive))
    try:
        while True:
            await pipe.ready.wait()
            if pipe.gone:
                raise ClientDisconnected
            done = pipe.done  # read before taking: chunks that came with the end go out first
            data = pipe.take()
            if data:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            if done:
                break
        if pipe.error is not None:
            raise pipe.error
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        listener.cancel()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader  # the transport's stream stops here, before the response is closed


def _raw(response: httpx.Response) -> AsyncIterator[bytes]:
    """The body's bytes as they came (still compressed if they came so), without ``aiter_raw``'s
    re-chunking layer: one generator less per chunk."""
    stream = response.stream
    if not isinstance(stream, httpx.AsyncByteStream):
        raise TypeError("the upstream client must be an httpx.AsyncClient")
    return stream.__aiter__()


async def relay_plain(response: httpx.Response, send: Send) -> None:
    """Forward a plain body chunk by chunk; raises the upstream's ``httpx.HTTPError``."""
    async for chunk in _raw(response):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
