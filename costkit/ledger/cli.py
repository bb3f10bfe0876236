"""``costkit db`` (schema migrations) and ``costkit ledger`` (export, tail, replay, reprice).

Both groups and every subcommand take ``--db URL`` (default ``$COSTKIT_DB_URL``,
else the SQLite ledger in the user data directory). Bad input and an unreachable
database are one line on stderr and exit 2, never a traceback.

Read commands (``ledger tail``/``export``, ``db current``) and ``db downgrade`` never
create anything: an SQLite path that does not exist is an error naming it, and an
existing file is opened without creating or changing anything (read-only when this
process may not write it). ``db downgrade`` takes no default revision.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from costkit.cli import BadInput

F = TypeVar("F", bound=Callable[..., Any])
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _db_option(command: F) -> F:
    return click.option(
        "--db",
        "db_url",
        metavar="URL",
        default=None,
        help="Ledger database URL or SQLite path (default: $COSTKIT_DB_URL, else the user data dir).",
    )(command)


def _url_of(ctx: click.Context, local: str | None) -> Any:
    from costkit.ledger.errors import LedgerError
    from costkit.ledger.location import resolve_url

    text = local if local is not None else (ctx.obj or {}).get("db_url")
    try:
        return resolve_url(text)
    except LedgerError as error:
        raise BadInput(str(error)) from None


@contextmanager
def _database_errors(url: Any) -> Iterator[None]:
    """Turn an unreachable or unusable database into one line and exit 2."""
    from sqlalchemy.exc import SQLAlchemyError

    from costkit.ledger.engine import first_line
    from costkit.ledger.errors import LedgerError
    from costkit.ledger.location import safe_url

    try:
        yield
    except LedgerError as error:
        raise BadInput(str(error)) from None
    except ModuleNotFoundError as error:
        raise BadInput(f"{error}: for PostgreSQL install 'costkit[postgres]'") from None
    except SQLAlchemyError as error:
        raise BadInput(f"ledger database {safe_url(url)}: {first_line(error)}") from None
    except OSError as error:  # the spool directory, the SQLite directory: a path the user can fix
        raise BadInput(f"{error.filename or safe_url(url)}: {error.strerror or error}") from None


def parse_when(text: str | None, option: str) -> datetime | None:
    """``2025-01-31``, ``2025-01-31T12:00:00+02:00`` (naive means UTC), or ``90m``/``24h``/``7d`` ago."""
    if text is None:
        return None
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = relative.groups()
        return datetime.now(timezone.utc) - timedelta(**{_UNITS[unit]: int(amount)})
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        expected = "a date (YYYY-MM-DD[THH:MM[:SS][+HH:MM]]) or an age (7d, 24h, 90m)"
        raise BadInput(f"{option}: {text!r} is not {expected}") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_tags(pairs: tuple[str, ...]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise BadInput(f"--tag {pair!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def _existing_engine(url: Any) -> Any:
    """An engine that reads an existing database and creates nothing; a missing SQLite file is bad input."""
    from costkit.ledger.engine import make_read_engine
    from costkit.ledger.location import sqlite_file

    path = sqlite_file(url)
    if path is not None:
        if not path.exists():
            raise BadInput(f"no ledger database at {path}")
        if not path.is_file():
            raise BadInput(f"{path} is not a ledger database file")
    return make_read_engine(url)


def _default_ledger_not_created_yet(url: Any) -> bool:
    """The embedded default ledger (no ``--db``, no ``$COSTKIT_DB_URL``) that no client created yet."""
    import os

    from costkit.ledger.location import ENV_DB_URL, default_sqlite_path, sqlite_file

    if os.environ.get(ENV_DB_URL):
        return False
    path = sqlite_file(url)
    return path is not None and path == default_sqlite_path() and not path.exists()


def _read_engine(url: Any) -> Any:
    """An engine on an existing ledger (read commands never migrate); None when it has no schema yet."""
    from costkit.ledger import migrate
    from costkit.ledger.errors import LedgerError

    engine = _existing_engine(url)
    state = migrate.schema_state(engine)
    if state.current is None:
        engine.dispose()
        return None
    if not state.up_to_date:
        engine.dispose()
        raise LedgerError(
            f"the ledger is at schema {state.current}, this costkit wants {state.head}: "
            "run `costkit db upgrade`"
        )
    return engine


def _rows(
    url: Any, since: str | None, until: str | None, tag: tuple[str, ...], last: int | None
) -> list[Any]:
    from costkit.ledger.query import read_rows

    start, end, tags = parse_when(since, "--since"), parse_when(until, "--until"), parse_tags(tag)
    if _default_ledger_not_created_yet(url):
        return []  # a fresh machine: nothing recorded yet is no error (a path the user typed is)
    with _database_errors(url):
        engine = _read_engine(url)
        if engine is None:
            return []
        try:
            return read_rows(engine, start, end, tags, last=last)
        finally:
            engine.dispose()


# -- costkit db ------------------------------------------------------------------------------------


@click.group()
@_db_option
@click.pass_context
def db(ctx: click.Context, db_url: str | None) -> None:
    """Migrate the ledger's database schema (Alembic)."""
    ctx.obj = {"db_url": db_url}


