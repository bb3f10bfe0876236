"""Interception: the accounting core (``Call``), the httpx/httpx2 transports over it, reading
responses and SSE on the side, and attribution tags.

Import-light: the transports (and httpx with them) are imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

if TYPE_CHECKING:
    from costkit.intercept.transports import (
        AsyncHttpx2Transport,
        AsyncTransport,
        Httpx2Transport,
        Transport,
        wrap,
    )

__all__ = ["AsyncHttpx2Transport", "AsyncTransport", "Httpx2Transport", "Transport", "wrap"]

_EXPORTS = dict.fromkeys(__all__, "costkit.intercept.transports")

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
