"""``costkit.report()``: exact totals from the database on SQLite and PostgreSQL, and what the page shows.

Each test records rows through the real ledger writer into a real SQLite file and a real
PostgreSQL schema (``db_url``), then checks the report against values computed here from
the published prices and against the ledger's own ``SUM(cost_nanousd)``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

import costkit
from costkit.budgets.budget import Budget
from costkit.money import format_usd
from costkit.reports.aggregate import aggregate
from costkit.reports.period import period_of
from tests.ledger_helpers import db_url, pg_schema
from tests.report_helpers import IMG, SCRIPT, day, fill, price, row

__all__ = ["db_url", "pg_schema"]


def ledger_sum(url: str, since: str, until: str) -> int:
    """The ledger's own exact sum of ``cost_nanousd`` over ``[since, until)`` midnight UTC, in plain SQL."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            bounds = {"since": f"{since} 00:00:00", "until": f"{until} 00:00:00"}
            if engine.dialect.name == "postgresql":
                sql = (
                    "SELECT COALESCE(SUM(cost_nanousd), 0) FROM costkit_requests WHERE "
                    "started_at >= CAST(:since AS timestamptz) AND started_at < CAST(:until AS timestamptz)"
                )
                connection.execute(text("SET TIME ZONE 'UTC'"))
            else:
                sql = (
                    "SELECT COALESCE(SUM(cost_nanousd), 0) FROM costkit_requests "
                    "WHERE started_at >= :since AND started_at < :until"
                )
            return int(connection.execute(text(sql), bounds).scalar_one())
    finally:
        engine.dispose()


def test_totals_equal_the_ledgers_exact_sum_and_the_period_bounds_hold(db_url: str) -> None:
    rows = [
        row(day("2026-11-01", 0, 0), input_tokens=5000, cached=0, output=10),  # on --since: in
        row(day("2026-11-02"), input_tokens=2006, cached=1920, output=300),
        row(day("2026-11-02", 13), model="gpt-4.1-mini", input_tokens=1500, cached=1024, output=77),
        row(day("2026-11-03", 23, 59), model="gpt-4.1-nano", input_tokens=333, cached=0, output=1),
        row(day("2026-10-31", 23, 59), input_tokens=100, cached=0, output=100),  # before: previous period
        row(day("2026-11-04", 0, 0), input_tokens=100, cached=0, output=100),  # on --until: out
    ]
    fill(db_url, rows)
    report = costkit.report(db_url, since="2026-11-01", until="2026-11-04")
    inside = [
        price("gpt-4.1", 5000, 0, 10),
        price("gpt-4.1", 2006, 1920, 300),
        price("gpt-4.1-mini", 1500, 1024, 77),
        price("gpt-4.1-nano", 333, 0, 1),
    ]
    assert report.totals["cost_nanousd"] == sum(inside) == ledger_sum(db_url, "2026-11-01", "2026-11-04")
    assert report.totals["cost_usd"] == format_usd(sum(inside))
    assert report.totals["requests"] == 4
    assert report.totals["input_tokens"] == 5000 + 2006 + 1500 + 333
    assert report.totals["cached_input_tokens"] == 1920 + 1024
    assert report.totals["output_tokens"] == 10 + 300 + 77 + 1
    assert report.data["previous_totals"]["cost_nanousd"] == price("gpt-4.1", 100, 0, 100)
    assert report.data["previous_period"]["since"] == "2026-10-29"
    daily = report.frames["daily"]
    assert list(daily["date"]) == ["2026-11-01", "2026-11-02", "2026-11-03"]
    assert list(daily["cost_nanousd"]) == [inside[0], inside[1] + inside[2], inside[3]]
    assert str(daily["cost_nanousd"].dtype) == "int64"
    assert daily["cost_usd"].iloc[1] == Decimal(inside[1] + inside[2]).scaleb(-9)