@db.command()
@click.argument("revision", default="head")
@_db_option
@click.pass_context
def upgrade(ctx: click.Context, revision: str, db_url: str | None) -> None:
    """Upgrade the ledger schema to REVISION (default: head)."""
    from costkit.ledger import migrate
    from costkit.ledger.engine import make_engine
    from costkit.ledger.location import safe_url

    url = _url_of(ctx, db_url)
    with _database_errors(url), _alembic_errors():
        engine = make_engine(url)
        try:
            migrate.upgrade(engine, revision)
            state = migrate.schema_state(engine)
        finally:
            engine.dispose()
    click.echo(f"{safe_url(url)}: at revision {state.current or 'base'} (head {state.head})")


# ignore_unknown_options: `-1` (one step back) is a revision, not an option.
@db.command(context_settings={"ignore_unknown_options": True})
@click.argument("revision", required=False)
@click.option("--yes", is_flag=True, help="Do not ask: a downgrade can delete ledger data.")
@_db_option
@click.pass_context
def downgrade(ctx: click.Context, revision: str | None, yes: bool, db_url: str | None) -> None:
    """Downgrade the ledger schema to REVISION: required (`-1` one step back; `base` drops the ledger)."""
    from costkit.ledger import migrate
    from costkit.ledger.location import safe_url

    if revision is None:
        raise BadInput(
            "db downgrade needs a REVISION: -1 for one step back, base to drop the ledger and its rows"
        )
    url = _url_of(ctx, db_url)
    if not yes:
        click.confirm(f"Downgrade {safe_url(url)} to {revision}? Dropped tables lose their rows", abort=True)
    with _database_errors(url), _alembic_errors():
        engine = _existing_engine(url)
        try:
            migrate.downgrade(engine, revision)
            state = migrate.schema_state(engine)
        finally:
            engine.dispose()
    click.echo(f"{safe_url(url)}: at revision {state.current or 'base'} (head {state.head})")


@db.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_db_option
@click.pass_context
def current(ctx: click.Context, as_json: bool, db_url: str | None) -> None:
    """Show the ledger database's schema revision and this costkit's head."""
    from costkit.ledger import migrate
    from costkit.ledger.location import safe_url

    url = _url_of(ctx, db_url)
    with _database_errors(url):
        engine = _existing_engine(url)
        try:
            state = migrate.schema_state(engine)
        finally:
            engine.dispose()
    if as_json:
        info = {
            "url": safe_url(url),
            "current": state.current,
            "head": state.head,
            "up_to_date": state.up_to_date,
        }
        click.echo(json.dumps(info))
    else:
        mark = "up to date" if state.up_to_date else "run `costkit db upgrade`"
        click.echo(f"{safe_url(url)}: revision {state.current or 'none'}, head {state.head} ({mark})")


@contextmanager
def _alembic_errors() -> Iterator[None]:
    from alembic.util import CommandError

    try:
        yield
    except CommandError as error:
        raise BadInput(str(error).splitlines()[0]) from None


# -- costkit ledger --------------------------------------------------------------------------------


@click.group()
@_db_option
@click.pass_context
def ledger(ctx: click.Context, db_url: str | None) -> None:
    """Read the spend ledger and replay its spool."""
    ctx.obj = {"db_url": db_url}


_since = click.option(
    "--since", metavar="WHEN", help="Rows started at or after WHEN (date, time, or 7d/24h)."
)
_until = click.option("--until", metavar="WHEN", help="Rows started before WHEN.")
_tag = click.option(
    "--tag", "tag", multiple=True, metavar="KEY=VALUE", help="Only rows with this tag (repeat)."
)


@ledger.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "parquet", "jsonl"]),
    default=None,
    help="Output format (default: from -o's extension, else csv).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write to FILE.")
