"""costkit: every GPT-4.1 call accounted for to the nano-dollar.

The public API is what ``__all__`` lists; every other module may change without
notice. Names are imported on first use, so ``import costkit`` reads no
vocabulary, opens no database and touches no environment variable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "CostkitError": "costkit.errors",
    "InvalidRequest": "costkit.errors",
    "UnknownModel": "costkit.errors",
    "PriceBookError": "costkit.errors",
    "InvalidUsage": "costkit.errors",
    "TokenizerError": "costkit.errors",
    "count_text": "costkit.counting.tokens",
    "count_request": "costkit.counting.requests",
    "RequestCount": "costkit.counting.requests",
    "ImageCount": "costkit.counting.images",
    "cost": "costkit.pricing",
    "Cost": "costkit.pricing",
    "Price": "costkit.pricing",
    "PriceBook": "costkit.pricing",
    "default_price_book": "costkit.pricing",
    "preflight": "costkit.verdict",
    "Preflight": "costkit.verdict",
    "DEFAULT_OUTPUT_RESERVE": "costkit.verdict",
    "Row": "costkit.ledger.row",
    "Ledger": "costkit.ledger",
    "LedgerError": "costkit.ledger.errors",
    "to_usd": "costkit.money",
    "RequestRefused": "costkit.errors",
    "ContextWindowExceeded": "costkit.errors",
    "ConfigError": "costkit.errors",
    "BudgetExceeded": "costkit.errors",
    "BudgetUnavailable": "costkit.errors",
    "BudgetUnpriced": "costkit.errors",
    "Budget": "costkit.budgets.budget",
    "Transport": "costkit.intercept.transports",
    "AsyncTransport": "costkit.intercept.transports",
    "Httpx2Transport": "costkit.intercept.transports",
    "AsyncHttpx2Transport": "costkit.intercept.transports",
    "wrap": "costkit.intercept.transports",
    "tags": "costkit.intercept.attribution",
    "current_tags": "costkit.intercept.attribution",
    "report": "costkit.reports.report",
}

__all__ = [
    "DEFAULT_OUTPUT_RESERVE",
    "AsyncHttpx2Transport",
    "AsyncTransport",
    "Budget",
    "BudgetExceeded",
    "BudgetUnavailable",
    "BudgetUnpriced",
    "ConfigError",
    "ContextWindowExceeded",
    "Cost",
    "CostkitError",
    "Httpx2Transport",
    "ImageCount",
    "InvalidRequest",
    "InvalidUsage",
    "Ledger",
    "LedgerError",
    "Preflight",
    "Price",
    "PriceBook",
    "PriceBookError",
    "RequestCount",
    "RequestRefused",
    "Row",
    "TokenizerError",
    "Transport",
    "UnknownModel",
    "cost",
    "count_request",
    "count_text",
    "current_tags",
    "default_price_book",
    "preflight",
    "report",
    "tags",
    "to_usd",
    "wrap",
]

if TYPE_CHECKING:
    from costkit.budgets.budget import Budget
    from costkit.counting.images import ImageCount
    from costkit.counting.requests import RequestCount, count_request
    from costkit.counting.tokens import count_text
    from costkit.errors import (
        BudgetExceeded,
        BudgetUnavailable,
        BudgetUnpriced,
        ConfigError,
        ContextWindowExceeded,
        CostkitError,
        InvalidRequest,
        InvalidUsage,
        PriceBookError,
        RequestRefused,
        TokenizerError,
        UnknownModel,
    )
    from costkit.intercept.attribution import current_tags, tags
    from costkit.intercept.transports import (
        AsyncHttpx2Transport,
        AsyncTransport,
        Httpx2Transport,
        Transport,
        wrap,
    )
    from costkit.ledger import Ledger
    from costkit.ledger.errors import LedgerError
    from costkit.ledger.row import Row
    from costkit.money import to_usd
    from costkit.pricing import Cost, Price, PriceBook, cost, default_price_book
    from costkit.reports.report import report
    from costkit.verdict import DEFAULT_OUTPUT_RESERVE, Preflight, preflight


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