def test_no_change_in_percent_against_a_previous_period_the_ledger_only_partly_holds(db_url: str) -> None:
    # The ledger begins on 2026-10-31, inside the previous period (2026-10-29 to 2026-11-01).
    first = row(day("2026-10-31"), input_tokens=100, cached=0, output=1)
    fill(db_url, [first, row(day("2026-11-02"), input_tokens=900, cached=0, output=0)])
    report = costkit.report(db_url, since="2026-11-01", until="2026-11-04")
    assert report.data["previous_whole"] is False
    assert report.data["change"]["cost_nanousd"] == price("gpt-4.1", 900, 0, 0) - price("gpt-4.1", 100, 0, 1)
    assert (report.data["change"]["cost_pct"], report.data["change"]["requests_pct"]) == (None, None)
    assert "the ledger begins inside the period before" in report.to_markdown()
    # A row before 2026-10-29 makes the previous period whole, and the change is shown again.
    fill(db_url, [row(day("2026-10-01"), input_tokens=5, cached=0, output=0)])
    again = costkit.report(db_url, since="2026-11-01", until="2026-11-04")
    assert again.data["previous_whole"] is True
    before = price("gpt-4.1", 100, 0, 1)
    expected = (Decimal(price("gpt-4.1", 900, 0, 0) - before) * 100 / before).quantize(Decimal("0.1"))
    assert Decimal(again.data["change"]["cost_pct"]) == expected


def test_spend_per_day_is_split_by_token_kind_and_caching_savings_are_exact(db_url: str) -> None:
    fill(
        db_url,
        [
            row(day("2026-11-02", 9), input_tokens=2006, cached=1920, output=300),
            row(day("2026-11-02", 10), model="gpt-4.1-mini", input_tokens=4000, cached=2048, output=500),
        ],
    )
    report = costkit.report(db_url, since="2026-11-02", until="2026-11-03")
    day_row = report.frames["daily"].iloc[0]
    assert day_row["input_nanousd"] == (2006 - 1920) * 2000 + (4000 - 2048) * 400
    assert day_row["cached_input_nanousd"] == 1920 * 500 + 2048 * 100
    assert day_row["output_nanousd"] == 300 * 8000 + 500 * 1600
    assert day_row["other_nanousd"] == 0
    assert day_row["cost_nanousd"] == price("gpt-4.1", 2006, 1920, 300) + price(
        "gpt-4.1-mini", 4000, 2048, 500
    )
    saved = 1920 * (2000 - 500) + 2048 * (400 - 100)
    assert report.data["cache"]["saved_nanousd"] == saved
    assert report.data["cache"]["saved_usd"] == format_usd(saved)
    assert report.data["cache"]["token_hit_rate_pct"] == str(
        (Decimal(1920 + 2048) * 100 / (2006 + 4000)).quantize(Decimal("0.1"))
    )
    # The worked example of OpenAI's docs, alone: $0.003532.
    assert price("gpt-4.1", 2006, 1920, 300) == 3_532_000


def test_a_group_on_both_sides_of_the_periods_middle_is_one_group(db_url: str) -> None:
    # The day's sums are read as two halves (before and after 12:00) and added up: one day, one
    # model and one status must still be one row each, with both halves' requests in it.
    fill(
        db_url,
        [
            row(day("2026-11-02", 9), input_tokens=2006, cached=1920, output=300, tags={"team": "a"}),
            row(day("2026-11-02", 11, 59), input_tokens=1000, cached=0, output=10, tags={"team": "a"}),
            row(day("2026-11-02", 12), input_tokens=3000, cached=2048, output=700, tags={"team": "a"}),
            row(day("2026-11-02", 23, 59), model="gpt-4.1-mini", input_tokens=50, cached=0, output=5),
        ],
    )
    report = costkit.report(db_url, since="2026-11-02", until="2026-11-03", by=["tag:team"])
    gpt = (
        price("gpt-4.1", 2006, 1920, 300) + price("gpt-4.1", 1000, 0, 10) + price("gpt-4.1", 3000, 2048, 700)
    )
    mini = price("gpt-4.1-mini", 50, 0, 5)
    assert [(d, n, c) for d, n, c in report.frames["daily"][["date", "requests", "cost_nanousd"]].values] == [
        ("2026-11-02", 4, gpt + mini)
    ]
    by_model = report.frames["by_model"].set_index("model")
    assert by_model.loc["gpt-4.1", "requests"] == 3 and by_model.loc["gpt-4.1", "cost_nanousd"] == gpt
    assert (
        by_model.loc["gpt-4.1-mini", "requests"] == 1 and by_model.loc["gpt-4.1-mini", "cost_nanousd"] == mini
    )
    assert list(report.frames["statuses"]["requests"]) == [4]
    team = report.frames["by_tag_team"].set_index("value")
    assert team.loc["a", "requests"] == 3 and team.loc["a", "cost_nanousd"] == gpt
    assert report.data["cache"]["saved_nanousd"] == (1920 + 2048) * (2000 - 500)
    assert report.totals["cost_nanousd"] == ledger_sum(db_url, "2026-11-02", "2026-11-03") == gpt + mini
    engine = create_engine(db_url)
    try:
        found = aggregate(engine, period_of(date(2026, 11, 2), date(2026, 11, 3), "UTC"), ["team"])
    finally:
        engine.dispose()
    assert sorted((g["model"], g["requests"], g["cost_nanousd"]) for g in found.cube) == [
        ("gpt-4.1", 3, gpt),
        ("gpt-4.1-mini", 1, mini),
    ]
    assert [(t["value"], t["requests"]) for t in found.tags] == [("a", 3)]


