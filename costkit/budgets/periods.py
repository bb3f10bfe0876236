"""Budget periods: which ``[start, end)`` a moment falls in, for a period kind and an IANA time zone.

A day is the span between two local midnights, so in a zone with daylight saving it
lasts 23 or 25 hours on the days the clocks change; a week starts on Monday (ISO); a
month on its first day; ``total`` has one period for all time (it starts at the Unix
epoch and has no end). Bounds are computed from the zone's rules (``zoneinfo``), never
by adding fixed hours, and are returned as aware UTC datetimes: the ledger stores and
compares UTC. A local midnight that does not exist (a zone that springs forward at
midnight) starts the day at the first instant that does.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

PERIODS = ("day", "week", "month", "total")
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
"""The start of the one ``total`` period."""


def _first_instant(day: date, zone: ZoneInfo) -> datetime:
    """The first instant (UTC) whose local date in ``zone`` is ``day``.

    ``fold=0`` picks the first of two local midnights, and a midnight inside a gap is read with the
    offset before the change, which is the instant the gap ends: both are the day's first instant.
    """
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)


def _first_day(period: str, day: date) -> tuple[date, date]:
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        monday = day - timedelta(days=day.weekday())
        return monday, monday + timedelta(days=7)
    if period == "month":
        first = day.replace(day=1)
        following = date(first.year + 1, 1, 1) if first.month == 12 else first.replace(month=first.month + 1)
        return first, following
    raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")


def period_bounds(period: str, zone: ZoneInfo, at: datetime) -> tuple[datetime, datetime | None]:
    """``(start, end)`` in UTC of the ``period`` holding the aware moment ``at``; ``end`` is exclusive.

    ``total`` gives ``(EPOCH, None)``. Raises ``ValueError`` for an unknown period or a naive ``at``.
    """
    if at.tzinfo is None:
        raise ValueError("a budget period needs an aware datetime, not a naive one")
    if period == "total":
        return EPOCH, None
    first, following = _first_day(period, at.astimezone(zone).date())
    start, end = _first_instant(first, zone), _first_instant(following, zone)
    # A zone whose clocks fall back across midnight repeats the end of the previous day after the
    # new day began: that hour belongs to the day already under way.
    while at >= end:
        first, following = _first_day(period, following)
        start, end = _first_instant(first, zone), _first_instant(following, zone)
    return start, end
