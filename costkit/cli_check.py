"""``costkit count`` and ``costkit check``: token counts and pre-flight verdicts for request files.

Exit codes of ``check``: 0 when every request fits (and the worst-case total is
within ``--max-usd``), 1 when one does not, 2 on bad input.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from decimal import Decimal, InvalidOperation
from typing import IO, Any

import click

from costkit.cli import BadInput
from costkit.counting.bodyfile import iter_bodies
from costkit.counting.requests import count_request
from costkit.errors import CostkitError
from costkit.money import format_usd, to_usd
from costkit.pricing import PRICES_ENV, PriceBook, price_book_from
from costkit.verdict import DEFAULT_OUTPUT_RESERVE, Preflight, preflight

# JSONL files at least this large show a progress bar on stderr.
PROGRESS_MIN_BYTES = 1 << 20

_files = click.argument("files", nargs=-1, required=True, type=click.Path(allow_dash=True, dir_okay=False))
_json = click.option("--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table.")
_prices = click.option(
    "--prices",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"A TOML price file adding or overriding entries (default: ${PRICES_ENV}).",
)
_context_limit = click.option(
    "--context-limit",
    type=click.IntRange(min=1),
    default=None,
    help="Tokens a request may use in all (default: the model's context window).",
)
_default_max_tokens = click.option(
    "--default-max-tokens",
    type=click.IntRange(min=1),
    default=DEFAULT_OUTPUT_RESERVE,
    show_default=True,
    help="Output reserve of a request that sets neither max_completion_tokens nor max_tokens.",
)


def _open(path: str, stack: ExitStack) -> tuple[IO[bytes], str, int | None]:
    if path == "-":
        return sys.stdin.buffer, "<stdin>", None
    try:
        stream = stack.enter_context(open(path, "rb"))  # noqa: SIM115 - closed by the stack
    except OSError as exc:
        raise BadInput(f"{path}: {exc.strerror or exc}") from None
    return stream, path, os.fstat(stream.fileno()).st_size


def _bodies(paths: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    """Every (where, body) of every file, with a progress bar on stderr for large ones."""
    for path in paths:
        with ExitStack() as stack:
            stream, name, size = _open(path, stack)
            progress = None
            if size is not None and size >= PROGRESS_MIN_BYTES:
                bar = stack.enter_context(
                    click.progressbar(length=size, label=name, file=sys.stderr, show_eta=True)
                )
                progress = bar.update
            try:
                yield from iter_bodies(stream, name, progress)
            except CostkitError as exc:
                raise BadInput(str(exc)) from None


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(headers), *(line(r) for r in rows)]).rstrip()


def _thousands(n: int) -> str:
    return f"{n:,}"


@click.command()
@_files
@_json
def count(files: tuple[str, ...], as_json: bool) -> None:
    """Count the input tokens of request bodies (JSON or JSONL; - for stdin)."""
    results = []
    for where, body in _bodies(files):
        try:
            counted = count_request(body)
        except CostkitError as exc:
            raise BadInput(f"{where}: {exc}") from None
        results.append((where, counted))
    total = sum(c.input_tokens for _, c in results)
    if as_json:
        out = {
            "requests": [
                {
                    "source": where,
                    "model": c.model,
                    "input_tokens": c.input_tokens,
                    "breakdown": c.breakdown,
                    "per_message": list(c.per_message),
                    "images": [
                        {
                            k: getattr(i, k)
                            for k in ("where", "tokens", "detail", "width", "height", "tiles", "patches")
                        }
                        for i in c.images
                    ],
                }
                for where, c in results
            ],
            "total_input_tokens": total,
        }
        click.echo(json.dumps(out, indent=2))
        return
    rows = [
        [where, c.model, _thousands(c.input_tokens), *(_thousands(v) for v in c.breakdown.values())]
        for where, c in results
    ]
    if len(rows) > 1:
        rows.append(["total", "", _thousands(total), "", "", "", ""])
    headers = ["SOURCE", "MODEL", "INPUT", "MESSAGES", "IMAGES", "TOOLS", "PRIMING"]
    click.echo(_table(headers, rows, right={2, 3, 4, 5, 6}))


def _price_book(path: str | None) -> PriceBook:
    try:
        return price_book_from(path)
    except CostkitError as exc:
        raise BadInput(str(exc)) from None


def priced_preflight(
    where: str, body: Any, context_limit: int | None, default_max_tokens: int, book: PriceBook
) -> Preflight:
    """The exact, priced pre-flight verdict of one body; a malformed or unpriced one is ``BadInput``."""
    try:
        verdict = preflight(
            body, context_limit, default_output_reserve=default_max_tokens, exact=True, price_book=book
        )
        verdict.max_cost  # noqa: B018 - priced now so a missing price is bad input, not a crash later
    except CostkitError as exc:
        raise BadInput(f"{where}: {exc}") from None
    return verdict


def amount_option(value: str | None, option: str, unit: str = "USD") -> Decimal | None:
    """An option's non-negative, finite decimal, read exactly (never through a float); else ``BadInput``."""
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise BadInput(f"{option}: not a number: {value!r}") from None
    if not amount.is_finite() or amount < 0:
        raise BadInput(f"{option}: must be a non-negative amount of {unit}, not {value!r}")
    return amount


