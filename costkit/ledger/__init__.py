"""The spend ledger: one row per accounted request, in SQLite or PostgreSQL.

Import-light on purpose: ``Ledger`` (and SQLAlchemy with it) is imported on first
use (PEP 562), so ``import costkit.ledger.row`` stays as fast as the CLI needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costkit.ledger.ledger import Ledger
    from costkit.ledger.row import Row

__all__ = ["Ledger", "Row"]

_EXPORTS = {"Ledger": "costkit.ledger.ledger", "Row": "costkit.ledger.row"}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'costkit.ledger' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
