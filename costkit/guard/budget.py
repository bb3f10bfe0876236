"""``costkit guard --budget NAME``: the batch's worst case on top of what the budget has already spent.

The budget comes from the config file (``--config``, ``$COSTKIT_CONFIG``, ``costkit.toml``,
``[tool.costkit]``); what it has spent and holds in its current period is read from the ledger
(``--db``, ``$COSTKIT_DB_URL``, else the embedded default) exactly as ``Ledger.budget_status``
reads it, without writing: the guard never migrates or creates a ledger. A default ledger no
client created yet has spent nothing. The check fails when spent + reserved + the batch's worst
case is over the budget's limit, whether the budget is hard or soft: the guard's job is to stop
the job before it starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from costkit.budgets.budget import Budget
from costkit.budgets.config import load_budgets
from costkit.cli import BadInput
from costkit.errors import ConfigError
from costkit.guard.checks import Batch, Check, Finding
from costkit.guard.diff import Diff
from costkit.money import NANO_PER_USD, format_usd, money_context


@dataclass(frozen=True)
class Standing:
    """A budget and what its current period holds already, in nano-USD."""

    budget: Budget
    spent_nanousd: int
    reserved_nanousd: int
    period: str
    """The period's bounds as shown to a reader (``2026-11-01T00:00+01:00 to 2026-12-01T00:00+01:00``)."""


def chosen_budgets(names: Sequence[str], config: str | None) -> list[Budget]:
    """The budgets named, from the config file; ``BadInput`` for a config error or an unknown name."""
    try:
        budgets = {b.name: b for b in load_budgets(config)}
    except ConfigError as error:
        raise BadInput(str(error)) from None
    missing = [n for n in names if n not in budgets]
    if missing:
        known = ", ".join(sorted(budgets)) or "none: no config file with [[budget]] tables was found"
        raise BadInput(f"--budget {missing[0]}: no such budget in the config (budgets: {known})")
    return [budgets[n] for n in dict.fromkeys(names)]


def standings(budgets: Sequence[Budget], db_url: str | None) -> list[Standing]:
    """Where each budget stands now, read from the ledger; ``BadInput`` when it cannot be read."""
    from costkit.budgets.status import budget_status
    from costkit.ledger.cli import _database_errors, _default_ledger_not_created_yet, _read_engine
    from costkit.ledger.errors import LedgerError
    from costkit.ledger.location import resolve_url

    try:
        url = resolve_url(db_url)
    except LedgerError as error:
        raise BadInput(str(error)) from None
    found: list[Standing] = []
    if _default_ledger_not_created_yet(url):
        engine = None
    else:
        with _database_errors(url):
            engine = _read_engine(url)
    try:
        for budget in budgets:
            if engine is None:  # no ledger yet: nothing spent
                start, end = budget.bounds(datetime.now(timezone.utc))
                found.append(Standing(budget, 0, 0, _period(start, end, budget)))
                continue
            with _database_errors(url):
                status = budget_status(engine, budget)
            with money_context():  # exact: each is a whole number of nano-USD
                spent, reserved = (
                    int(status.spent_usd * NANO_PER_USD),
                    int(status.reserved_usd * NANO_PER_USD),
                )
            found.append(
                Standing(
                    budget,
                    spent,
                    reserved,
                    _period(status.period_start, status.period_end, budget),
                )
            )
    finally:
        if engine is not None:
            engine.dispose()
    return found


def _period(start: datetime, end: datetime | None, budget: Budget) -> str:
    def shown(moment: datetime) -> str:
        return moment.astimezone(budget.zone).isoformat(timespec="minutes")

    return f"since {shown(start)}" if end is None else f"{shown(start)} to {shown(end)}"


def budget_check(found: Sequence[Standing]) -> Check:
    """The extra check ``run_guard`` runs: one failing finding per budget the batch would break."""

    def check(batch: Batch, diff: Diff | None) -> Iterable[Finding]:
        worst = batch.totals.max_cost_nanousd
        for standing in found:
            budget = standing.budget
            held = standing.spent_nanousd + standing.reserved_nanousd
            if held + worst > budget.limit_nanousd:
                yield Finding(
                    "fail",
                    "budget",
                    f"budget {budget.name}: ${format_usd(standing.spent_nanousd)} spent"
                    f" + ${format_usd(standing.reserved_nanousd)} reserved"
                    f" + ${format_usd(worst)} worst case of this batch"
                    f" = ${format_usd(held + worst)}, over its ${format_usd(budget.limit_nanousd)}"
                    f" ({budget.period}, {standing.period})",
                )

    return check
