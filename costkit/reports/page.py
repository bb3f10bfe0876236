"""``report.html``: one self-contained page rendered from ``report.json`` and the figures.

plotly.js is inlined once, in the head; each figure is a ``<div>`` plus a small script
with ``include_plotlyjs=False``, so the page opens offline and makes no request. Every
value that comes from the ledger (model names, tag values, error texts) is HTML-escaped
here; plotly's own output escapes its JSON, and tick and title labels are escaped before
they reach plotly, whose labels understand a few HTML tags. The embedded copy of
``report.json`` escapes ``<``, ``>`` and ``&`` so no ``</script>`` or ``<!--`` can end it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

from costkit.reports import format as fmt
from costkit.reports.style import CSS

if TYPE_CHECKING:
    from costkit.reports.report import Report

NO_BUDGETS = "No budgets configured ([[budget]] in costkit.toml)."
COLUMNS: dict[str, list[tuple[str, str]]] = {
    "daily": [
        ("date", "Date"),
        ("requests", "Requests"),
        ("uncached_input_tokens", "Input tokens (not cached)"),
        ("cached_input_tokens", "Cached input tokens"),
        ("output_tokens", "Output tokens"),
        ("input_usd", "Input"),
        ("cached_input_usd", "Cached input"),
        ("output_usd", "Output"),
        ("other_usd", "Other"),
        ("cost_usd", "Total"),
        ("saved_usd", "Saved by caching"),
    ],
    "ranking": [
        ("requests", "Requests"),
        ("input_tokens", "Input tokens"),
        ("cached_input_tokens", "Cached input tokens"),
        ("output_tokens", "Output tokens"),
        ("cost_usd", "Spend"),
        ("share_pct", "Share"),
    ],
    "budgets": [
        ("budget", "Budget"),
        ("period", "Period"),
        ("tags", "Tags"),
        ("hard", "Hard"),
        ("period_start", "Period start"),
        ("limit_usd", "Limit"),
        ("spent_usd", "Spent"),
        ("reserved_usd", "Reserved"),
        ("remaining_usd", "Remaining"),
        ("used_pct", "Used"),
        ("forecast_usd", "Forecast"),
        ("forecast_pct", "Forecast of limit"),
        ("warnings_crossed", "Warnings crossed"),
        ("warnings_recorded", "Warnings recorded"),
    ],
    "statuses": [
        ("status", "Status"),
        ("usage_source", "Usage"),
        ("requests", "Requests"),
        ("cost_usd", "Spend"),
    ],
    "problems": [
        ("status", "Status"),
        ("error", "Error"),
        ("requests", "Requests"),
        ("cost_usd", "Spend"),
        ("first_at", "First"),
        ("last_at", "Last"),
    ],
    "requests": [
        ("started_at", "Started (UTC)"),
        ("request_id", "Request id"),
        ("model", "Model"),
        ("status", "Status"),
        ("usage_source", "Usage"),
        ("input_tokens", "Input tokens"),
        ("cached_input_tokens", "Cached"),
        ("output_tokens", "Output tokens"),
        ("estimated_input_tokens", "Estimated input"),
        ("cost_usd", "Cost"),
        ("latency_ms", "Latency"),
        ("tags", "Tags"),
        ("error", "Error"),
    ],
}


def table(name: str, rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """An HTML table of a report table; each cell carries its JSON value for checking (``data-value``)."""
    if not rows:
        return f'<p class="none" data-table="{escape(name)}">None in this period.</p>'
    head = "".join(f'<th scope="col">{escape(label)}</th>' for _, label in columns)
    body = []
    for row in rows:
        cells = []
        for column, _ in columns:
            value = row.get(column)
            raw = "" if value is None else json.dumps(value, ensure_ascii=False)
            numeric = (
                ' class="num"' if isinstance(value, (int, float)) or column.endswith(("_usd", "_pct")) else ""
            )
            cells.append(
                f'<td data-col="{escape(column)}" data-value="{escape(raw)}"{numeric}>'
                f"{escape(fmt.cell(column, value))}</td>"
            )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table data-table="{escape(name)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


def facts(pairs: list[tuple[str, str, str]]) -> str:
    """A definition list of single numbers: ``(label, json path, shown text)``."""
    items = "".join(
        f'<div><dt>{escape(label)}</dt><dd data-path="{escape(path)}">{escape(shown)}</dd></div>'
        for label, path, shown in pairs
    )
    return f'<dl class="facts">{items}</dl>'


def _chart(report: Report, name: str) -> str:
    import plotly.io as pio

    figure = report.figures.get(name)
    if figure is None:
        return ""
    markup = pio.to_html(
        figure,
        full_html=False,
        include_plotlyjs=False,
        div_id=f"chart-{name}",
        config={"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["sendDataToCloud"]},
    )
    return f'<figure class="chart">{markup}</figure>'


def embedded_json(data: dict[str, Any]) -> str:
    """``report.json`` for a ``<script type="application/json">``: nothing in it can close the element."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _totals(data: dict[str, Any]) -> str:
    rows: list[tuple[str, str, Callable[[Any], str]]] = [
        ("Requests", "requests", fmt.count),
        ("Input tokens (not cached)", "uncached_input_tokens", fmt.count),
        ("Cached input tokens", "cached_input_tokens", fmt.count),
        ("Output tokens", "output_tokens", fmt.count),
        ("Spend", "cost_usd", fmt.money),
    ]
    now, before, change = data["totals"], data["previous_totals"], data["change"]
    body = "".join(
        f'<tr><th scope="row">{label}</th><td class="num" data-path="totals.{key}">{show(now[key])}</td>'
        f'<td class="num" data-path="previous_totals.{key}">{show(before[key])}</td></tr>'
        for label, key, show in rows
    )
    previous = data["previous_period"]
    partial = (
        ""
        if data["previous_whole"]
        else '<p class="meta" id="previous-not-whole">The ledger begins inside the previous period, '
        "so that period is not whole: no change in percent is shown.</p>"
    )
    return (
        '<div class="scroll"><table data-table="totals"><thead><tr><th></th><th scope="col">This period</th>'
        f'<th scope="col">Previous period ({escape(previous["since"])} to {escape(previous["until"])})</th>'
        f"</tr></thead><tbody>{body}</tbody></table></div>{partial}"
        + facts(
            [
                ("Change in spend", "change.cost_usd", _signed_money(change["cost_usd"])),
                ("Change in spend, percent", "change.cost_pct", fmt.signed_pct(change["cost_pct"])),
                ("Change in requests", "change.requests", f"{change['requests']:+,}"),
            ]
        )
    )


