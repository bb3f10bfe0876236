"""Aggregates into the report's frames and its ``report.json`` content, in one place so they agree."""

from __future__ import annotations

from typing import Any

import pandas as pd

from costkit import __version__
from costkit.reports import content, shape
from costkit.reports.aggregate import Aggregates
from costkit.reports.period import Period


def build(
    period: Period, tag_keys: list[str], aggregates: Aggregates, budget_table: list[dict[str, Any]]
) -> tuple[dict[str, pd.DataFrame], dict[str, Any]]:
    """``(frames, data)``: the DataFrames by name and the JSON document whose ``tables`` are those frames."""
    cube = shape.cube_frame(aggregates)
    daily = shape.daily(cube, period)
    totals = content.sums({name: int(daily[name].sum()) for name in shape.SUMS})
    previous = content.sums(aggregates.previous)
    frames: dict[str, pd.DataFrame] = {
        "daily": daily,
        "by_model": shape.by_model(cube),
    }
    for key in tag_keys:
        frames[shape.file_stem(key)] = shape.by_tag(aggregates, key, totals)
    frames["budgets"] = shape.with_usd(pd.DataFrame(budget_table, columns=_BUDGET_COLUMNS))
    frames["statuses"] = shape.statuses(cube)
    frames["problems"] = shape.problems(aggregates)
    frames["top_requests"] = shape.request_rows(aggregates.top)
    frames["estimated_requests"] = shape.request_rows(aggregates.estimated)
    last = daily.iloc[-1]
    before = (
        content.sums({name: int(daily.iloc[-2][name]) for name in shape.SUMS}) if len(daily) > 1 else previous
    )
    last_day = content.sums({name: int(last[name]) for name in shape.SUMS})
    data: dict[str, Any] = {
        "schema": content.SCHEMA,
        "costkit_version": __version__,
        "period": content.period_json(period),
        "previous_period": content.period_json(period.previous()),
        "empty": totals["requests"] == 0,
        "totals": totals,
        "previous_totals": previous,
        "previous_whole": aggregates.previous_whole,
        "change": content.change(totals, previous, whole=aggregates.previous_whole),
        "last_day": {
            "date": str(last["date"]),
            **last_day,
            "day_before": before,
            "change": content.change(last_day, before),
        },
        **content.summary_sections(cube, daily, aggregates),
        "tags": {key: shape.file_stem(key) for key in tag_keys},
        "tables": {name: content.records(frame) for name, frame in frames.items()},
    }
    return frames, data


_BUDGET_COLUMNS = [
    "budget",
    "period",
    "tz",
    "tags",
    "hard",
    "period_start",
    "period_end",
    "limit_nanousd",
    "spent_nanousd",
    "reserved_nanousd",
    "remaining_nanousd",
    "used_pct",
    "forecast_nanousd",
    "forecast_pct",
    "warnings_crossed",
    "warnings_recorded",
]