def test_rows_priced_otherwise_stay_in_the_total_as_other(db_url: str) -> None:
    fill(
        db_url,
        [
            row(day("2026-11-02"), model=IMG, price_id=None, cost_nanousd=0),  # unpriced
            row(day("2026-11-02", 13), price_id="custom-entry", cost_nanousd=123_456_789),
        ],
    )
    report = costkit.report(db_url, since="2026-11-02", until="2026-11-03")
    day_row = report.frames["daily"].iloc[0]
    assert day_row["other_nanousd"] == 123_456_789 == report.totals["cost_nanousd"]


def test_by_tag_keeps_the_top_ten_then_other_then_untagged(db_url: str) -> None:
    rows = []
    for index in range(12):  # team-00 is the cheapest: output grows with the index
        rows.append(
            row(day("2026-11-02", index), output=100 * (index + 1), tags={"team": f"team-{index:02d}"})
        )
    rows.append(row(day("2026-11-02", 20), output=5, tags={"feature": "x"}))
    fill(db_url, rows)
    report = costkit.report(db_url, since="2026-11-02", until="2026-11-03", by=["model", "tag:team"])
    table = report.frames["by_tag_team"]
    values = list(table["value"])
    assert values[:10] == [f"team-{i:02d}" for i in range(11, 1, -1)]
    assert values[10:] == ["(other)", "(no tag)"]
    other = table.iloc[10]
    assert other["requests"] == 2
    assert other["cost_nanousd"] == price("gpt-4.1", 2006, 1920, 100) + price("gpt-4.1", 2006, 1920, 200)
    assert table.iloc[11]["cost_nanousd"] == price("gpt-4.1", 2006, 1920, 5)
    assert int(table["cost_nanousd"].sum()) == report.totals["cost_nanousd"]
    assert report.data["tables"]["by_tag_team"][0]["cost_usd"] == format_usd(
        price("gpt-4.1", 2006, 1920, 1200)
    )


def test_every_tag_key_is_summed_on_its_own_whichever_keys_a_request_has(db_url: str) -> None:
    # Three keys: SQLite groups two per query, so the third comes from a second query; a value
    # ("a") shared by two keys stays apart; a request without a key is "(no tag)" for that key.
    tagged = [
        ({"team": "a", "feature": "x", "user": "u1"}, 100),
        ({"team": "a", "user": "u2"}, 200),
        ({"feature": "x", "user": "a"}, 300),
        ({}, 400),
        ({"team": "b", "feature": "y"}, 500),
    ]
    fill(db_url, [row(day("2026-11-02", i), output=out, tags=tags) for i, (tags, out) in enumerate(tagged)])
    report = costkit.report(
        db_url, since="2026-11-02", until="2026-11-03", by=["tag:team", "tag:feature", "tag:user"]
    )
    for key in ("team", "feature", "user"):
        expected: dict[str, list[int]] = {}
        for tags, out in tagged:
            expected.setdefault(tags.get(key, "(no tag)"), []).append(price("gpt-4.1", 2006, 1920, out))
        table = report.frames[f"by_tag_{key}"]
        found = {
            value: (int(n), int(cost))
            for value, n, cost in zip(table["value"], table["requests"], table["cost_nanousd"], strict=True)
        }
        assert found == {value: (len(costs), sum(costs)) for value, costs in expected.items()}, key
        assert sum(cost for _, cost in found.values()) == report.totals["cost_nanousd"]


