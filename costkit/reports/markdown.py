"""``summary.md``: the report in a few lines, short enough for a chat message or a CI comment.

Text from the ledger (model names, tag values, budget names) is escaped: ``<``, ``>`` and
``&`` as HTML entities (what CommonMark and Slack both read as plain characters) and
Markdown's own punctuation with a backslash, so a tag can neither inject HTML nor format.
"""

from __future__ import annotations

import re
from typing import Any

from costkit.reports import format as fmt

_MARKDOWN = re.compile(r"([\\`*_\[\]|~])")
TOP = 3


def escape_md(text: str) -> str:
    """``text`` as literal Markdown text (no HTML, no formatting, no links)."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = " ".join(text.split())  # newlines would start new blocks
    return _MARKDOWN.sub(r"\\\1", text)


def _top(rows: list[dict[str, Any]], label: str) -> str:
    shown = [
        f"{escape_md(str(r[label]))} {fmt.money(r['cost_usd'])} ({fmt.pct(r['share_pct'])})"
        for r in rows[:TOP]
    ]
    return ", ".join(shown) if shown else "none"


def summary(data: dict[str, Any]) -> str:
    """The Markdown summary of a report's data (``report.json``)."""
    period, totals, change, tables = data["period"], data["totals"], data["change"], data["tables"]
    lines = [
        f"**costkit spend report** {period['since']} to {period['until']} ({escape_md(period['tz'])})",
        "",
    ]
    if data["empty"]:
        lines.append("No requests in this period.")
        return "\n".join(lines) + "\n"
    previous = data["previous_totals"]
    against = (
        f"{fmt.signed_pct(change['cost_pct'])} against {fmt.money(previous['cost_usd'])} the period before"
        if data["previous_whole"]
        else f"the ledger begins inside the period before ({fmt.money(previous['cost_usd'])} in it): "
        "no change shown"
    )
    lines += [
        f"- Spend **{fmt.money(totals['cost_usd'])}** ({against}), {fmt.count(totals['requests'])} requests",
        f"- Tokens: {fmt.count(totals['uncached_input_tokens'])} input, "
        f"{fmt.count(totals['cached_input_tokens'])} cached input, "
        f"{fmt.count(totals['output_tokens'])} output",
    ]
    day = data["last_day"]
    lines.append(
        f"- Last day {day['date']}: {fmt.money(day['cost_usd'])} "
        f"({fmt.signed_pct(day['change']['cost_pct'])} against the day before)"
    )
    cache = data["cache"]
    lines.append(
        f"- Caching saved {fmt.money(cache['saved_usd'])} ({fmt.pct(cache['token_hit_rate_pct'])} of input "
        f"tokens cached; {fmt.count(cache['missed_requests'])} long prompts missed the cache)"
    )
    for budget in tables["budgets"]:
        warning = f", warnings crossed: {budget['warnings_crossed']}" if budget["warnings_crossed"] else ""
        forecast = (
            f", forecast {fmt.money(budget['forecast_usd'])} ({fmt.pct(budget['forecast_pct'])})"
            if budget["forecast_usd"] is not None
            else ""
        )
        lines.append(
            f"- Budget {escape_md(budget['budget'])}: {fmt.money(budget['spent_usd'])} of "
            f"{fmt.money(budget['limit_usd'])} ({fmt.pct(budget['used_pct'])}){forecast}{warning}"
        )
    lines.append(f"- Top models: {_top(tables['by_model'], 'model')}")
    for key, stem in data["tags"].items():
        lines.append(f"- Top {escape_md(key)}: {_top(tables[stem], 'value')}")
    statuses, timings = data["statuses"], data["timings"]
    lines.append(
        f"- Errors {fmt.count(statuses['error'])}, partial {fmt.count(statuses['partial'])}, "
        f"blocked {fmt.count(statuses['blocked'])}; "
        f"estimated usage on {fmt.count(data['estimated']['requests'])} rows; "
        f"latency p50 {fmt.ms(timings['latency_ms_p50'])}, p95 {fmt.ms(timings['latency_ms_p95'])}"
    )
    return "\n".join(lines) + "\n"
