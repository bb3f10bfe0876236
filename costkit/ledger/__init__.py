"""The spend ledger: one row per accounted request, in SQLite or PostgreSQL.

Import-light on purpose: ``Ledger`` (and SQLAlchemy with it) is imported on first
use (PEP 562), so ``import costkit.ledger.row`` stays as fast as the CLI needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

if TYPE_CHECKING:
    from costkit.ledger.ledger import Ledger
    from costkit.ledger.row import Row

__all__ = ["Ledger", "Row"]

_EXPORTS = {"Ledger": "costkit.ledger.ledger", "Row": "costkit.ledger.row"}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
