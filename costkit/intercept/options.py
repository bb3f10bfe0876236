"""A transport's configuration, the recorder and hook seams, and how the interceptor logs failures.

``Options`` holds what a transport was built with, already checked and resolved
(see ``transports._options``). ``default_ledger`` is the process-wide ledger a
transport without ``ledger=`` records into. ``log_once`` logs a failure with a
redacted traceback the first time its key is seen, and later in one line, so a
bug that repeats on every request does not flood the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from costkit.intercept.redact import redacted_traceback
from costkit.ledger.row import Row
from costkit.verdict import DEFAULT_OUTPUT_RESERVE

if TYPE_CHECKING:
    from costkit.intercept.accounting import Call
    from costkit.pricing import PriceBook

log = logging.getLogger("costkit")


class Recorder(Protocol):
    """Where rows go: ``costkit.Ledger`` or anything with ``record(row)``."""

    def record(self, row: Row) -> None: ...


class Hook(Protocol):
    """The budget seam: ``before_send`` may raise a ``RequestRefused``; ``settled`` sees each row.

    Any other exception from a hook is a bug in the hook: it is logged (once per hook,
    method and exception type) and noted on the row; the request is still accounted and sent.
    """

    def before_send(self, call: Call) -> None: ...

    def settled(self, call: Call, row: Row) -> None: ...


_default_lock = threading.Lock()
_default_ledger: Recorder | None = None


def default_ledger() -> Recorder:
    """The process-wide default ledger (``$COSTKIT_DB_URL`` or the embedded SQLite file).

    Opened by the first transport built without ``ledger=``; raises ``LedgerError`` there
    for a URL that cannot be right.
    """
    global _default_ledger
    if _default_ledger is None:
        with _default_lock:
            if _default_ledger is None:
                from costkit.ledger import Ledger

                _default_ledger = Ledger()
    return _default_ledger


_logged: set[tuple[str, ...]] = set()


def log_once(key: tuple[str, ...], message: str, exc: BaseException, secrets: Sequence[str] = ()) -> None:
    """Log a failure with its (redacted) traceback the first time ``key`` is seen, later in one line."""
    if key in _logged:
        log.debug("costkit: %s (%s, logged before)", message, type(exc).__name__)
        return
    _logged.add(key)
    log.error("costkit: %s\n%s", message, redacted_traceback(exc, secrets))


@dataclass
class Options:
    """What a transport was configured with (checked and resolved when it was built)."""

    ledger: Recorder | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    tag_notes: Sequence[str] = ()
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
        except Exception as exc:  # never into the caller; the ledger spools what it can
            log_once(("record", type(exc).__name__), f"could not record request {row.request_id}", exc)
