"""Undoing a response's ``Content-Encoding`` as its bytes pass, the way the caller's httpx would.

``Decoder(content_encoding)`` decodes every coding httpx decodes (gzip, deflate in its
zlib or raw form, br with ``brotli``/``brotlicffi`` installed, zstd with ``zstandard``),
applied in the reverse order of the header, chunk by chunk. ``supported`` is False for
a coding costkit cannot undo; such a body is forwarded untouched and not read. Corrupt
data raises ``CorruptBody`` (httpx raises its ``DecodingError`` at the same point).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

Decompress = Callable[[bytes], bytes]


class CorruptBody(Exception):
    """The compressed body cannot be decoded (the caller's httpx would say the same)."""


def _gzip() -> Decompress:
    return zlib.decompressobj(zlib.MAX_WBITS | 16).decompress


class _Deflate:
    """HTTP ``deflate`` is zlib-wrapped, but some servers send raw deflate: try both, as httpx does."""

    def __init__(self) -> None:
        self._first = True
        self._obj = zlib.decompressobj()

    def __call__(self, data: bytes) -> bytes:
        if self._first:
            self._first = False
            try:
                return self._obj.decompress(data)
            except zlib.error:
                self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
        return self._obj.decompress(data)


def _brotli() -> Decompress | None:
    try:
        import brotli  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        try:
            import brotlicffi as brotli  # type: ignore[import-not-found,unused-ignore,no-redef]
        except ImportError:
            return None
    decompressor = brotli.Decompressor()
    method = getattr(decompressor, "process", None) or decompressor.decompress
    return method  # type: ignore[no-any-return]


def _zstd() -> Decompress | None:
    try:
        import zstandard  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    return zstandard.ZstdDecompressor().decompressobj().decompress  # type: ignore[no-any-return,unused-ignore]


_FACTORIES: dict[str, Callable[[], Decompress | None]] = {
    "gzip": _gzip,
    "x-gzip": _gzip,
    "deflate": _Deflate,
    "br": _brotli,
    "zstd": _zstd,
}


class Decoder:
    """Decodes one response body's ``Content-Encoding``, chunk by chunk."""

    __slots__ = ("_steps", "codings", "identity", "supported")

    def __init__(self, content_encoding: str) -> None:
        self.codings = [
            c.strip().lower()
            for c in content_encoding.split(",")
            if c.strip() and c.strip().lower() != "identity"
        ]
        self.identity = not self.codings
        self._steps: list[Decompress] = []
        self.supported = True
        for coding in reversed(self.codings):  # the last coding applied is undone first
            factory = _FACTORIES.get(coding)
            step = factory() if factory is not None else None
            if step is None:
                self.supported = False
                self._steps = []
                return
            self._steps.append(step)

    def __call__(self, data: bytes) -> bytes:
        """The decoded bytes of ``data``; raises ``CorruptBody`` when it cannot be decoded."""
        try:
            for step in self._steps:
                data = step(data)
        except Exception as exc:
            raise CorruptBody(f"cannot decode {', '.join(self.codings)} body: {exc}") from None
        return data