def test_latency_percentiles_are_nearest_rank_over_successful_requests(db_url: str) -> None:
    rows = [
        row(day("2026-11-02", 0, minute), latency_us=(minute + 1) * 1000, ttft_us=(minute + 1) * 100)
        for minute in range(40)
    ]
    rows += [row(day("2026-11-02", 1, m), latency_us=1000 * (m + 41), ttft_us=None) for m in range(60)]
    rows.append(row(day("2026-11-02", 3), status="error", latency_us=99_000_000))  # not a success: left out
    fill(db_url, rows)
    timings = costkit.report(db_url, since="2026-11-02", until="2026-11-03").data["timings"]
    # 100 latencies 1..100 ms: nearest rank p50 is the 50th, p95 the 95th.
    assert timings["requests_with_latency"] == 100
    assert timings["latency_ms_p50"] == "50.000"
    assert timings["latency_ms_p95"] == "95.000"
    # 40 first-token times 0.1..4.0 ms: the 20th and the 38th.
    assert timings["requests_with_ttft"] == 40
    assert timings["ttft_ms_p50"] == "2.000"
    assert timings["ttft_ms_p95"] == "3.800"


def test_a_latency_that_is_not_a_whole_number_is_one_clear_error(tmp_path: Path) -> None:
    # SQLite stores what it is given: a row written by another tool may hold 1.5 in a BIGINT column.
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    fill(url, [row(day("2026-11-02", 0), latency_us=1000), row(day("2026-11-02", 1), latency_us=2000)])
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE costkit_requests SET latency_us = 1.5 WHERE latency_us = 2000"))
    engine.dispose()
    with pytest.raises(costkit.CostkitError, match="latency_us column holds a value that is not a whole"):
        costkit.report(url, since="2026-11-02", until="2026-11-03")


def test_estimated_rows_drift_and_problems_are_reported(db_url: str) -> None:
    fill(
        db_url,
        [
            row(day("2026-11-02", 1), input_tokens=1000, cached=0, estimated_input_tokens=990),
            row(day("2026-11-02", 2), input_tokens=500, cached=0, estimated_input_tokens=510),
            row(day("2026-11-02", 3), usage_source="estimated", status="partial", stream=True, error=SCRIPT),
            row(
                day("2026-11-02", 4),
                status="error",
                cost_nanousd=0,
                usage_source="estimated",
                error="HTTP 429",
            ),
            row(
                day("2026-11-02", 5),
                status="error",
                cost_nanousd=0,
                usage_source="estimated",
                error="HTTP 429",
            ),
            row(
                day("2026-11-02", 6),
                status="blocked",
                cost_nanousd=0,
                usage_source="estimated",
                error="budget",
            ),
        ],
    )
    report = costkit.report(db_url, since="2026-11-02", until="2026-11-03")
    drift = report.data["drift"]
    assert drift["requests"] == 2
    assert drift["estimated_input_tokens"] == 1500
    assert drift["provider_input_tokens"] == 1500
    assert drift["net_drift_tokens"] == 0
    assert drift["absolute_drift_tokens"] == 20
    assert report.data["estimated"]["requests"] == 4
    assert report.data["estimated"]["cost_nanousd"] == price("gpt-4.1", 2006, 1920, 300)
    assert report.data["statuses"] == {"ok": 2, "error": 2, "partial": 1, "blocked": 1}
    problems = report.data["tables"]["problems"]
    assert problems[0] == {
        "status": "error",
        "error": "HTTP 429",
        "requests": 2,
        "cost_nanousd": 0,
        "cost_usd": "0.00",
        "first_at": "2026-11-02T04:00:00+00:00",
        "last_at": "2026-11-02T05:00:00+00:00",
    }
    assert {p["error"] for p in problems} == {"HTTP 429", SCRIPT, "budget"}
    estimated = report.data["tables"]["estimated_requests"]
    assert [r["status"] for r in estimated][:1] == ["partial"]


def test_the_twenty_most_expensive_requests_come_in_order_with_their_tags(db_url: str) -> None:
    fill(db_url, [row(day("2026-11-02", 0, m), output=m, tags={"job": f"j{m}"}) for m in range(30)])
    top = costkit.report(db_url, since="2026-11-02", until="2026-11-03").data["tables"]["top_requests"]
    assert [r["output_tokens"] for r in top] == list(range(29, 9, -1))
    assert top[0]["tags"] == "job=j29"
    assert top[0]["cost_usd"] == format_usd(price("gpt-4.1", 2006, 1920, 29))


