"""Budgets: USD limits that cannot be overspent, their config file, their status and their warnings.

Import-light (PEP 562): names are imported on first use. The pieces:

* ``budget``/``periods``: a ``Budget`` is data (limit, period, zone, tags, hard or soft);
  its periods are computed from the zone's rules.
* ``config``: ``load_budgets`` reads ``[[budget]]`` tables (``costkit.toml``,
  ``[tool.costkit]``, ``$COSTKIT_CONFIG``).
* ``store``/``settle``/``leases``: the ledger tables that make reservations atomic on
  SQLite and PostgreSQL; the writer's settlement of each batch; leases that expire.
* ``hook``: what ``Transport(budgets=...)`` runs before a request is sent.
* ``status``/``events``: ``Ledger.budget_status`` and the warnings crossed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

if TYPE_CHECKING:
    from costkit.budgets.budget import Budget
    from costkit.budgets.config import config_path, load_budgets
    from costkit.budgets.events import BudgetEvent
    from costkit.budgets.status import BudgetStatus

__all__ = ["Budget", "BudgetEvent", "BudgetStatus", "config_path", "load_budgets"]

_EXPORTS = {
    "Budget": "costkit.budgets.budget",
    "BudgetEvent": "costkit.budgets.events",
    "BudgetStatus": "costkit.budgets.status",
    "config_path": "costkit.budgets.config",
    "load_budgets": "costkit.budgets.config",
}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