@_since
@_until
@_tag
@_db_option
@click.pass_context
def export(
    ctx: click.Context,
    fmt: str | None,
    output: Path | None,
    since: str | None,
    until: str | None,
    tag: tuple[str, ...],
    db_url: str | None,
) -> None:
    """Export ledger rows; money as integer cost_nanousd and exact decimal cost_usd."""
    from costkit.ledger.export import WRITERS

    if fmt is None:
        suffix = output.suffix.lstrip(".").lower() if output else ""
        fmt = suffix if suffix in WRITERS else "csv"
    if fmt == "parquet":
        if output is None and sys.stdout.isatty():
            raise BadInput("parquet is binary: give -o FILE or redirect stdout")
        try:
            import pyarrow  # noqa: F401
        except ModuleNotFoundError:
            raise BadInput("parquet export needs pyarrow: pip install 'costkit[parquet]'") from None
    rows = _rows(_url_of(ctx, db_url), since, until, tag, None)
    if output is None:
        WRITERS[fmt](rows, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    try:
        with output.open("wb") as stream:
            WRITERS[fmt](rows, stream)
    except OSError as error:
        raise BadInput(f"-o {output}: {error.strerror or error}") from None


@ledger.command()
@click.option("-n", "count", type=click.IntRange(min=1), default=10, show_default=True, help="How many rows.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@_since
@_tag
@_db_option
@click.pass_context
def tail(
    ctx: click.Context, count: int, as_json: bool, since: str | None, tag: tuple[str, ...], db_url: str | None
) -> None:
    """Show the most recent ledger rows, oldest first (control characters shown escaped)."""
    from costkit.ledger.export import plain, tail_table, terminal_json
    from costkit.ledger.location import safe_url

    url = _url_of(ctx, db_url)
    rows = _rows(url, since, None, tag, count)
    if as_json:
        click.echo(terminal_json([plain(r) for r in rows]))
    elif rows:
        click.echo(tail_table(rows))
    else:
        created = (
            ""
            if not _default_ledger_not_created_yet(url)
            else " (not created yet: a wrapped client creates it)"
        )
        click.echo(f"no rows in the ledger at {safe_url(url)}{created}", err=True)


@ledger.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--spool-dir", type=click.Path(file_okay=False, path_type=Path), help="Spool directory to replay."
)
@_db_option
@click.pass_context
def replay(ctx: click.Context, as_json: bool, spool_dir: Path | None, db_url: str | None) -> None:
    """Insert every row waiting in the spool now; idempotent (running it twice adds nothing)."""
    from costkit.ledger.ledger import replay_spool

    url = _url_of(ctx, db_url)
    with _database_errors(url):
        directory, result = replay_spool(url, spool_dir)
    if as_json:
        click.echo(json.dumps({"spool": str(directory), "rows": result.rows, "rejected": result.rejected}))
    else:
        click.echo(f"replayed {result.rows} spooled row(s) from {directory}; {result.rejected} rejected")


@ledger.command()
@click.option(
    "--prices", metavar="FILE", help="Price TOML added to the built-in prices (default: $COSTKIT_PRICES)."
)
@_since
@_until
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_db_option
@click.pass_context
def reprice(
    ctx: click.Context,
    prices: str | None,
    since: str | None,
    until: str | None,
    as_json: bool,
    db_url: str | None,
) -> None:
    """Price the unpriced rows a price now exists for (by model, start and host); priced rows stay."""
    from costkit.errors import PriceBookError
    from costkit.ledger.reprice import RepriceResult
    from costkit.ledger.reprice import reprice as run
    from costkit.money import format_usd
    from costkit.pricing import price_book_from

    url = _url_of(ctx, db_url)
    start, end = parse_when(since, "--since"), parse_when(until, "--until")
    try:
        book = price_book_from(prices)
    except PriceBookError as error:
        raise BadInput(str(error)) from None
    with _database_errors(url):
        engine = _read_engine(url)
        try:
            result = run(engine, book, start, end) if engine is not None else RepriceResult()
        finally:
            if engine is not None:
                engine.dispose()
    if as_json:
        info = {
            "schema": "costkit.reprice/1",
            "repriced": result.repriced,
            "still_unpriced": result.still_unpriced,
        }
        click.echo(
            json.dumps({**info, "cost_nanousd": result.nanousd, "cost_usd": format_usd(result.nanousd)})
        )
    else:
        click.echo(
            f"repriced {result.repriced} row(s) (${format_usd(result.nanousd)}); "
            f"{result.still_unpriced} still unpriced"
        )
