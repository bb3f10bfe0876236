"""``costkit proxy``: serve the proxy; ``costkit proxy hash-key``: the hash a keys file holds."""

from __future__ import annotations

import sys

import click

from costkit.cli import fail
from costkit.proxy.settings import DEFAULT_GRACE_S, DEFAULT_HOST, DEFAULT_PORT, ProxySettings


@click.group(invoke_without_command=True)
@click.option(
    "--upstream", metavar="URL", help="The provider's base URL, e.g. https://platform.qubrid.com/v1."
)
@click.option("--host", default=DEFAULT_HOST, show_default=True, help="Address to listen on.")
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--db", metavar="URL", help="Ledger URL (default: $COSTKIT_DB_URL, else the local SQLite file)."
)
@click.option("--workers", default=1, show_default=True, type=int, help="Worker processes.")
@click.option("--config", metavar="FILE", help="Budgets file (default: costkit.toml or [tool.costkit] here).")
@click.option(
    "--keys", metavar="FILE", help="Local keys file (TOML); without it callers' keys are forwarded."
)
@click.option(
    "--grace",
    default=DEFAULT_GRACE_S,
    show_default=True,
    type=int,  # whole seconds: uvicorn's graceful-shutdown timeout is an int
    help="Seconds in-flight requests get at shutdown.",
)
@click.pass_context
def proxy(
    ctx: click.Context,
    upstream: str | None,
    host: str,
    port: int,
    db: str | None,
    workers: int,
    config: str | None,
    keys: str | None,
    grace: int,
) -> None:
    """An OpenAI-compatible proxy that accounts every client: point its base URL at http://HOST:PORT/v1."""
    if ctx.invoked_subcommand is not None:
        return
    if upstream is None:
        fail(
            "proxy: --upstream URL is required (the provider's base URL, e.g. https://platform.qubrid.com/v1)"
        )
        return
    settings = _checked(upstream, host, port, db, workers, config, keys, grace)
    from costkit.proxy.server import run

    run(settings)


def _checked(
    upstream: str,
    host: str,
    port: int,
    db: str | None,
    workers: int,
    config: str | None,
    keys: str | None,
    grace: int,
) -> ProxySettings:
    """Everything a worker will need, checked here, so a bad flag or file is one line and exit 2."""
    import os

    from costkit.budgets.config import config_path, load_budgets
    from costkit.errors import CostkitError
    from costkit.ledger.location import resolve_url
    from costkit.proxy.keys import KeyRing

    try:
        found = config_path(config)
        load_budgets(found)
        if keys is not None:
            KeyRing.load(keys)
        if db is not None:
            resolve_url(db)
        settings = ProxySettings(
            upstream=upstream,
            host=host,
            port=port,
            db=db,
            workers=workers,
            config=os.path.abspath(found) if found is not None else None,
            keys=os.path.abspath(keys) if keys is not None else None,
            grace=grace,
        )
        _can_listen(host, port)
        return settings
    except (CostkitError, ValueError, OSError) as error:
        fail(f"proxy: {error}")
        raise  # unreachable: fail raises


def _can_listen(host: str, port: int) -> None:
    """Raise ``OSError`` now, as one line, if the address cannot be listened on (taken, not ours)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            probe.bind(address)
        except OSError as error:
            raise OSError(f"cannot listen on {host}:{port}: {error.strerror}") from None


@proxy.command("hash-key")
def hash_key_command() -> None:
    """Print the sha256 a keys file holds for the key read from stdin (keeps it out of shell history)."""
    from costkit.proxy.keys import hash_key

    key = sys.stdin.readline().strip()
    if not key:
        fail('proxy hash-key: give the key on stdin, e.g. `printf %s "$KEY" | costkit proxy hash-key`')
    click.echo(hash_key(key))