def _signed_money(text: str) -> str:
    return fmt.money(text) if text.startswith("-") else "+" + fmt.money(text)


def _last_day(data: dict[str, Any]) -> str:
    day = data["last_day"]
    return facts(
        [
            ("Date", "last_day.date", day["date"]),
            ("Requests", "last_day.requests", fmt.count(day["requests"])),
            ("Spend", "last_day.cost_usd", fmt.money(day["cost_usd"])),
            ("Day before", "last_day.day_before.cost_usd", fmt.money(day["day_before"]["cost_usd"])),
            ("Change", "last_day.change.cost_pct", fmt.signed_pct(day["change"]["cost_pct"])),
        ]
    )


def _cache(data: dict[str, Any]) -> str:
    cache = data["cache"]
    return facts(
        [
            (
                "Cached share of input tokens",
                "cache.token_hit_rate_pct",
                fmt.pct(cache["token_hit_rate_pct"]),
            ),
            (
                "Requests with a cache hit",
                "cache.requests_with_cache_hits",
                fmt.count(cache["requests_with_cache_hits"]),
            ),
            ("Share of requests", "cache.request_hit_rate_pct", fmt.pct(cache["request_hit_rate_pct"])),
            ("Saved by caching", "cache.saved_usd", fmt.money(cache["saved_usd"])),
            ("Cached input cost", "cache.cached_input_cost_usd", fmt.money(cache["cached_input_cost_usd"])),
            (
                "Prompts of 1,024+ tokens with no cache hit",
                "cache.missed_requests",
                fmt.count(cache["missed_requests"]),
            ),
            ("Their input tokens", "cache.missed_input_tokens", fmt.count(cache["missed_input_tokens"])),
        ]
    )


def _timings(data: dict[str, Any]) -> str:
    t = data["timings"]
    return facts(
        [
            (
                "Successful requests timed",
                "timings.requests_with_latency",
                fmt.count(t["requests_with_latency"]),
            ),
            ("Latency p50", "timings.latency_ms_p50", fmt.ms(t["latency_ms_p50"])),
            ("Latency p95", "timings.latency_ms_p95", fmt.ms(t["latency_ms_p95"])),
            ("Streams with a first token", "timings.requests_with_ttft", fmt.count(t["requests_with_ttft"])),
            ("Time to first token p50", "timings.ttft_ms_p50", fmt.ms(t["ttft_ms_p50"])),
            ("Time to first token p95", "timings.ttft_ms_p95", fmt.ms(t["ttft_ms_p95"])),
        ]
    )


