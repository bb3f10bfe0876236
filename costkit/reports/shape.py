"""Aggregates shaped into pandas DataFrames: the report's tables, money as exact integers.

Every money column is ``*_nanousd`` (int64, summed from the database's integers; pandas
adds int64 exactly) with a ``*_usd`` twin holding the exact ``Decimal``. Spend per day is
split by token kind with the rates of the price entry each row was charged by; what the
price book cannot split (an entry it no longer has, rounding of fractional rates) is
``other_nanousd``, so the parts always add up to the ledger's own ``cost_nanousd``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import pandas as pd

from costkit.money import to_usd
from costkit.pricing import Price, default_price_book
from costkit.reports.aggregate import Aggregates
from costkit.reports.period import Period

TOP = 10
OTHER = "(other)"
UNTAGGED = "(no tag)"
_NANO_PER_RATE_UNIT = 1000  # a rate of $1 per 1M tokens is 1000 nano-USD per token
SUMS = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd")
PARTS = ("input_nanousd", "cached_input_nanousd", "output_nanousd", "other_nanousd")


def _nano(amount: Decimal) -> int:
    return int(amount.to_integral_value(rounding=ROUND_HALF_EVEN))


def with_usd(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with an exact ``Decimal`` ``*_usd`` column after each ``*_nanousd`` column."""
    for name in [c for c in frame.columns if str(c).endswith("_nanousd")]:
        usd = name.removesuffix("_nanousd") + "_usd"
        position = list(frame.columns).index(name) + 1
        frame.insert(position, usd, [None if pd.isna(v) else to_usd(int(v)) for v in frame[name]])
    return frame


def _frame(rows: Iterable[Mapping[str, Any]], columns: Iterable[str]) -> pd.DataFrame:
    columns = list(columns)
    frame = pd.DataFrame(list(rows), columns=columns)
    for name in columns:
        if name in SUMS or name.endswith(("_nanousd", "_tokens", "_requests")):
            frame[name] = frame[name].astype("int64")
    return frame


def cube_frame(aggregates: Aggregates) -> pd.DataFrame:
    """The cube with each group's spend split by token kind and what caching saved."""
    from costkit.reports.queries import CUBE_COLUMNS

    frame = _frame(aggregates.cube, CUBE_COLUMNS)
    prices = {price.id: price for price in default_price_book().prices}
    splits = [_split(row, prices.get(str(row["price_id"]))) for row in frame.to_dict("records")]
    for index, name in enumerate((*PARTS, "saved_nanousd")):
        frame[name] = pd.Series([split[index] for split in splits], dtype="int64", index=frame.index)
    return frame


def _split(row: Mapping[str, Any], price: Price | None) -> tuple[int, int, int, int, int]:
    """``(input, cached input, output, other, saved)`` nano-USD of one cube group."""
    cost = int(row["cost_nanousd"])
    if price is None or price.cache_write is not None:
        return 0, 0, 0, cost, 0
    cached = int(row["cached_input_tokens"])
    uncached = int(row["input_tokens"]) - cached
    parts = [
        _nano(uncached * price.input * _NANO_PER_RATE_UNIT),
        _nano(cached * price.cached_input * _NANO_PER_RATE_UNIT),
        _nano(int(row["output_tokens"]) * price.output * _NANO_PER_RATE_UNIT),
    ]
    if sum(parts) > cost:  # a row priced otherwise (repriced, blocked at $0): leave it unsplit
        return 0, 0, 0, cost, 0
    saved = _nano(cached * (price.input - price.cached_input) * _NANO_PER_RATE_UNIT)
    return parts[0], parts[1], parts[2], cost - sum(parts), saved


def daily(cube: pd.DataFrame, period: Period) -> pd.DataFrame:
    """One row per local date of the period (days without requests included, at zero)."""
    columns = [*SUMS, *PARTS, "saved_nanousd"]
    days = [day.isoformat() for day in period.days]
    grouped = cube.groupby("day")[columns].sum() if len(cube) else pd.DataFrame(columns=columns)
    frame = grouped.reindex(days, fill_value=0).astype("int64")
    frame.index.name = "date"
    frame = frame.reset_index()
    frame.insert(
        frame.columns.get_loc("cached_input_tokens") + 1,
        "uncached_input_tokens",
        frame["input_tokens"] - frame["cached_input_tokens"],
    )
    return with_usd(frame)