def test_local_days_follow_the_zone_across_a_clock_change(db_url: str) -> None:
    # Berlin leaves summer time on 2026-10-25: that day lasts 25 hours (2026-10-24T22:00Z to 10-25T23:00Z).
    fill(
        db_url,
        [
            row(day("2026-10-24", 21, 59), output=1),  # 23:59 in Berlin on the 24th
            row(day("2026-10-24", 22, 0), output=2),  # 00:00 on the 25th
            row(day("2026-10-25", 22, 59), output=3),  # 23:59 on the 25th (UTC+1 by then)
            row(day("2026-10-25", 23, 0), output=4),  # 00:00 on the 26th
        ],
    )
    report = costkit.report(db_url, since="2026-10-24", until="2026-10-27", tz="Europe/Berlin")
    daily = report.frames["daily"]
    assert list(daily["date"]) == ["2026-10-24", "2026-10-25", "2026-10-26"]
    assert list(daily["output_tokens"]) == [1, 2 + 3, 4]
    assert report.data["period"]["since_utc"] == "2026-10-23T22:00:00+00:00"
    assert report.data["period"]["until_utc"] == "2026-10-26T23:00:00+00:00"


def test_an_empty_period_is_a_valid_report_that_says_so(db_url: str, tmp_path: Path) -> None:
    fill(db_url, [row(day("2026-11-02"))])
    report = costkit.report(db_url, since="2025-01-01", until="2025-01-08")
    assert report.empty
    assert report.totals["cost_nanousd"] == 0
    written = report.write(tmp_path, ["html", "md", "json", "csv"])
    assert {p.name for p in written} >= {"report.html", "summary.md", "report.json", "daily.csv"}
    assert "No requests in this period" in (tmp_path / "report.html").read_text()
    assert "No requests in this period." in (tmp_path / "summary.md").read_text()
    assert len(report.frames["daily"]) == 7


def test_budgets_show_spend_limit_warnings_and_forecast(db_url: str) -> None:
    fill(
        db_url,
        [
            row(day("2026-10-02"), input_tokens=1_000_000, cached=0, output=0),  # $2.00
            row(day("2026-10-20"), input_tokens=1_000_000, cached=0, output=0, tags={"team": "search"}),
        ],
    )
    budgets = [
        Budget("monthly", "4.50", period="month"),
        Budget("search", "2.00", period="month", tags={"team": "search"}, warn_at=["0.5", "1"]),
    ]
    report = costkit.report(db_url, since="2026-10-01", until="2026-11-01", budgets=budgets)
    monthly, search = report.data["tables"]["budgets"]
    assert monthly["spent_usd"] == "4.00"
    assert monthly["limit_usd"] == "4.50"
    assert monthly["used_pct"] == "88.9"
    assert monthly["warnings_crossed"] == "50%, 80%"
    assert monthly["forecast_usd"] == "4.00"  # October is over: the forecast is what was spent
    assert monthly["period_start"] == "2026-10-01T00:00:00+00:00"
    assert search["spent_usd"] == "2.00"
    assert search["warnings_crossed"] == "50%, 100%"


def test_forecast_scales_spend_so_far_to_the_whole_period() -> None:
    from costkit.reports.budgets import forecast_nanousd

    start, end = day("2026-11-01", 0), day("2026-12-01", 0)
    assert forecast_nanousd(1_000, start, end, day("2026-11-11", 0)) == 3_000
    assert forecast_nanousd(1_000, start, None, day("2026-11-11", 0)) is None


