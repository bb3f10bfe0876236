"""One read of the ledger for a report: every query of ``queries``, side by side, as plain data."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import StaticPool

from costkit.reports import queries
from costkit.reports.period import Period
from costkit.reports.queries import Window


@dataclass
class Aggregates:
    """What the database answered for a period: small tables of exact integers, nothing per row."""

    cube: list[dict[str, Any]] = field(default_factory=list)
    previous: dict[str, int] = field(default_factory=lambda: dict.fromkeys(queries.TOTAL_COLUMNS, 0))
    previous_whole: bool = False  # the ledger reaches back to the start of the previous period
    tags: list[dict[str, Any]] = field(default_factory=list)
    top: list[dict[str, Any]] = field(default_factory=list)
    estimated: list[dict[str, Any]] = field(default_factory=list)
    problems: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, dict[str, int | None]] = field(
        default_factory=lambda: {
            column: {"count": 0, "p50": None, "p95": None} for column in queries.TIMING_COLUMNS
        }
    )


WORKERS = 4
"""Connections the queries run on at once: the cube, two halves of the tag join, and the rest."""


def aggregate(engine: Engine, period: Period, tag_keys: list[str]) -> Aggregates:
    """Run the report's queries over ``period`` (and the totals of the period before it).

    The queries run side by side, each on its own connection (both drivers let other
    threads run while the database works), in three groups of about equal cost. Each
    sees the committed rows of its own moment: for a period that has ended, as the
    default one has, that is the same rows.
    """
    zone = period.zone
    window = Window(period.since, period.until, zone)
    before = Window(period.previous().since, period.previous().until, zone)

    def rest(connection: Connection) -> dict[str, Any]:
        return {
            "previous": queries.totals(connection, before),
            "previous_whole": queries.has_rows_before(connection, before.since),
            "top": queries.most_expensive(connection, window),
            "estimated": queries.estimated_rows(connection, window),
            "problems": queries.problems(connection, window),
            "timings": queries.timings(connection, window),
        }

    # On SQLite the tags cost one look-up per request and key, most of a report's time: they run
    # as two halves of the period, one per core, whose sums add up exactly. (PostgreSQL hashes
    # the tag table instead: each half would hash all of it again.)
    middle = window.since + (window.until - window.since) / 2
    if not tag_keys:
        halves: list[Window] = []
    elif engine.dialect.name == "sqlite":
        halves = [Window(window.since, middle, zone), Window(middle, window.until, zone)]
    else:
        halves = [window]
    groups: list[Callable[[Connection], dict[str, Any]]] = [
        lambda connection: {"cube": queries.cube(connection, window)},
        *(_tag_group(f"tags{i}", half, tag_keys) for i, half in enumerate(halves)),
        rest,
    ]

    def run(group: Callable[[Connection], dict[str, Any]]) -> dict[str, Any]:
        with engine.connect() as connection:
            queries.tune(connection)
            return group(connection)

    found: dict[str, Any] = {}
    if isinstance(engine.pool, StaticPool):  # one shared connection (in-memory SQLite): one at a time
        for group in groups:
            found.update(run(group))
    else:
        with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="costkit-report") as pool:
            for part in pool.map(run, groups):
                found.update(part)
    found["tags"] = queries.summed_per_value(row for i in range(len(halves)) for row in found.pop(f"tags{i}"))
    return Aggregates(**found)


def _tag_group(name: str, half: Window, keys: list[str]) -> Callable[[Connection], dict[str, Any]]:
    return lambda connection: {name: queries.by_tags(connection, half, keys)}
