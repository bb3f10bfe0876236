"""The ``costkit`` command.

Subcommand groups that need heavy imports (SQLAlchemy, pandas, httpx) are
loaded only when invoked, so ``costkit check`` starts about as fast as tiktoken.
Bad input exits 2 with one line on stderr, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute" of a click command, imported on first use.
LAZY_COMMANDS: dict[str, str] = {
    "count": "costkit.cli_check:count",
    "check": "costkit.cli_check:check",
    "guard": "costkit.guard.cli:guard",
    "db": "costkit.ledger.cli:db",
    "ledger": "costkit.ledger.cli:ledger",
    "report": "costkit.reports.cli:report",
    "demo": "costkit.reports.cli:demo",
    "proxy": "costkit.proxy.cli:proxy",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy:
            module_name, attr = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attr)
            if not isinstance(command, click.Command):
                raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="costkit")
def cli() -> None:
    """Count, price, pre-flight and record GPT-4.1 chat-completions calls."""


def fail(message: str) -> None:
    """Exit 2 with one line on stderr: the CLI's answer to bad input."""
    raise BadInput(message)


class BadInput(click.ClickException):
    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"costkit: {self.format_message()}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every failure is one line on stderr, never a traceback."""
    from costkit.errors import CostkitError

    try:
        rv = cli.main(args=argv, prog_name="costkit", standalone_mode=False)
    except click.ClickException as exc:  # usage errors and BadInput: exit 2
        click.echo(f"costkit: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("costkit: aborted", err=True)
        sys.exit(1)
    except CostkitError as exc:  # a library error that escaped a command
        click.echo(f"costkit: {exc}", err=True)
        sys.exit(2)
    except BrokenPipeError:  # `costkit ... | head`: the reader left, which is not our error
        sys.stderr.close()
        sys.exit(0)
    sys.exit(rv if isinstance(rv, int) else 0)
