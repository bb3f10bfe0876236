"""``costkit report`` and ``costkit demo``.

``report`` reads the ledger (never writes it), writes the chosen files into ``--out``
(default ``reports/<date>/``, the period's last day) and prints a short summary. Bad
input, a ledger that cannot be read and a webhook that refuses the summary are one
line on stderr and exit 2; the files are written before ``--notify`` posts, so they
are kept when the post fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from costkit.cli import BadInput

if TYPE_CHECKING:
    from costkit.reports.period import Period


def _formats(text: str) -> list[str]:
    from costkit.reports.files import check_formats

    try:
        return check_formats([part.strip() for part in text.split(",") if part.strip()])
    except ValueError as error:
        raise BadInput(f"--format: {error}") from None


def default_out(since: str | None, until: str | None, period: Period) -> Path:
    """``reports/<last day>`` for the default period, ``reports/<since>_<until>`` for a chosen one."""
    if since is None and until is None:
        return Path("reports") / period.last_day.isoformat()
    return Path("reports") / f"{period.first.isoformat()}_{period.end.isoformat()}"


@click.command()
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Ledger URL or SQLite path (default: $COSTKIT_DB_URL, else the user data dir).",
)
@click.option("--since", metavar="DATE", help="First day, inclusive (YYYY-MM-DD in --tz).")
@click.option("--until", metavar="DATE", help="Last day, exclusive (YYYY-MM-DD in --tz).")
@click.option(
    "--tz", default="UTC", show_default=True, metavar="ZONE", help="IANA time zone of the dates and days."
)
@click.option("--by", "by", multiple=True, metavar="model|tag:NAME", help="Add a breakdown (repeatable).")
@click.option("--out", "out", type=click.Path(path_type=Path), metavar="DIR", help="Directory for the files.")
@click.option("--format", "formats", default="html,json,csv,md", show_default=True, metavar="LIST")
@click.option(
    "--config", metavar="FILE", help="Budgets config (default: $COSTKIT_CONFIG, costkit.toml, pyproject)."
)
@click.option("--demo", is_flag=True, help="Report on the demo ledger (created by `costkit demo` if absent).")
@click.option("--notify", metavar="URL", help="Post summary.md to a Slack-compatible incoming webhook.")
def report(
    db_url: str | None,
    since: str | None,
    until: str | None,
    tz: str,
    by: tuple[str, ...],
    out: Path | None,
    formats: str,
    config: str | None,
    demo: bool,
    notify: str | None,
) -> None:
    """Write a spend report: the month to date up to the last full day, or --since to --until."""
    from costkit.errors import CostkitError
    from costkit.reports.period import PeriodError, parse_date, period_of
    from costkit.reports.report import report as make_report

    chosen = _formats(formats)
    if notify is not None:
        from costkit.reports.notify import check_webhook

        check_webhook(notify)
    try:
        period = period_of(
            parse_date(since, "--since") if since else None,
            parse_date(until, "--until") if until else None,
            tz,
        )
        budgets = None
        if demo:
            from costkit.reports.demo import demo_budgets, ensure_demo

            if db_url is not None:
                raise BadInput(
                    "--demo reports on the demo ledger: leave out --db (or use `costkit demo --db`)"
                )
            db_url = ensure_demo()
            budgets = demo_budgets()
            by = by or ("tag:team", "tag:feature")
        made = make_report(
            db_url,
            since=period.first if since or until else None,
            until=period.end if since or until else None,
            tz=tz,
            by=by,
            budgets=budgets,
            config=config,
        )
    except (PeriodError, CostkitError, ValueError) as error:
        raise BadInput(str(error)) from None
    directory = out if out is not None else default_out(since, until, period)
    try:
        written = made.write(directory, chosen)
    except OSError as error:
        raise BadInput(f"{error.filename or directory}: {error.strerror or error}") from None
    click.echo(_stdout_summary(made.data, directory, written))
    if notify is not None:
        from costkit.reports.notify import post_summary

        post_summary(notify, made.to_markdown())
        click.echo(f"summary posted to the webhook at {_host_of(notify)}")


def _host_of(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).hostname or "?"


def _stdout_summary(data: dict[str, Any], directory: Path, written: list[Path]) -> str:
    from costkit.reports import format as fmt

    period, totals, change = data["period"], data["totals"], data["change"]
    lines = [f"costkit report {period['since']} to {period['until']} ({period['tz']})"]
    if data["empty"]:
        lines.append("no requests in this period")
    else:
        lines.append(
            f"spend {fmt.money(totals['cost_usd'])} "
            + (
                f"({fmt.signed_pct(change['cost_pct'])} against the period before), "
                if data["previous_whole"]
                else "(the ledger begins inside the period before: no change shown), "
            )
            + f"{fmt.count(totals['requests'])} requests, "
            f"caching saved {fmt.money(data['cache']['saved_usd'])}"
        )
        day = data["last_day"]
        lines.append(f"last day {day['date']}: {fmt.money(day['cost_usd'])}")
        for budget in data["tables"]["budgets"]:
            spent, limit = fmt.money(budget["spent_usd"]), fmt.money(budget["limit_usd"])
            lines.append(f"budget {budget['budget']}: {spent} of {limit} ({fmt.pct(budget['used_pct'])})")
    lines.append(f"wrote {len(written)} files to {directory}/")
    return "\n".join(lines)


@click.command()
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    help="Demo ledger URL or SQLite path (default: demo.sqlite beside the real ledger).",
)
@click.option(
    "--days",
    default=30,
    show_default=True,
    type=click.IntRange(1, 366),
    help="Days of traffic, ending yesterday (UTC).",
)
@click.option("--seed", default=7, show_default=True, type=int, help="Same seed and day, same rows.")
def demo(db_url: str | None, days: int, seed: int) -> None:
    """Fill a separate demo ledger with realistic traffic; then `costkit report --demo`."""
    from costkit.errors import CostkitError
    from costkit.ledger.location import resolve_url, safe_url
    from costkit.reports.demo import fill_demo

    try:
        target, count = fill_demo(db_url, days=days, seed=seed)
        shown = safe_url(resolve_url(target))
    except (CostkitError, ValueError) as error:
        raise BadInput(str(error)) from None
    click.echo(f"recorded {count:,} demo requests over {days} days in {shown}")
    click.echo(
        "see them: costkit report --demo" if db_url is None else f"see them: costkit report --db {db_url}"
    )
