"""``costkit guard``: fail a CI job before it sends requests that do not fit, cost too much, or cost
too much more than before.

Exit codes: 0 pass (warnings included), 1 a limit was crossed, 2 bad input or configuration (one line on
stderr, never a traceback). Checks beyond the built-in limits enter ``run_guard`` as ``extra``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import click

from costkit.cli import BadInput
from costkit.cli_check import (
    _context_limit,
    _default_max_tokens,
    _json,
    _price_book,
    _prices,
    amount_option,
)
from costkit.errors import CostkitError
from costkit.guard.budget import Standing, budget_check, chosen_budgets, standings
from costkit.guard.checks import Batch, Check, Limits, evaluate
from costkit.guard.diff import Diff, compare
from costkit.guard.measure import Options, measure_contents, measure_files
from costkit.guard.render import finding_lines, markdown, text
from costkit.guard.report import BaselineError, GuardResult, read_baseline, to_json
from costkit.guard.sources import STDIN, GitTree, expand

STEP_SUMMARY_ENV = "GITHUB_STEP_SUMMARY"


def _amount(unit: str) -> Callable[[click.Context, click.Parameter, str | None], Decimal | None]:
    """An option callback reading a non-negative, finite decimal exactly, as ``check --max-usd`` does."""

    def convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Decimal | None:
        return amount_option(value, param.opts[0], unit)

    return convert


USD = _amount("USD")
PERCENT = _amount("percent")


@dataclass(frozen=True)
class Settings:
    files: tuple[str, ...]
    options: Options
    limits: Limits
    baseline: str | None = None
    base_ref: str | None = None
    budgets: tuple[Standing, ...] = ()


def _baseline_diff(path: str, head: Batch) -> Diff:
    try:
        with open(path, encoding="utf-8") as f:
            content = f.read()
    except OSError as exc:
        raise BadInput(f"--baseline {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BadInput(f"--baseline {path}: not UTF-8 text") from None
    try:
        base = read_baseline(content)
    except BaselineError as exc:
        raise BadInput(f"--baseline {path}: {exc}") from None
    return compare(f"baseline {path}", base, head.requests)


def budget_checks(found: Sequence[Standing]) -> list[Check]:
    return [budget_check(found)] if found else []


def run_guard(settings: Settings, extra: Sequence[Check] = ()) -> GuardResult:
    """Measure the files, compare them with the baseline or base ref, and check every limit.

    Raises ``BadInput`` for anything that cannot be read or measured."""
    if settings.baseline is not None and settings.base_ref is not None:
        raise BadInput("give --baseline or --base-ref, not both")
    if settings.limits.need_diff and settings.baseline is None and settings.base_ref is None:
        raise BadInput(f"{settings.limits.need_diff[0]} compares with --baseline FILE or --base-ref REF")
    try:
        tree = None if settings.base_ref is None else GitTree.open(settings.base_ref)
        files = expand(settings.files, tree)
    except CostkitError as exc:
        raise BadInput(str(exc)) from None
    in_tree = [f for f in files if f == STDIN or os.path.isfile(f)]
    batch = Batch(tuple(measure_files(in_tree, settings.options)))
    diff = None
    if settings.baseline is not None:
        diff = _baseline_diff(settings.baseline, batch)
    elif tree is not None:
        try:
            contents = tree.read([f for f in files if f != STDIN])
        except CostkitError as exc:
            raise BadInput(str(exc)) from None
        base = measure_contents(contents, tree.ref, settings.options)
        diff = compare(f"git {tree.ref}", base, batch.requests)
    return GuardResult(
        batch=batch,
        diff=diff,
        limits=settings.limits,
        context_limit=settings.options.context_limit,
        default_max_tokens=settings.options.default_max_tokens,
        findings=tuple(evaluate(batch, diff, settings.limits, [*extra, *budget_checks(settings.budgets)])),
        budgets=settings.budgets,
    )


def _write(path: str, content: str, mode: str, what: str) -> None:
    try:
        with open(path, mode, encoding="utf-8") as f:
            f.write(content)
    except OSError as exc:
        raise BadInput(f"{what} {path}: {exc.strerror or exc}") from None


@click.command()
@click.argument("files", nargs=-1, required=True)
@click.option(
    "--max-usd",
    callback=USD,
    metavar="USD",
    default=None,
    help="Fail when the batch's worst case is over this.",
)
@click.option(
    "--max-usd-per-request",
    callback=USD,
    metavar="USD",
    default=None,
    help="Fail when a request's worst case is over this.",
)
@click.option(
    "--baseline",
    type=click.Path(dir_okay=False),
    default=None,
    help="Compare with an earlier `costkit guard --json` output.",
)
@click.option("--base-ref", default=None, metavar="REF", help="Compare with the same files at this git ref.")
@click.option(
    "--max-increase-pct",
    callback=PERCENT,
    metavar="PCT",
    default=None,
    help="Fail when the worst case grew more than this %.",
)
@click.option(
    "--max-increase-usd",
    callback=USD,
    metavar="USD",
    default=None,
    help="Fail when the worst case grew more than this.",
)
@click.option(
    "--warn-increase-pct",
    callback=PERCENT,
    metavar="PCT",
    default=None,
    help="Warn (exit 0) when it grew more than this %.",
)
@click.option(
    "--budget",
    "budget_names",
    multiple=True,
    metavar="NAME",
    help="Fail when this config budget's spend so far plus the batch's worst case is over its limit.",
)
@click.option(
    "--config",
    type=click.Path(dir_okay=False),
    default=None,
    help="The config file with [[budget]] tables (default: $COSTKIT_CONFIG, costkit.toml, pyproject.toml).",
)
@click.option(
    "--db",
    "db_url",
    metavar="URL",
    default=None,
    help="The ledger --budget reads spend from (default: $COSTKIT_DB_URL, else the user data dir).",
)
@_context_limit
@_default_max_tokens
@_prices
@_json
@click.option(
    "--markdown",
    "markdown_path",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Write a Markdown report (a PR comment) here; it is also appended to ${STEP_SUMMARY_ENV} if set.",
)
def guard(
    files: tuple[str, ...],
    max_usd: Decimal | None,
    max_usd_per_request: Decimal | None,
    baseline: str | None,
    base_ref: str | None,
    max_increase_pct: Decimal | None,
    max_increase_usd: Decimal | None,
    warn_increase_pct: Decimal | None,
    budget_names: tuple[str, ...],
    config: str | None,
    db_url: str | None,
    context_limit: int | None,
    default_max_tokens: int,
    prices: str | None,
    as_json: bool,
    markdown_path: str | None,
) -> int:
    """Pre-submit check of request files for CI (JSON, JSON arrays, JSONL; quoted globs like
    'evals/**/*.jsonl' are expanded by costkit).

    Every request must fit its context window and stay within --max-usd-per-request, the batch within
    --max-usd. With --baseline or --base-ref the change per request and in total is shown, and
    --max-increase-pct / --max-increase-usd fail on growth, --warn-increase-pct warns.

    Exits 0 on pass (or only warnings), 1 when a limit is crossed, 2 on bad input.
    """
    settings = Settings(
        files=files,
        options=Options(context_limit, default_max_tokens, _price_book(prices)),
        limits=Limits(max_usd, max_usd_per_request, max_increase_pct, max_increase_usd, warn_increase_pct),
        baseline=baseline,
        base_ref=base_ref,
        budgets=tuple(standings(chosen_budgets(budget_names, config), db_url)) if budget_names else (),
    )
    result = run_guard(settings)
    summary_path = os.environ.get(STEP_SUMMARY_ENV)
    if markdown_path is not None or summary_path:
        report = markdown(result)
        if markdown_path is not None:
            _write(markdown_path, report, "w", "--markdown")
        if summary_path:
            _write(summary_path, report + "\n", "a", f"${STEP_SUMMARY_ENV}")
    click.echo(json.dumps(to_json(result), indent=2) if as_json else text(result))
    for line in finding_lines(result.findings):
        click.echo(line, err=True)
    return 1 if result.status == "fail" else 0
