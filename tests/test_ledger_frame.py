"""Reading the ledger: time and tag filters run in SQL, money stays exact integers and Decimals."""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import event

from costkit.ledger import Ledger
from costkit.money import to_usd
from tests.ledger_helpers import T0, db_url, make_row, pg_schema  # noqa: F401

TEAMS = ("search", "ads", "search", "infra")


def _fill(book: Ledger) -> None:
    for hour in range(8):
        book.record(
            make_row(
                request_id=f"h{hour}",
                started_at=T0 + timedelta(hours=hour),
                cost_nanousd=1_000_000 * (hour + 1),
                tags={"team": TEAMS[hour % 4], "user": f"u{hour % 3}"},
            )
        )
    assert book.flush(30)


def test_frame_filters_by_time_with_inclusive_since_and_exclusive_until(db_url: str) -> None:
    with Ledger(db_url) as book:
        _fill(book)
        frame = book.frame(since=T0 + timedelta(hours=2), until=T0 + timedelta(hours=5))
        assert list(frame["request_id"]) == ["h2", "h3", "h4"]
        assert str(frame["started_at"].dtype) == "datetime64[us, UTC]"
        assert frame["started_at"].iloc[0] == T0 + timedelta(hours=2)
        other_zone = (T0 + timedelta(hours=6)).astimezone(timezone(timedelta(hours=-7)))
        assert list(book.frame(since=other_zone)["request_id"]) == ["h6", "h7"]
        assert list(book.frame(until=date(2025, 4, 14))["request_id"]) == []
        assert len(book.frame(since=date(2025, 4, 14), until=date(2025, 4, 15))) == 8
        with pytest.raises(ValueError, match="timezone-aware"):
            book.frame(since=datetime(2025, 4, 14, 12))


def test_frame_filters_by_tags_in_sql_and_all_pairs_must_match(db_url: str) -> None:
    with Ledger(db_url) as book:
        _fill(book)
        statements: list[str] = []
        event.listen(book.engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
        search = book.frame(tags={"team": "search"})
        assert list(search["request_id"]) == ["h0", "h2", "h4", "h6"]
        assert all(t["team"] == "search" for t in search["tags"])
        assert any("costkit_request_tags" in s and "EXISTS" in s.upper() for s in statements), statements
        both = book.frame(tags={"team": "search", "user": "u0"})
        assert list(both["request_id"]) == ["h0", "h6"]
        assert both["tags"].iloc[0] == {"team": "search", "user": "u0"}
        assert book.frame(tags={"team": "nobody"}).empty
        timed = book.frame(since=T0 + timedelta(hours=3), tags={"user": "u1"})
        assert list(timed["request_id"]) == ["h4", "h7"]


def test_money_columns_are_exact_integers_and_decimals(db_url: str) -> None:
    big = 2**53 + 1  # beyond the last integer a float64 holds exactly
    costs = [big, 3_532_000, 1, 999_999_999_999]
    with Ledger(db_url) as book:
        for i, cost in enumerate(costs):
            book.record(make_row(request_id=f"m{i}", started_at=T0 + timedelta(seconds=i), cost_nanousd=cost))
        assert book.flush(30)
        frame = book.frame()
    assert str(frame["cost_nanousd"].dtype) == "int64"
    assert [int(v) for v in frame["cost_nanousd"]] == costs
    assert int(frame["cost_nanousd"].sum()) == sum(costs)
    assert all(isinstance(v, Decimal) for v in frame["cost_usd"])
    assert list(frame["cost_usd"]) == [to_usd(c) for c in costs]
    assert frame["cost_usd"].iloc[1] == Decimal("0.003532")
    assert sum(frame["cost_usd"], Decimal(0)) == Decimal(sum(costs)).scaleb(-9)
    expected = {
        "request_id",
        "started_at",
        "finished_at",
        "model",
        "status",
        "stream",
        "input_tokens",
        "cached_input_tokens",
        "output_tokens",
        "cost_nanousd",
        "cost_usd",
        "usage_source",
        "price_id",
        "tags",
    }
    assert expected <= set(frame.columns)
    assert frame["input_tokens"].iloc[0] == 2006 and frame["cached_input_tokens"].iloc[0] == 1920


def test_every_row_field_round_trips(db_url: str) -> None:
    from dataclasses import fields

    row = make_row(
        request_id="full",
        response_id="chatcmpl-123",
        stream=True,
        status="partial",
        usage_source="estimated",
        estimated_input_tokens=2010,
        ttft_us=120_000,
        http_status=200,
        x_metrics={"ttft_seconds": 0.12, "tps": 61.5, "total_time_seconds": 0.85},
        tags={"team": "search", "user": "ana", "feature": "autocomplete"},
        error="stream interrupted",
        prompt_text="hello",
        completion_text="wor",
    )
    with Ledger(db_url, store_text=True) as book:
        book.record(row)
        assert book.flush(10)
        [stored] = book.rows()
    for field in fields(row):
        assert stored[field.name] == getattr(row, field.name), field.name
