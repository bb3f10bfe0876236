"""``costkit proxy``: a local OpenAI-compatible proxy that accounts every client, in any language.

An ASGI app (``costkit.proxy.app``) forwards every request to the upstream through an
``httpx.AsyncClient`` whose transport is costkit's own ``AsyncTransport``: chat
completions go through the same accounting core as the Python interceptor (pre-flight,
budgets, usage injection, streams, partial and error rows, ``X-Costkit-Tags``), and
everything else passes through untouched. ``costkit.proxy.server`` runs it under uvicorn
(one process, or ``--workers N``) and shuts it down without losing a row.

Import-light: nothing here imports httpx or uvicorn until it is used (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

if TYPE_CHECKING:
    from costkit.proxy.app import ProxyApp
    from costkit.proxy.keys import KeyRing, hash_key
    from costkit.proxy.settings import ProxySettings

__all__ = ["KeyRing", "ProxyApp", "ProxySettings", "hash_key"]

_EXPORTS = {
    "ProxyApp": "costkit.proxy.app",
    "KeyRing": "costkit.proxy.keys",
    "hash_key": "costkit.proxy.keys",
    "ProxySettings": "costkit.proxy.settings",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
