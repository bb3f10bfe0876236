"""One log line per request, made from its ledger row: method, path, status, tokens, cost, duration.

``RowCatcher`` is an accounting hook: the core hands it each row as it settles, and it
puts the row in the request's ``Slot`` (found through a context variable the proxy sets
for each request, so the right request gets the right row). The line never holds a
header, a query string or a body: nothing secret can reach the log.
"""

from __future__ import annotations

import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING

from costkit.money import format_usd

if TYPE_CHECKING:
    from costkit.intercept.accounting import Call
    from costkit.ledger.row import Row

log = logging.getLogger("costkit.proxy")


class Slot:
    """One request's status and ledger row (no row: the request was not a chat completion)."""

    __slots__ = ("row", "status")

    def __init__(self) -> None:
        self.row: Row | None = None
        self.status = 0  # the status the caller got (0: none was sent)


current: ContextVar[Slot | None] = ContextVar("costkit_proxy_slot", default=None)


class RowCatcher:
    """The hook that hands each settled row to the request that made it."""

    def before_send(self, call: Call) -> None:
        """Nothing to check before sending."""

    def settled(self, call: Call, row: Row) -> None:
        slot = current.get()
        if slot is not None:
            slot.row = row


def log_request(method: str, path: str, status: int, seconds: float, row: Row | None) -> None:
    """``POST /v1/chat/completions 200 ok in=26 cached=0 out=12 $0.000148 3.1ms``."""
    if not log.isEnabledFor(logging.INFO):
        return
    took = f"{seconds * 1000:.1f}ms"
    if row is None:
        log.info("%s %s %d %s", method, path, status, took)
        return
    if row.status in ("blocked", "error"):
        cost = "$0"  # nothing was billed
    else:
        cost = f"${format_usd(row.cost_nanousd)}" if row.price_id is not None else "unpriced"
    log.info(
        "%s %s %d %s in=%d cached=%d out=%d %s %s",
        method,
        path,
        status,
        row.status,
        row.input_tokens,
        row.cached_input_tokens,
        row.output_tokens,
        cost,
        took,
    )
