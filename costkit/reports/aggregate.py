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


WORKERS = 5
"""Connections the queries run on at once: on SQLite two halves of the cube, two of the tag join, and
the rest."""


def aggregate(engine: Engine, period: Period, tag_keys: list[str]) -> Aggregates:
    """Run the report's queries over ``period`` (and the totals of the period before it).

    The queries run side by side, each on its own connection (both drivers let other
    threads run while the database works); on SQLite the cube and the tags each run as
    two halves of the period whose sums add up exactly, so that no one query outlasts the
    rest and both cores stay busy to the end. Each sees the committed rows of its own
    moment: for a period that has ended, as the default one has, that is the same rows.
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

    # On SQLite, which can only look up and sort, the cube and the tags (one look-up per request
    # and key) are most of a report's time: each runs as two halves of the period, one per core.
    # PostgreSQL hashes them (and may use parallel workers of its own): halves were slower there,
    # and each half would hash the whole tag table again, so it takes the period whole.
    if engine.dialect.name == "sqlite":
        middle = window.since + (window.until - window.since) / 2
        parts = [Window(window.since, middle, zone), Window(middle, window.until, zone)]
    else:
        parts = [window]
    tag_parts = parts if tag_keys else []
    groups: list[Callable[[Connection], dict[str, Any]]] = [
        *(_cube_group(f"cube{i}", part) for i, part in enumerate(parts)),
        *(_tag_group(f"tags{i}", part, tag_keys) for i, part in enumerate(tag_parts)),
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
            for answer in pool.map(run, groups):
                found.update(answer)
    found["cube"] = queries.summed_cube(row for i in range(len(parts)) for row in found.pop(f"cube{i}"))
    found["tags"] = queries.summed_per_value(
        row for i in range(len(tag_parts)) for row in found.pop(f"tags{i}")
    )
    return Aggregates(**found)


def _cube_group(name: str, part: Window) -> Callable[[Connection], dict[str, Any]]:
    return lambda connection: {name: queries.cube(connection, part)}


def _tag_group(name: str, part: Window, keys: list[str]) -> Callable[[Connection], dict[str, Any]]:
    return lambda connection: {name: queries.by_tags(connection, part, keys)}
