"""``costkit.Budget`` as data, and its periods: day, ISO week, month and total, in a real time zone.

Europe/Berlin changes its clocks on 2026-03-29 (02:00 CET -> 03:00 CEST: a 23-hour day)
and on 2026-10-25 (03:00 CEST -> 02:00 CET: a 25-hour day).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

import costkit
from costkit.budgets.periods import EPOCH, period_bounds

BERLIN = ZoneInfo("Europe/Berlin")
UTC = timezone.utc


def test_a_budget_is_exact_frozen_data() -> None:
    budget = costkit.Budget("search", "25.00", period="week", tz="Europe/Berlin", tags={"team": "search"})
    assert budget.usd == Decimal("25.00") and budget.limit_nanousd == 25_000_000_000
    assert budget.warn_at == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
    assert (budget.period, budget.tz, dict(budget.tags), budget.hard) == (
        "week",
        "Europe/Berlin",
        {"team": "search"},
        True,
    )
    same = costkit.Budget("search", Decimal("25"), period="week", tz="Europe/Berlin", tags={"team": "search"})
    assert same == budget and hash(same) == hash(budget) and len({same, budget}) == 1
    assert (
        costkit.Budget("search", "25.01", period="week", tz="Europe/Berlin", tags={"team": "search"})
        != budget
    )
    with pytest.raises(AttributeError):
        budget.usd = Decimal("1")  # type: ignore[misc]
    assert costkit.Budget("tiny", "0.000000001").limit_nanousd == 1
    assert costkit.Budget("w", "1", warn_at=[0.8, "0.5", Decimal("1.0"), 0.8]).warn_at == (
        Decimal("0.5"),
        Decimal("0.8"),
        Decimal("1"),
    )


def test_a_budget_covers_the_requests_carrying_all_its_tags() -> None:
    budget = costkit.Budget("b", "1", tags={"team": "search", "env": "prod"})
    assert budget.covers({"team": "search", "env": "prod", "user": "ana"})
    assert not budget.covers({"team": "search"})
    assert not budget.covers({"team": "ads", "env": "prod"})
    assert costkit.Budget("all", "1").covers({})


def test_a_float_limit_is_a_type_error_that_says_why() -> None:
    with pytest.raises(
        TypeError, match=r"Budget 'b': usd: .*not the float 25\.0 \(a float cannot hold cents"
    ):
        costkit.Budget("b", 25.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="usd: must be a Decimal or a string"):
        costkit.Budget("b", True)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"usd": "-1"}, "usd: must be a positive amount"),
        ({"usd": "0"}, "usd: must be a positive amount"),
        ({"usd": "NaN"}, "usd: must be a positive amount"),
        ({"usd": "1.0000000001"}, "usd: '1.0000000001' has more than 9 decimal places"),
        ({"usd": "ten"}, "usd: 'ten' is not a decimal amount"),
        ({"period": "year"}, "period: must be one of day, week, month, total, not 'year'"),
        ({"tz": "Mars/Olympus_Mons"}, "tz: unknown time zone 'Mars/Olympus_Mons'"),
        ({"tz": "../../etc/passwd"}, "tz: unknown time zone"),
        ({"tags": {"": "x"}}, "tags: tag '' from Budget.tags dropped"),
        ({"tags": ["team"]}, "tags: must be a table"),
        ({"hard": "yes"}, "hard: must be true or false"),
        ({"warn_at": [0]}, "warn_at: 0 must be above 0"),
        ({"warn_at": "0.5"}, "warn_at: must be a list"),
        ({"name": ""}, "name: must be a non-empty string"),
    ],
)
def test_a_bad_field_is_named(kwargs: dict[str, object], message: str) -> None:
    values: dict[str, object] = {"name": "b", "usd": "1", **kwargs}
    name, usd = values.pop("name"), values.pop("usd")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        costkit.Budget(name, usd, **values)  # type: ignore[arg-type]


def _local(*args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=BERLIN, fold=fold)


def test_the_last_second_of_a_month_in_berlin_is_that_month() -> None:
    last = _local(2026, 3, 31, 23, 59, 59)
    start, end = period_bounds("month", BERLIN, last)
    assert (start, end) == (datetime(2026, 2, 28, 23, tzinfo=UTC), datetime(2026, 3, 31, 22, tzinfo=UTC))
    assert start.astimezone(BERLIN) == _local(2026, 3, 1) and end.astimezone(BERLIN) == _local(2026, 4, 1)
    assert start <= last < end
    assert period_bounds("month", BERLIN, last + timedelta(seconds=1))[0] == end
    # December rolls into the next year.
    assert period_bounds("month", BERLIN, _local(2026, 12, 31, 23, 59, 59))[1] == _local(2027, 1, 1)


def test_the_spring_forward_day_lasts_23_hours_and_the_fall_back_day_25() -> None:
    start, end = period_bounds("day", BERLIN, _local(2026, 3, 29, 12))
    assert (start, end) == (datetime(2026, 3, 28, 23, tzinfo=UTC), datetime(2026, 3, 29, 22, tzinfo=UTC))
    assert end - start == timedelta(hours=23)
    start, end = period_bounds("day", BERLIN, _local(2026, 10, 25, 12))
    assert (start, end) == (datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2026, 10, 25, 23, tzinfo=UTC))
    assert end - start == timedelta(hours=25)
    # Both 02:30s of the repeated hour belong to that day.
    first, second = _local(2026, 10, 25, 2, 30), _local(2026, 10, 25, 2, 30, fold=1)
    assert second - first == timedelta(0) and second.astimezone(UTC) - first.astimezone(UTC) == timedelta(
        hours=1
    )
    assert period_bounds("day", BERLIN, first) == period_bounds("day", BERLIN, second) == (start, end)


def test_a_week_starts_on_monday_and_total_never_ends() -> None:
    start, end = period_bounds("week", BERLIN, _local(2026, 3, 29, 12))  # a Sunday, the 23-hour one
    assert start.astimezone(BERLIN) == _local(2026, 3, 23) and end.astimezone(BERLIN) == _local(2026, 3, 30)
    assert end - start == timedelta(days=7, hours=-1)
    assert period_bounds("total", BERLIN, _local(2026, 3, 29)) == (EPOCH, None)
    with pytest.raises(ValueError, match="aware"):
        period_bounds("day", BERLIN, datetime(2026, 1, 1))


def test_a_zone_whose_midnight_does_not_exist_starts_the_day_at_its_first_instant() -> None:
    # America/Santiago springs forward at local midnight: 2026-09-06 begins at 01:00.
    santiago = ZoneInfo("America/Santiago")
    start, end = period_bounds("day", santiago, datetime(2026, 9, 6, 12, tzinfo=santiago))
    assert start.astimezone(santiago).hour == 1 and start.astimezone(santiago).day == 6
    assert end - start == timedelta(hours=23)
    assert start <= datetime(2026, 9, 6, 1, tzinfo=santiago) < end