def _drift(data: dict[str, Any]) -> str:
    d, e = data["drift"], data["estimated"]
    return facts(
        [
            ("Rows with estimated usage", "estimated.requests", fmt.count(e["requests"])),
            ("Their cost", "estimated.cost_usd", fmt.money(e["cost_usd"])),
            ("Provider-counted rows with an estimate", "drift.requests", fmt.count(d["requests"])),
            (
                "costkit's input estimate",
                "drift.estimated_input_tokens",
                fmt.count(d["estimated_input_tokens"]),
            ),
            ("Provider's input count", "drift.provider_input_tokens", fmt.count(d["provider_input_tokens"])),
            ("Net drift (estimate − provider)", "drift.net_drift_tokens", f"{d['net_drift_tokens']:+,}"),
            ("Net drift, percent", "drift.net_drift_pct", fmt.signed_pct(d["net_drift_pct"])),
            ("Sum of absolute drift", "drift.absolute_drift_tokens", fmt.count(d["absolute_drift_tokens"])),
        ]
    )


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{"".join(parts)}</section>'


def page(report: Report) -> str:
    """The whole page as text."""
    import plotly.offline

    data, tables = report.data, report.data["tables"]
    period = data["period"]
    heading = f"Spend report {period['since']} to {period['until']} ({period['tz']})"
    sections = [
        _section("totals", "Totals against the previous period", _totals(data)),
        _section("last-day", "Last day of the period", _last_day(data)),
        _section(
            "daily",
            "Spend per day",
            _chart(report, "daily_spend"),
            table("daily", tables["daily"], COLUMNS["daily"]),
        ),
        _section(
            "budgets",
            "Budgets",
            _chart(report, "budgets"),
            table("budgets", tables["budgets"], COLUMNS["budgets"])
            if tables["budgets"]
            else f'<p class="none" data-table="budgets">{NO_BUDGETS}</p>',
        ),
        _section(
            "by-model",
            "Spend by model",
            _chart(report, "by_model"),
            table("by_model", tables["by_model"], [("model", "Model"), *COLUMNS["ranking"]]),
        ),
    ]
    for key, stem in data["tags"].items():
        sections.append(
            _section(
                stem.replace("_", "-"),
                f"Spend by tag {key}",
                _chart(report, stem),
                table(stem, tables[stem], [("value", f"Tag {key}"), *COLUMNS["ranking"]]),
            )
        )
    sections += [
        _section("cache", "Prompt caching", _cache(data), _chart(report, "daily_tokens")),
        _section("timings", "Latency and time to first token", _timings(data)),
        _section(
            "top",
            f"The {len(tables['top_requests'])} most expensive requests",
            table("top_requests", tables["top_requests"], COLUMNS["requests"]),
        ),
        _section(
            "estimates",
            "Estimated usage and drift from the provider's counts",
            _drift(data),
            table("estimated_requests", tables["estimated_requests"], COLUMNS["requests"]),
        ),
        _section(
            "problems",
            "Errors, blocked and partial requests",
            table("statuses", tables["statuses"], COLUMNS["statuses"]),
            table("problems", tables["problems"], COLUMNS["problems"]),
        ),
    ]
    notice = (
        '<p class="empty" id="empty-notice">No requests in this period: the ledger holds nothing between '
        f"{escape(period['since'])} and {escape(period['until'])} ({escape(period['tz'])}).</p>"
        if data["empty"]
        else ""
    )
    meta = (
        f'<p class="meta">Ledger {escape(data["ledger"])} · generated {escape(data["generated_at"])} · '
        f"costkit {escape(data['costkit_version'])} · {escape(period['since'])} inclusive to "
        f"{escape(period['until'])} exclusive</p>"
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(heading)}</title><style>{CSS}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>'
        f"<body><header><h1>{escape(heading)}</h1>{meta}{notice}</header><main>{''.join(sections)}</main>"
        f'<script type="application/json" id="costkit-report">{embedded_json(data)}</script>'
        "</body></html>\n"
    )
