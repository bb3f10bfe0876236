"""Ledgers with known rows for the report tests, and prices written out from the published price list.

Costs here are computed from OpenAI's published rates (USD per 1M tokens), never through
``costkit.cost()``, so a report that mis-sums or mis-prices cannot agree with them by accident.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from costkit.ledger import Ledger
from costkit.ledger.row import Row

UTC = timezone.utc
# nano-USD per token: $2.00 / $0.50 / $8.00 per 1M tokens is 2000 / 500 / 8000 nano-USD per token.
RATES = {
    "gpt-4.1": (2000, 500, 8000),
    "gpt-4.1-mini": (400, 100, 1600),
    "gpt-4.1-nano": (100, 25, 400),
}
PRICE_IDS = {model: f"{model}@2025-04-14" for model in RATES}
IMG = '<img src=x onerror="window.__pwned=1">'
SCRIPT = "</script><script>window.__pwned=2</script><!--"


def price(model: str, input_tokens: int, cached: int, output: int) -> int:
    """The published price of a request in nano-USD: prompt less cached at the input rate, and so on."""
    rate_in, rate_cached, rate_out = RATES[model]
    return (input_tokens - cached) * rate_in + cached * rate_cached + output * rate_out


def row(
    at: datetime,
    *,
    model: str = "gpt-4.1",
    input_tokens: int = 2006,
    cached: int = 1920,
    output: int = 300,
    tags: dict[str, str] | None = None,
    **fields: Any,
) -> Row:
    """A priced row (unless ``cost_nanousd`` is given) for a request started ``at``."""
    values: dict[str, Any] = {
        "model": model,
        "status": "ok",
        "started_at": at,
        "finished_at": at + timedelta(milliseconds=800),
        "endpoint_host": "platform.qubrid.com",
        "http_status": 200,
        "input_tokens": input_tokens,
        "cached_input_tokens": cached,
        "output_tokens": output,
        "usage_source": "provider",
        "estimated_input_tokens": input_tokens,
        "price_id": PRICE_IDS.get(model),
        "latency_us": 800_000,
        "tags": tags or {},
    }
    values.update(fields)
    if "cost_nanousd" not in values:
        values["cost_nanousd"] = price(model, input_tokens, cached, output)
    return Row(**values)


def fill(url: str, rows: list[Row]) -> None:
    """Record ``rows`` through the ledger's own writer and wait until they are committed."""
    ledger = Ledger(url)
    try:
        for item in rows:
            ledger.record(item)
        assert ledger.flush(timeout=60), "the ledger did not take the rows"
    finally:
        ledger.close()


def day(text: str, hour: int = 12, minute: int = 0) -> datetime:
    """``2026-11-03`` at ``hour:minute`` UTC."""
    return datetime.fromisoformat(text).replace(hour=hour, minute=minute, tzinfo=UTC)
