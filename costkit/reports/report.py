"""``costkit.report()``: compute → frames → figures → files, each step a user can call.

The ledger is read once (``aggregate``); the tables are pandas DataFrames
(``Report.frames``); ``Report.data`` is ``report.json``, from which the page, the CSV
files and ``summary.md`` are rendered; ``Report.figures`` are plotly figures built
from the frames on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import date, datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from costkit.budgets.budget import Budget
from costkit.reports.period import Period, PeriodError, parse_date, period_of

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go
    from sqlalchemy.engine import URL

    from costkit.ledger import Ledger

FORMATS = ("html", "json", "csv", "md")


def parse_by(by: Iterable[str]) -> list[str]:
    """The tag keys of ``--by`` values (``model`` is always shown); ``PeriodError`` for anything else."""
    keys: list[str] = []
    for value in by:
        if value == "model":
            continue
        kind, sep, key = value.partition(":")
        if kind != "tag" or not sep or not key.strip():
            raise PeriodError(f"--by {value!r}: use 'model' or 'tag:NAME' (for example tag:team)")
        if key not in keys:
            keys.append(key)
    return keys


def _date(value: date | str | None, option: str) -> date | None:
    if value is None or (isinstance(value, date) and not isinstance(value, datetime)):
        return value
    if isinstance(value, str):
        return parse_date(value, option)
    raise PeriodError(f"{option}: give a date (or 'YYYY-MM-DD'), not {type(value).__name__}")


class Report:
    """A spend report for one period: ``.frames``, ``.figures``, ``.totals``, ``.data``, ``.write()``."""

    def __init__(
        self, period: Period, tag_keys: list[str], frames: dict[str, pd.DataFrame], data: dict[str, Any]
    ):
        self.period = period
        self.tag_keys = tag_keys
        self.frames = frames
        self.data = data

    def __repr__(self) -> str:
        period = self.period
        return f"<Report {period.first} to {period.end} ({period.tz}): ${self.data['totals']['cost_usd']}>"

    @property
    def totals(self) -> dict[str, Any]:
        """The period's totals: requests, tokens by kind, ``cost_nanousd`` and exact ``cost_usd`` text."""
        return dict(self.data["totals"])

    @property
    def empty(self) -> bool:
        return bool(self.data["empty"])

    @cached_property
    def figures(self) -> dict[str, go.Figure]:
        from costkit.reports.figures import figures

        return figures(self)

    def to_json(self) -> str:
        import json

        return json.dumps(self.data, indent=2, ensure_ascii=False) + "\n"

    def to_html(self) -> str:
        from costkit.reports.page import page

        return page(self)

    def to_markdown(self) -> str:
        from costkit.reports.markdown import summary

        return summary(self.data)

    def write(self, out_dir: str | os.PathLike[str], formats: Iterable[str] = FORMATS) -> list[Path]:
        """Write the files (``html``, ``json``, ``csv``, ``md``) into ``out_dir``, returning their paths."""
        from costkit.reports.files import write_files

        return write_files(self, Path(out_dir), list(formats))


def report(
    ledger: Ledger | str | URL | None = None,
    *,
    since: date | str | None = None,
    until: date | str | None = None,
    tz: str = "UTC",
    by: Iterable[str] = (),
    budgets: Iterable[Budget] | None = None,
    config: str | os.PathLike[str] | None = None,
) -> Report:
    """The spend report of ``ledger`` (a ``Ledger``, URL or SQLite path; default: the default ledger).

    ``since`` (inclusive) and ``until`` (exclusive) are local dates in ``tz``; without them,
    the month to date up to the last full day. ``by``: ``"tag:NAME"`` adds a table and a
    chart per tag (``"model"`` is always there). ``budgets``: default, the config file's
    (``load_budgets(config)``). Raises ``ValueError`` for bad input, ``LedgerError`` for a
    ledger that cannot be read.
    """
    from costkit.budgets.config import load_budgets
    from costkit.reports.aggregate import Aggregates, aggregate
    from costkit.reports.budgets import budget_rows
    from costkit.reports.build import build
    from costkit.reports.source import read_ledger

    period = period_of(_date(since, "since"), _date(until, "until"), tz)
    keys = parse_by([by] if isinstance(by, str) else by)
    chosen = load_budgets(config) if budgets is None else list(budgets)

    def read(engine: Any) -> tuple[Aggregates, list[dict[str, Any]]]:
        return aggregate(engine, period, keys), budget_rows(engine, chosen, period.until)

    nothing: tuple[Aggregates, list[dict[str, Any]]] = (Aggregates(), [])
    aggregates, budget_table = read_ledger(ledger, read, nothing)
    frames, data = build(period, keys, aggregates, budget_table)
    data["ledger"] = _ledger_label(ledger)
    data["generated_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Report(period, keys, frames, data)


def _ledger_label(ledger: Any) -> str:
    from costkit.ledger.location import resolve_url, safe_url

    return safe_url(ledger.url if hasattr(ledger, "url") else resolve_url(ledger))
