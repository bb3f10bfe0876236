"""One read of the ledger for a report: every query of ``queries`` on one connection, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from costkit.reports import queries
from costkit.reports.period import Period
from costkit.reports.queries import Window


@dataclass
class Aggregates:
    """What the database answered for a period: small tables of exact integers, nothing per row."""

    cube: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, int] = field(default_factory=lambda: dict.fromkeys(queries.TOTAL_COLUMNS, 0))
    tags: list[dict[str, Any]] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)
    estimated: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, dict[str, int | None]] = field(
        default_factory=lambda: {
            column: {"count": 0, "p50": None, "p95": None} for column in queries.TIMING_COLUMNS
        }
    )


def aggregate(engine: Engine, period: Period, tag_keys: list[str]) -> Aggregates:
    """Run the report's queries over ``period`` (and the totals of the period before it)."""
    zone = period.zone
    window = Window(period.since, period.until, zone)
    before = period.previous()
    with engine.connect() as connection:
        queries.tune(connection)
        return Aggregates(
            cube=queries.cube(connection, window),
            previous=queries.totals(connection, Window(before.since, before.until, zone)),
            tags=queries.by_tags(connection, window, tag_keys),
            top=queries.most_expensive(connection, window),
            estimated=queries.estimated_rows(connection, window),
            problems=queries.problems(connection, window),
            timings=queries.timings(connection, window),
        )
