"""Which headers cross the proxy: everything end-to-end; hop-by-hop headers stay on their hop.

RFC 9110 §7.6.1: ``Connection`` and the headers it names, ``Keep-Alive``,
``Transfer-Encoding``, ``TE``, ``Trailer``, ``Upgrade`` and ``Proxy-*`` belong to one
connection. The request's ``Host`` is the upstream's (httpx sets it) and ``Expect`` was
answered by the server already. A response body the proxy may re-chunk (a stream whose
usage chunk costkit takes out again) loses its ``Content-Length``.
"""

from __future__ import annotations

from collections.abc import Iterable

Headers = list[tuple[bytes, bytes]]

HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"proxy-connection"}
)
_REQUEST_ONLY = frozenset({b"host", b"expect"})


def _named_by_connection(headers: Iterable[tuple[bytes, bytes]]) -> frozenset[bytes]:
    named: set[bytes] = set()
    for name, value in headers:
        if name.lower() == b"connection":
            named.update(token.strip().lower() for token in value.split(b","))
    return frozenset(named)


def _end_to_end(headers: Iterable[tuple[bytes, bytes]], also: frozenset[bytes]) -> Headers:
    headers = list(headers)
    dropped = HOP_BY_HOP | also | _named_by_connection(headers)
    return [
        (name, value)
        for name, value in headers
        if (lower := name.lower()) not in dropped and not lower.startswith(b"proxy-")
    ]


def request_headers(headers: Iterable[tuple[bytes, bytes]]) -> Headers:
    """The caller's headers to send upstream, in their order and spelling."""
    return _end_to_end(headers, _REQUEST_ONLY)


def response_headers(headers: Iterable[tuple[bytes, bytes]], rechunked: bool) -> Headers:
    """The upstream's headers for the caller; without ``Content-Length`` when ``rechunked``."""
    return _end_to_end(headers, frozenset({b"content-length"}) if rechunked else frozenset())
