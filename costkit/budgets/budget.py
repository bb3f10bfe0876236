"""``Budget``: a USD limit over a period, in a time zone, for all traffic or for the requests with given tags.

A budget is data: a frozen value that can be compared, hashed and written to a
config file. Its limit is exact (``Decimal`` or a decimal string, never a float, at
most nine decimal places: money inside costkit is integer nano-USD). The checks here
are the ones the config loader applies field by field (``check_field``), so a bad
value is reported the same way from code and from ``costkit.toml``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from functools import cached_property
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from costkit.budgets.periods import PERIODS, period_bounds
from costkit.money import NANO_PER_USD, money_context, to_usd

DEFAULT_WARN_AT = (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
MAX_NAME = 200


class BudgetFieldError(ValueError):
    """One field of a budget is wrong; ``field`` names it (the config loader reports it)."""

    def __init__(self, field_name: str, problem: str, *, type_error: bool = False) -> None:
        self.field = field_name
        self.problem = problem
        self.type_error = type_error
        super().__init__(f"{field_name}: {problem}")


def _check_name(value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BudgetFieldError("name", f"must be a non-empty string, not {value!r}")
    if len(value) > MAX_NAME or "\x00" in value:
        raise BudgetFieldError("name", f"must be at most {MAX_NAME} characters, without NUL")
    return value


def _check_usd(value: object) -> Decimal:
    if isinstance(value, float):
        raise BudgetFieldError(
            "usd",
            f"must be a Decimal or a string such as '25.00', not the float {value!r} "
            "(a float cannot hold cents exactly)",
            type_error=True,
        )
    if isinstance(value, bool) or not isinstance(value, (Decimal, str, int)):
        kind = type(value).__name__
        problem = f"must be a Decimal or a string such as '25.00', not {kind}"
        raise BudgetFieldError("usd", problem, type_error=True)
    try:
        usd = Decimal(value.strip() if isinstance(value, str) else value)
    except InvalidOperation:
        raise BudgetFieldError("usd", f"{value!r} is not a decimal amount of dollars") from None
    if not usd.is_finite() or usd <= 0:
        raise BudgetFieldError("usd", f"must be a positive amount of dollars, not {value!r}")
    with money_context():
        nano = usd * NANO_PER_USD
        whole = nano == nano.to_integral_value()
    if not whole:
        raise BudgetFieldError("usd", f"{value!r} has more than 9 decimal places (costkit counts nano-USD)")
    if nano >= 2**63:
        raise BudgetFieldError("usd", f"{value!r} is too large")
    return usd


def _check_period(value: object) -> str:
    if value not in PERIODS:
        raise BudgetFieldError("period", f"must be one of {', '.join(PERIODS)}, not {value!r}")
    return str(value)


def zone_of(value: object) -> ZoneInfo:
    """The ``ZoneInfo`` of an IANA zone name; ``BudgetFieldError`` naming ``tz`` if there is none."""
    if not isinstance(value, str) or not value:
        raise BudgetFieldError("tz", f"must be an IANA time zone name such as 'Europe/Berlin', not {value!r}")
    try:
        return ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BudgetFieldError(
            "tz", f"unknown time zone {value!r} (an IANA name such as 'UTC' or 'Europe/Berlin')"
        ) from None


def _check_tags(value: object) -> Mapping[str, str]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise BudgetFieldError("tags", f"must be a table of strings such as {{team = 'search'}}: {value!r}")
    from costkit.ledger.row import clean_tags

    kept, notes = clean_tags(dict(value), "Budget.tags")
    if notes or len(kept) != len(value):
        raise BudgetFieldError("tags", notes[0] if notes else f"not a valid set of tags: {value!r}")
    return MappingProxyType(dict(sorted(kept.items())))


def _check_hard(value: object) -> bool:
    if not isinstance(value, bool):
        raise BudgetFieldError("hard", f"must be true or false, not {value!r}")
    return value


def _check_warn_at(value: object) -> tuple[Decimal, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise BudgetFieldError("warn_at", f"must be a list of fractions such as [0.5, 0.8, 1.0]: {value!r}")
    fractions: set[Decimal] = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, (int, float, str, Decimal)):
            raise BudgetFieldError("warn_at", f"{item!r} is not a fraction of the limit")
        try:
            # A fraction, not money: a float's shortest repr (0.8) is the number the user wrote.
            fraction = Decimal(repr(item) if isinstance(item, float) else item)
        except InvalidOperation:
            raise BudgetFieldError("warn_at", f"{item!r} is not a fraction of the limit") from None
        if not fraction.is_finite() or not 0 < fraction <= 10:
            raise BudgetFieldError("warn_at", f"{item!r} must be above 0 and at most 10 (1.0 is the limit)")
        fractions.add(fraction.normalize())
    return tuple(sorted(fractions))


_CHECKS = {
    "name": _check_name,
    "usd": _check_usd,
    "period": _check_period,
    "tz": lambda value: (zone_of(value), value)[1],
    "tags": _check_tags,
    "hard": _check_hard,
    "warn_at": _check_warn_at,
}
FIELDS = tuple(_CHECKS)


def check_field(name: str, value: object) -> Any:
    """The checked value of one budget field, or ``BudgetFieldError`` naming it."""
    return _CHECKS[name](value)


@dataclass(frozen=True, eq=True)
class Budget:
    """A USD limit for a period: ``Budget("search", "25.00", period="month", tags={"team": "search"})``.

    ``usd``: a ``Decimal`` or a decimal string (a float raises ``TypeError``), at most nine decimal
    places. ``period``: ``day``, ``week`` (ISO, from Monday), ``month`` or ``total``, with day
    boundaries at midnight in ``tz`` (an IANA zone; days the clocks change last 23 or 25 hours).
    ``tags``: the budget covers the requests whose tags include every one of these pairs (none:
    all traffic). ``hard``: requests are refused before they are sent when their worst case does
    not fit (``BudgetExceeded``); a soft budget only warns. ``warn_at``: the fractions of the
    limit at which one warning per budget, threshold and period is logged and recorded.
    The ``name`` identifies the budget in the ledger: processes sharing a ledger share its spend.
    Raises ``ValueError`` (``TypeError`` for a wrongly typed limit) naming the bad field.
    """

    name: str
    usd: Decimal
    period: str = "month"
    tz: str = "UTC"
    tags: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    hard: bool = True
    warn_at: tuple[Decimal, ...] = DEFAULT_WARN_AT

    def __init__(
        self,
        name: str,
        usd: Decimal | str,
        *,
        period: str = "month",
        tz: str = "UTC",
        tags: Mapping[str, str] | None = None,
        hard: bool = True,
        warn_at: Iterable[float | Decimal | str] = DEFAULT_WARN_AT,
    ) -> None:
        values = {
            "name": name,
            "usd": usd,
            "period": period,
            "tz": tz,
            "tags": tags,
            "hard": hard,
            "warn_at": warn_at,
        }
        for key, value in values.items():
            try:
                object.__setattr__(self, key, check_field(key, value))
            except BudgetFieldError as error:
                if error.type_error:
                    raise TypeError(f"Budget {name!r}: {error}") from None
                raise ValueError(f"Budget {name!r}: {error}") from None

    def __hash__(self) -> int:
        tags = tuple(self.tags.items())
        return hash((self.name, self.usd, self.period, self.tz, tags, self.hard, self.warn_at))

    def __repr__(self) -> str:
        tags = f", tags={dict(self.tags)!r}" if self.tags else ""
        return (
            f"Budget({self.name!r}, {str(self.usd)!r}, period={self.period!r}, tz={self.tz!r}{tags}, "
            f"hard={self.hard}, warn_at=({', '.join(str(t) for t in self.warn_at)}))"
        )

    @cached_property
    def zone(self) -> ZoneInfo:
        return zone_of(self.tz)

    @property
    def limit_nanousd(self) -> int:
        with money_context():
            return int(self.usd * NANO_PER_USD)

    @property
    def limit_usd(self) -> Decimal:
        return to_usd(self.limit_nanousd)

    def bounds(self, at: datetime) -> tuple[datetime, datetime | None]:
        """``(start, end)`` in UTC of this budget's period holding the aware moment ``at``."""
        return period_bounds(self.period, self.zone, at)

    def covers(self, tags: Mapping[str, str]) -> bool:
        """Whether a request with ``tags`` counts toward this budget (it carries every budget tag)."""
        return all(tags.get(key) == value for key, value in self.tags.items())
