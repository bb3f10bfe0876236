"""The report's period: local dates in a time zone turned into exact UTC bounds, and its days.

``since`` is inclusive and ``until`` exclusive, both local dates (midnight in ``tz``).
With neither given, the period is the month to date: from the first of the month that
holds the last full day (yesterday in ``tz``) up to today's midnight, so the report
shows the last full day and the month around it. Days in a zone that changes its
clocks last 23 or 25 hours; bounds are computed from the zone's rules, never by adding
24 hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MAX_DAYS = 3660
"""The longest period a report covers (ten years): a bound beyond it is almost surely a typo."""


class PeriodError(ValueError):
    """A date, a zone or a period that cannot be reported on; the message is one line for the user."""


def zone_named(name: str) -> ZoneInfo:
    """The IANA zone ``name``, or ``PeriodError`` saying what was wrong."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise PeriodError(
            f"unknown time zone {name!r} (an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


def parse_date(text: str, option: str) -> date:
    """A ``YYYY-MM-DD`` date, or ``PeriodError`` naming the option it came from."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise PeriodError(f"{option}: {text!r} is not a date (YYYY-MM-DD)") from None


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The moment ``day`` starts in ``zone``, in UTC (a skipped midnight: the first moment after it)."""
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(timezone.utc)


@dataclass(frozen=True)
class Period:
    """``[first, end)`` as local dates in ``tz``; ``since``/``until`` are the same bounds in UTC."""

    first: date
    end: date
    tz: str

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.tz)

    @property
    def since(self) -> datetime:
        return local_midnight(self.first, self.zone)

    @property
    def until(self) -> datetime:
        return local_midnight(self.end, self.zone)

    @property
    def days(self) -> list[date]:
        """Every local date in the period, in order."""
        return [self.first + timedelta(days=n) for n in range((self.end - self.first).days)]

    @property
    def last_day(self) -> date:
        return self.end - timedelta(days=1)

    def previous(self) -> Period:
        """The period of the same number of days just before this one."""
        length = self.end - self.first
        return Period(self.first - length, self.first, self.tz)


def period_of(
    since: date | None = None, until: date | None = None, tz: str = "UTC", *, today: date | None = None
) -> Period:
    """The report period for the given bounds (see the module docstring); ``PeriodError`` if it is empty."""
    zone = zone_named(tz)
    if today is None:
        today = datetime.now(zone).date()
    if until is None:
        until = today if since is None or since < today else since + timedelta(days=1)
    if since is None:
        since = (until - timedelta(days=1)).replace(day=1)
    if since >= until:
        raise PeriodError(f"--since {since} must be before --until {until} (--until is exclusive)")
    if (until - since).days > MAX_DAYS:
        raise PeriodError(f"the period {since} to {until} is longer than {MAX_DAYS} days")
    if since.year < 1971 or until.year > 9998:
        raise PeriodError(f"the period {since} to {until} is outside the years 1971-9998")
    return Period(since, until, tz)


def offset_changes(zone: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, int]]:
    """``[(from_utc, offset_minutes), ...]`` covering ``[start, end)``: the zone's UTC offset, piece by piece.

    Sampled at every UTC midnight, then each change located to the second by bisection,
    so a database can turn UTC timestamps into local dates with one offset per piece.
    """

    def offset(at: datetime) -> int:
        delta = at.astimezone(zone).utcoffset() or timedelta(0)
        return int(delta.total_seconds()) // 60

    pieces = [(start, offset(start))]
    at = start
    while at < end:
        following = min(at + timedelta(days=1), end)
        if offset(following) != pieces[-1][1]:
            low, high = at, following  # offset(low) is the current piece's, offset(high) differs
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                middle = middle.replace(microsecond=0)
                if middle <= low:
                    break
                if offset(middle) == pieces[-1][1]:
                    low = middle
                else:
                    high = middle
            pieces.append((high, offset(high)))
        at = following
    return pieces
