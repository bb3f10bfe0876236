"""A real HTTP/1.1 server on 127.0.0.1 that answers with whatever bytes a test planned.

``tests/fakeupstream.py`` is a well-behaved provider; this one is for property tests that
generate hostile answers: odd usage shapes, bodies that are not JSON, SSE with ``\\r\\n`` line
ends, events split at any byte, malformed lines, compression the client did not ask for,
connections cut mid-body. A *plan* is rendered per request, because a real provider's stream
depends on the request (the usage chunk and the ``"usage":null`` fields appear only when
``stream_options.include_usage`` was asked for).

    with ScriptedUpstream() as upstream:
        upstream.plan = JsonPlan(body=b'{"id": ...}')
        client = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import socketserver
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Render = Callable[[dict[str, Any] | None], "Answer"]


@dataclass(frozen=True)
class Answer:
    """What goes on the wire: a status, headers, and the body in the network pieces to write.

    ``chunked`` sends each piece as one HTTP chunk; otherwise the body has a Content-Length.
    ``cut`` closes the connection after the pieces, without the terminating chunk.
    ``encoding`` compresses the whole body (``gzip``, ``deflate``, ``br`` or ``zstd``) before it is cut into
    pieces, whatever the client's Accept-Encoding said.
    """

    status: int = 200
    content_type: str = "application/json"
    pieces: tuple[bytes, ...] = (b"{}",)
    chunked: bool = False
    cut: bool = False
    encoding: str | None = None
    extra_headers: tuple[tuple[str, str], ...] = ()


def compress(data: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return zlib.compress(data, wbits=31)
    if encoding == "deflate":
        return zlib.compress(data)
    if encoding == "br":
        import brotli

        return bytes(brotli.compress(data))
    if encoding == "zstd":
        import zstandard

        return bytes(zstandard.ZstdCompressor().compress(data))
    raise ValueError(f"unknown encoding {encoding!r}")


def split_at(data: bytes, cuts: list[int]) -> tuple[bytes, ...]:
    """``data`` cut at the given offsets (clamped and sorted), as non-empty pieces (none for no data).

    Never an empty piece: in a chunked body, an empty chunk is the terminator.
    """
    points = sorted({min(max(c, 0), len(data)) for c in cuts} | {0, len(data)})
    return tuple(data[a:b] for a, b in itertools.pairwise(points) if b > a)


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            try:
                request = self._read_request()
            except OSError:  # the client went away
                return
            if request is None:
                return
            self.server.owner._received(request)
            answer = self.server.owner.render(request.json if isinstance(request.json, dict) else None)
            if not self._write(answer):
                return

    def _read_request(self) -> Received | None:
        line = self.rfile.readline(65537)
        if not line or not line.strip():
            return None
        method, path, _version = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = self.rfile.readline(65537)
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        return Received(method, path, headers, body)

    def _write(self, answer: Answer) -> bool:
        body = b"".join(answer.pieces)
        pieces = answer.pieces
        if answer.encoding:
            body = compress(body, answer.encoding)
            # keep the plan's cut points in proportion on the compressed bytes
            pieces = split_at(
                body, [len(body) * (i + 1) // (len(answer.pieces) + 1) for i in range(len(answer.pieces))]
            )
        head = [f"HTTP/1.1 {answer.status} X"]
        if answer.content_type:  # "": no Content-Type header at all
            head.append(f"Content-Type: {answer.content_type}")
        if answer.chunked:
            head.append("Transfer-Encoding: chunked")
        else:
            head.append(f"Content-Length: {len(body)}")
        if answer.encoding:
            head.append(f"Content-Encoding: {answer.encoding}")
        head.append("Connection: close" if answer.cut else "Connection: keep-alive")
        head += [f"{k}: {v}" for k, v in answer.extra_headers]
        try:
            self.wfile.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
            for piece in pieces:
                self.wfile.write(b"%x\r\n%b\r\n" % (len(piece), piece) if answer.chunked else piece)
                self.wfile.flush()
            if answer.cut:
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)
                return False
            if answer.chunked:
                self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            return False
        return True


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, owner: ScriptedUpstream) -> None:
        self.owner = owner
        super().__init__(("127.0.0.1", 0), _Handler)


class ScriptedUpstream:
    """Serves ``render(request_json) -> Answer`` on 127.0.0.1; keeps the latest requests it received."""

    def __init__(self, render: Render | None = None, keep: int = 100) -> None:
        self.render: Render = render or (lambda _request: Answer())
        self.received: list[Received] = []
        self.keep = keep
        self._server: _Server | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ScriptedUpstream {self.base_url if self._server else 'stopped'}>"

    def _received(self, request: Received) -> None:
        with self._lock:
            self.received.append(request)
            del self.received[: -self.keep]

    def __enter__(self) -> ScriptedUpstream:
        self._server = _Server(self)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"
