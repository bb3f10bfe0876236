"""Pricing the ledger's unpriced rows once a price exists: ``costkit ledger reprice``.

A row is a candidate when it has no price (``price_id`` NULL) and was billed
(status ``ok`` or ``partial``). It is priced by its own model, ``started_at`` and
``endpoint_host`` (the same look-up the interceptor makes, so host entries and
effective dates apply), from its recorded tokens; a row whose input tokens were
never known (no provider usage and no count of costkit's) stays unpriced. Priced
rows are never touched: every update also requires ``price_id IS NULL``, so a
second run, or two runs at once, change nothing more. Rows are read and updated
in batches (keyset pagination on ``request_id``), each batch one transaction;
the money is computed exactly in Python, as for every other row.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Row, bindparam, update
from sqlalchemy.engine import Engine

from costkit.errors import InvalidUsage, UnknownModel
from costkit.ledger.query import TimeBound, select_requests
from costkit.ledger.schema import requests_table
from costkit.pricing import PriceBook

BILLED = ("ok", "partial")
BATCH_SIZE = 1000


@dataclass
class RepriceResult:
    """What a reprice did: rows priced now, rows still without a price, and the money added."""

    repriced: int = 0
    still_unpriced: int = 0
    nanousd: int = 0


def _candidates(
    engine: Engine, since: TimeBound, until: TimeBound, batch_size: int
) -> Iterator[list[Row[Any]]]:
    table = requests_table
    unpriced = select_requests(since, until).where(table.c.price_id.is_(None), table.c.status.in_(BILLED))
    columns = [
        table.c.request_id,
        table.c.model,
        table.c.started_at,
        table.c.endpoint_host,
        table.c.input_tokens,
        table.c.cached_input_tokens,
        table.c.output_tokens,
        table.c.usage_source,
        table.c.estimated_input_tokens,
        table.c.notes,
    ]
    after = ""
    while True:
        query = (
            unpriced.with_only_columns(*columns)
            .where(table.c.request_id > after)
            .order_by(table.c.request_id)
            .limit(batch_size)
        )
        with engine.connect() as connection:
            batch = list(connection.execute(query).all())
        if not batch:
            return
        yield batch
        after = batch[-1].request_id


def _input_known(row: Row[Any]) -> bool:
    return bool(row.usage_source == "provider" or row.estimated_input_tokens is not None)


def reprice(
    engine: Engine,
    price_book: PriceBook,
    since: TimeBound = None,
    until: TimeBound = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> RepriceResult:
    """Price every unpriced, billed row in ``[since, until)`` that ``price_book`` now has a price for."""
    table = requests_table
    statement = (
        update(table)
        .where(table.c.request_id == bindparam("rid"), table.c.price_id.is_(None))
        .values(
            cost_nanousd=bindparam("new_cost"), price_id=bindparam("new_price"), notes=bindparam("new_notes")
        )
    )
    today = datetime.now(timezone.utc).date().isoformat()
    result = RepriceResult()
    for batch in _candidates(engine, since, until, batch_size):
        changes: list[dict[str, Any]] = []
        for row in batch:
            if not _input_known(row):
                result.still_unpriced += 1
                continue
            try:
                charged = price_book.cost(
                    row.model,
                    row.input_tokens,
                    row.cached_input_tokens,
                    row.output_tokens,
                    at=row.started_at,
                    host=row.endpoint_host or None,
                )
            except (UnknownModel, InvalidUsage):
                result.still_unpriced += 1
                continue
            note = f"repriced {today} by price {charged.price_id}"
            changes.append(
                {
                    "rid": row.request_id,
                    "new_cost": charged.nanousd,
                    "new_price": charged.price_id,
                    "new_notes": f"{row.notes}; {note}" if row.notes else note,
                }
            )
            result.nanousd += charged.nanousd
        if changes:
            with engine.begin() as connection:
                updated = connection.execute(statement, changes).rowcount
            result.repriced += updated if updated is not None and updated >= 0 else len(changes)
    return result