def ranked(frame: pd.DataFrame, label: str, total: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Top ``TOP`` rows by cost, the rest summed as ``(other)``, and what ``total`` holds beyond them.

    ``total`` (the period's sums) adds a ``(no tag)`` row for the requests the grouping did not cover.
    """
    frame = frame.sort_values(["cost_nanousd", label], ascending=[False, True], kind="stable")
    top, rest = frame.head(TOP), frame.iloc[TOP:]
    rows = top[[label, *SUMS]].to_dict("records")
    if len(rest):
        rows.append({label: OTHER, **{name: int(rest[name].sum()) for name in SUMS}})
    if total is not None:
        missing = {name: int(total[name]) - int(frame[name].sum()) for name in SUMS}
        if missing["requests"]:
            rows.append({label: UNTAGGED, **missing})
    result = _frame(rows, [label, *SUMS])
    grand = int(total["cost_nanousd"]) if total is not None else int(result["cost_nanousd"].sum())
    result["share_pct"] = [percent(int(cost), grand) for cost in result["cost_nanousd"]]
    return with_usd(result)


def by_model(cube: pd.DataFrame) -> pd.DataFrame:
    grouped = (
        cube.groupby("model", as_index=False)[list(SUMS)].sum() if len(cube) else _frame([], ["model", *SUMS])
    )
    return ranked(grouped, "model")


def by_tag(aggregates: Aggregates, key: str, total: Mapping[str, int]) -> pd.DataFrame:
    rows = [{"value": r["value"], **{n: r[n] for n in SUMS}} for r in aggregates.tags if r["key"] == key]
    return ranked(_frame(rows, ["value", *SUMS]), "value", total)


def statuses(cube: pd.DataFrame) -> pd.DataFrame:
    columns = ["status", "usage_source", "requests", "cost_nanousd"]
    if not len(cube):
        return with_usd(_frame([], columns))
    grouped = cube.groupby(["status", "usage_source"], as_index=False)[["requests", "cost_nanousd"]].sum()
    return with_usd(grouped[columns].astype({"requests": "int64", "cost_nanousd": "int64"}))


def problems(aggregates: Aggregates) -> pd.DataFrame:
    columns = ["status", "error", "requests", "cost_nanousd", "first_at", "last_at"]
    return with_usd(_frame(aggregates.problems, columns))


ROW_COLUMNS = (
    "request_id",
    "started_at",
    "model",
    "status",
    "usage_source",
    "stream",
    "input_tokens",
    "cached_input_tokens",
    "output_tokens",
    "estimated_input_tokens",
    "cost_nanousd",
    "latency_ms",
    "tags",
    "error",
)


def request_rows(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Single requests (the most expensive, the estimated): tags as ``key=value; ...`` text."""
    shaped = []
    for row in rows:
        latency = row["latency_us"]
        shaped.append(
            {
                **row,
                "estimated_input_tokens": row["estimated_input_tokens"],
                "latency_ms": None if latency is None else Decimal(int(latency)).scaleb(-3),
                "tags": "; ".join(f"{k}={v}" for k, v in sorted(row["tags"].items())),
            }
        )
    frame = pd.DataFrame(shaped, columns=list(ROW_COLUMNS))
    for name in ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd"):
        frame[name] = frame[name].astype("int64")
    frame["estimated_input_tokens"] = frame["estimated_input_tokens"].astype("Int64")
    return with_usd(frame)


def percent(part: int, whole: int) -> Decimal | None:
    """``part / whole`` in percent to one decimal place (half-even), exact; None when ``whole`` is 0."""
    if not whole:
        return None
    return (Decimal(part) * 100 / Decimal(whole)).quantize(Decimal("0.1"), rounding=ROUND_HALF_EVEN)


def file_stem(key: str) -> str:
    """A file-name-safe name for a tag key's table (``by_tag_team``); unusual keys get a unique suffix."""
    safe = re.sub(r"[^A-Za-z0-9_-]+", "_", key)[:60]
    if safe == key:
        return f"by_tag_{key}"
    import hashlib

    return f"by_tag_{safe}_{hashlib.sha256(key.encode()).hexdigest()[:8]}"
