"""The report's plotly figures, built from its frames: titled, axes with units, dollars as money.

Plotted heights are floats (plotly draws numbers); every hover label shows the exact
dollar text from the report instead, so nothing read off a chart is rounded. Labels that
come from the ledger (models, tag keys and values) are HTML-escaped first: plotly reads a
few HTML tags in labels, and a tag value must show as the text it is.
"""

from __future__ import annotations

from html import escape
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from costkit.reports.content import usd_text

if TYPE_CHECKING:
    import pandas as pd

    from costkit.reports.report import Report

COLORS = {"input": "#3b6fb6", "cached_input": "#8fbf5a", "output": "#e08a2c", "other": "#9a9a9a"}
KINDS = (
    ("input", "Input (uncached)"),
    ("cached_input", "Cached input"),
    ("output", "Output"),
    ("other", "Other (not split)"),
)
_LAYOUT: dict[str, Any] = {
    "template": "plotly_white",
    "margin": {"l": 70, "r": 20, "t": 60, "b": 60},
    "height": 380,
    "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 13},
    "legend": {"orientation": "h", "y": -0.2},
}


def _money_axis(title: str) -> dict[str, Any]:
    return {"title": {"text": title}, "tickprefix": "$", "tickformat": ",.2~f", "rangemode": "tozero"}


def _dollars(values: Any) -> list[float]:
    return [float(v) for v in values]


def daily_spend(frame: pd.DataFrame, tz: str) -> go.Figure:
    figure = go.Figure()
    for kind, label in KINDS:
        column = f"{kind}_usd"
        if kind == "other" and not frame[f"{kind}_nanousd"].any():
            continue
        figure.add_bar(
            name=label,
            x=list(frame["date"]),
            y=_dollars(frame[column]),
            marker_color=COLORS[kind],
            customdata=[usd_text(v) for v in frame[column]],
            hovertemplate=f"%{{x}}<br>{label}: $%{{customdata}}<extra></extra>",
        )
    figure.update_layout(
        **_LAYOUT,
        barmode="stack",
        title={"text": "Spend per day by token kind (USD)"},
        xaxis={"title": {"text": f"Date ({tz})"}, "type": "category"},
        yaxis=_money_axis("Spend (USD)"),
    )
    return figure


def daily_tokens(frame: pd.DataFrame, tz: str) -> go.Figure:
    figure = go.Figure()
    for column, label, kind in (
        ("uncached_input_tokens", "Input, not cached", "input"),
        ("cached_input_tokens", "Input, cached", "cached_input"),
    ):
        figure.add_bar(
            name=label, x=list(frame["date"]), y=[int(v) for v in frame[column]], marker_color=COLORS[kind]
        )
    figure.update_layout(
        **_LAYOUT,
        barmode="stack",
        title={"text": "Input tokens per day: cached and not cached (tokens)"},
        xaxis={"title": {"text": f"Date ({tz})"}, "type": "category"},
        yaxis={"title": {"text": "Input tokens"}, "tickformat": ",d", "rangemode": "tozero"},
    )
    return figure


def ranking(frame: pd.DataFrame, label: str, title: str) -> go.Figure:
    ordered = frame.iloc[::-1]
    figure = go.Figure(
        go.Bar(
            x=_dollars(ordered["cost_usd"]),
            y=[escape(str(v), quote=False) for v in ordered[label]],
            orientation="h",
            marker_color=COLORS["input"],
            customdata=[usd_text(v) for v in ordered["cost_usd"]],
            hovertemplate="%{y}: $%{customdata}<extra></extra>",
        )
    )
    figure.update_layout(
        **{**_LAYOUT, "height": max(260, 60 + 34 * len(frame))},
        title={"text": title},
        xaxis=_money_axis("Spend (USD)"),
        yaxis={"title": {"text": label.capitalize()}, "type": "category", "automargin": True},
    )
    return figure


def budgets(frame: pd.DataFrame) -> go.Figure:
    """Spend and forecast as a percentage of each limit, so a $20 and a $0.10 budget read alike."""
    names = [escape(str(v), quote=False) for v in frame["budget"]]
    figure = go.Figure()
    for percent, money, label, color in (
        ("used_pct", "spent_usd", "Spent", COLORS["input"]),
        ("forecast_pct", "forecast_usd", "Forecast to period end", COLORS["output"]),
    ):
        figure.add_bar(
            name=label,
            x=names,
            y=[0.0 if v is None else float(v) for v in frame[percent]],
            marker_color=color,
            customdata=[
                ["n/a" if m is None else usd_text(m), usd_text(limit)]
                for m, limit in zip(frame[money], frame["limit_usd"], strict=True)
            ],
            hovertemplate=f"%{{x}}<br>{label}: $%{{customdata[0]}} of $%{{customdata[1]}}"
            " (%{y}%)<extra></extra>",
        )
    figure.add_hline(y=100, line_dash="dash", line_color=COLORS["other"], annotation_text="limit")
    figure.update_layout(
        **_LAYOUT,
        barmode="group",
        title={"text": "Budgets this period: spent and forecast (% of the limit)"},
        xaxis={"title": {"text": "Budget"}, "type": "category"},
        yaxis={"title": {"text": "Percent of the limit (%)"}, "ticksuffix": "%", "rangemode": "tozero"},
    )
    return figure


def figures(report: Report) -> dict[str, go.Figure]:
    """The report's figures by name: daily spend and tokens, by model, by each tag, budgets (if any)."""
    frames, tz = report.frames, report.period.tz
    found = {
        "daily_spend": daily_spend(frames["daily"], tz),
        "daily_tokens": daily_tokens(frames["daily"], tz),
        "by_model": ranking(frames["by_model"], "model", "Spend by model, top 10 (USD)"),
    }
    for key, stem in report.data["tags"].items():
        found[stem] = ranking(frames[stem], "value", f"Spend by tag {escape(key, quote=False)}, top 10 (USD)")
        found[stem].update_yaxes(title={"text": f"Tag {escape(key, quote=False)}"})
    if len(frames["budgets"]):
        found["budgets"] = budgets(frames["budgets"])
    return found