def test_markdown_escapes_what_the_ledger_holds(db_url: str) -> None:
    fill(
        db_url,
        [row(day("2026-11-02"), tags={"team": IMG}), row(day("2026-11-02", 13), tags={"team": "*bold*"})],
    )
    summary = costkit.report(db_url, since="2026-11-02", until="2026-11-03", by=["tag:team"]).to_markdown()
    assert "<img" not in summary and "<" not in summary.replace("&lt;", "")
    assert '&lt;img src=x onerror="window.\\_\\_pwned=1"&gt;' in summary
    assert "\\*bold\\*" in summary
    assert len(summary) < 2000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": "2026-13-01"}, "not a date"),
        ({"since": "2026-11-05", "until": "2026-11-05"}, "must be before"),
        ({"tz": "Mars/Olympus"}, "unknown time zone"),
        ({"by": ["team"]}, "tag:NAME"),
        ({"since": "1900-01-01", "until": "1900-02-01"}, "outside the years"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(
    kwargs: dict[str, object], message: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=message):
        costkit.report(f"{tmp_path}/none.sqlite", **kwargs)  # type: ignore[arg-type]


def test_a_missing_ledger_file_is_an_error_not_a_new_file(tmp_path: Path) -> None:
    from costkit.ledger.errors import LedgerError

    missing = f"{tmp_path}/missing.sqlite"
    with pytest.raises(LedgerError, match="no ledger database"):
        costkit.report(missing, since="2026-11-01")
    assert not (tmp_path / "missing.sqlite").exists()


def test_default_period_is_the_month_to_date_up_to_the_last_full_day() -> None:
    from costkit.reports.period import period_of

    period = period_of(tz="UTC", today=date(2026, 11, 30))
    assert (period.first, period.end, period.last_day) == (
        date(2026, 11, 1),
        date(2026, 11, 30),
        date(2026, 11, 29),
    )
    first_of_month = period_of(tz="UTC", today=date(2026, 12, 1))  # yesterday was in November
    assert (first_of_month.first, first_of_month.end) == (date(2026, 11, 1), date(2026, 12, 1))
    assert period_of(date(2026, 11, 3), tz="UTC", today=date(2026, 11, 30)).end == date(2026, 11, 30)
    assert period.previous().first == date(2026, 11, 1) - timedelta(days=29)


def test_import_costkit_loads_neither_pandas_nor_plotly() -> None:
    code = (
        "import sys, costkit; "
        "print('pandas' in sys.modules, 'plotly' in sys.modules, 'report' in dir(costkit))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "True"]


def test_report_json_csv_and_page_agree(db_url: str, tmp_path: Path) -> None:
    import csv
    from html.parser import HTMLParser

    fill(
        db_url,
        [
            row(
                day("2026-11-02", h),
                output=10 * h,
                tags={"team": ["a", IMG][h % 2]},
                model=["gpt-4.1", "gpt-4.1-mini"][h % 2],
            )
            for h in range(1, 20)
        ]
        + [row(day("2026-11-03", 1), status="error", cost_nanousd=0, error=SCRIPT, usage_source="estimated")],
    )
    report = costkit.report(db_url, since="2026-11-01", until="2026-11-04", by=["tag:team"])
    report.write(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["schema"] == "costkit.report/1"
    assert data == json.loads(report.to_json())
    for name, rows in data["tables"].items():
        with open(tmp_path / f"{name}.csv", newline="") as stream:
            from_csv = list(csv.DictReader(stream))
        assert from_csv == [{k: "" if v is None else str(v) for k, v in r.items()} for r in rows], name

    class Cells(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.tables: dict[str, list[dict[str, str]]] = {}
            self.paths: dict[str, str] = {}
            self.current: str | None = None
            self.path: str | None = None

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            found = dict(attrs)
            if tag == "table" and found.get("data-table"):
                self.current = found["data-table"]
                self.tables[self.current] = []
            elif tag == "tr" and self.current is not None:
                self.tables[self.current].append({})
            elif tag == "td" and self.current is not None and "data-col" in found:
                self.tables[self.current][-1][str(found["data-col"])] = str(found["data-value"])
            if "data-path" in found:
                self.path = found["data-path"]

        def handle_endtag(self, tag: str) -> None:
            if tag == "table":
                self.current = None

        def handle_data(self, text: str) -> None:
            if self.path is not None:
                self.paths[self.path] = text
                self.path = None

    page = Cells()
    page.feed((tmp_path / "report.html").read_text())
    for name in ("daily", "by_model", "by_tag_team", "top_requests", "problems", "statuses"):
        shown = [r for r in page.tables[name] if r]
        assert len(shown) == len(data["tables"][name]), name
        for on_page, in_json in zip(shown, data["tables"][name], strict=True):
            for column, value in on_page.items():
                assert value == ("" if in_json[column] is None else json.dumps(in_json[column])), (
                    name,
                    column,
                )
    total = data["totals"]["cost_usd"]
    whole, _, fraction = total.partition(".")
    assert page.paths["totals.cost_usd"] == f"${int(whole):,}.{fraction}"
    assert page.paths["cache.saved_usd"].replace(",", "") == "$" + data["cache"]["saved_usd"]
    assert page.paths["timings.latency_ms_p50"] == data["timings"]["latency_ms_p50"] + " ms"


def test_a_ledger_the_caller_holds_is_read_after_flush(db_url: str) -> None:
    with costkit.Ledger(db_url) as ledger:
        ledger.record(row(day("2026-11-02"), output=7))
        assert ledger.flush(timeout=30)
        report = costkit.report(ledger, since="2026-11-02", until="2026-11-03")
    assert report.totals["cost_nanousd"] == price("gpt-4.1", 2006, 1920, 7)
    assert report.data["ledger"] == ledger.url.render_as_string(hide_password=True)