@click.command()
@_files
@click.option(
    "--max-usd", default=None, metavar="USD", help="Fail unless the worst-case total is at most this."
)
@_context_limit
@_default_max_tokens
@_prices
@_json
def check(
    files: tuple[str, ...],
    max_usd: str | None,
    context_limit: int | None,
    default_max_tokens: int,
    prices: str | None,
    as_json: bool,
) -> int:
    """Pre-flight request bodies: do they fit the context window (and --max-usd)?

    Exits 0 when every request fits, 1 when one does not, 2 on bad input.
    """
    limit_usd = amount_option(max_usd, "--max-usd")
    book = _price_book(prices)
    verdicts = [
        (where, priced_preflight(where, body, context_limit, default_max_tokens, book))
        for where, body in _bodies(files)
    ]

    total_nano = sum(v.max_cost_nanousd for _, v in verdicts)
    all_fit = all(v.fits for _, v in verdicts)
    within_budget = limit_usd is None or to_usd(total_nano) <= limit_usd
    ok = all_fit and within_budget

    if as_json:
        out = {
            "ok": ok,
            "all_fit": all_fit,
            "max_usd": None if limit_usd is None else str(limit_usd),
            "total_max_cost_usd": format_usd(total_nano),
            "total_max_cost_nanousd": total_nano,
            "requests": [
                {
                    "source": where,
                    "model": v.model.id,
                    "input_tokens": v.input_tokens,
                    "output_reserve": v.output_reserve,
                    "context_limit": v.context_limit,
                    "headroom": v.headroom,
                    "fits": v.fits,
                    "reserve_exceeds_max_output": v.reserve_exceeds_max_output,
                    "max_cost_usd": format_usd(v.max_cost_nanousd),
                    "max_cost_nanousd": v.max_cost_nanousd,
                    "price_id": v.max_cost.price_id,
                }
                for where, v in verdicts
            ],
        }
        click.echo(json.dumps(out, indent=2))
    else:
        rows = [
            [
                where,
                v.model.id,
                _thousands(v.input_tokens),
                _thousands(v.output_reserve) + (" (!)" if v.reserve_exceeds_max_output else ""),
                _thousands(v.context_limit),
                _thousands(v.headroom),
                "$" + format_usd(v.max_cost_nanousd),
                "yes" if v.fits else "NO",
            ]
            for where, v in verdicts
        ]
        headers = ["SOURCE", "MODEL", "INPUT", "RESERVE", "LIMIT", "HEADROOM", "MAX COST", "FITS"]
        click.echo(_table(headers, rows, right={2, 3, 4, 5, 6}))
        budget = "" if limit_usd is None else f" (limit ${limit_usd})"
        click.echo(f"worst case total: ${format_usd(total_nano)}{budget}")
        if any(v.reserve_exceeds_max_output for _, v in verdicts):
            click.echo("(!) the output reserve exceeds the model's maximum output of 32,768 tokens")

    for where, v in verdicts:
        if not v.fits:
            click.echo(
                f"costkit: {where}: does not fit: {_thousands(v.input_tokens)} input + "
                f"{_thousands(v.output_reserve)} reserved output > {_thousands(v.context_limit)} "
                f"(over by {_thousands(v.overflow)})",
                err=True,
            )
    if not within_budget:
        click.echo(f"costkit: worst case ${format_usd(total_nano)} exceeds --max-usd {limit_usd}", err=True)
    return 0 if ok else 1
