"""The interceptor's budget hook: reserve a request's worst case before it is sent, let go when it settles.

``Transport(budgets=[...])`` (and ``wrap``) adds one ``BudgetHook`` after the caller's
own hooks. For a request covered by hard budgets (their tags are all on the request),
``before_send`` reserves the pre-flight's worst case (every input token at the input
rate plus the whole output reserve at the output rate) in all of them at once, or
refuses with nothing sent:

* ``BudgetExceeded``: the worst case does not fit what one of them has left;
* ``BudgetUnpriced``: the worst case cannot be priced (an unknown model, no price for
  it, a body that cannot be counted), never waved through at $0;
* ``BudgetUnavailable``: the ledger database cannot be reached (the ledger is spooling,
  or the reservation fails to connect). ``on_unavailable="allow"`` sends such requests
  without a reservation instead, logs one warning per outage and notes it on the row.

The refusal is recorded as a ``blocked`` row by the accounting core. The reservation is
the one place the request path waits for the database on purpose (an asyncio transport
waits for it in a worker thread, never on the event loop); soft budgets make no
reservation and never wait. ``settled`` stops extending the request's lease: the
ledger writer settles the reservation in the transaction that stores its row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from costkit.budgets.budget import Budget
from costkit.budgets.events import BudgetEvent, announce, listen
from costkit.budgets.leases import keeper_for
from costkit.budgets.store import Claim, Refused, budget_store
from costkit.errors import BudgetExceeded, BudgetUnavailable, BudgetUnpriced, ConfigError, CostkitError
from costkit.money import to_usd

if TYPE_CHECKING:
    from costkit.intercept.accounting import Call
    from costkit.ledger.ledger import Ledger
    from costkit.ledger.row import Row

log = logging.getLogger("costkit")

LEASE_ENV = "COSTKIT_BUDGET_LEASE_SECONDS"
DEFAULT_LEASE_S = 120.0
ON_UNAVAILABLE = ("refuse", "allow")


def lease_seconds() -> float:
    """The reservation lease: ``$COSTKIT_BUDGET_LEASE_SECONDS`` or 120 s (read when a transport is built)."""
    raw = os.environ.get(LEASE_ENV)
    if raw is None or not raw.strip():
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0.1 <= value <= 86_400:
        raise ConfigError(f"${LEASE_ENV}: must be a number of seconds from 0.1 to 86400, not {raw!r}")
    return value


class BudgetHook:
    """Reserves before sending under hard budgets; see the module docstring for the contract."""

    waits_for_database = True
    """Asyncio transports run ``before_send`` (the whole pre-flight) in a worker thread for it."""

    def __init__(
        self,
        ledger: Ledger,
        budgets: Sequence[Budget],
        *,
        on_unavailable: str = "refuse",
        on_warning: Callable[[BudgetEvent], Any] | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        self.ledger = ledger
        self.budgets = tuple(budgets)
        self.hard = tuple(b for b in self.budgets if b.hard)
        self.allow_unavailable = on_unavailable == "allow"
        self.lease_s = lease_s
        self.store = budget_store(ledger._store)
        self.keeper = keeper_for(self.store)
        self._outage_logged = False
        if on_warning is not None:
            listen(ledger._store, (b.name for b in self.budgets), on_warning)
        self.keeper.register_later(self.budgets)  # soft budgets count without a request waiting for it

    def before_send(self, call: Call) -> None:
        tags = call.tags
        hard = [b for b in self.hard if b.covers(tags)]
        if not hard:
            return
        verdict = call.verdict
        if verdict is None:
            raise BudgetUnpriced(hard[0].name, call.problem or "the request could not be counted")
        try:
            amount = verdict.max_cost_nanousd
        except CostkitError as error:
            raise BudgetUnpriced(hard[0].name, str(error)) from None
        if self.ledger.database_down:
            self._unavailable(call, hard, "the ledger database is down; rows wait in its spool")
            return
        claims = [Claim(b, b.bounds(call.started_at)[0], amount) for b in hard]
        try:
            announce(self.ledger._store, self.store.ensure_registered(self.budgets))
            self.store.reserve(call.request_id, claims, self.lease_s)
        except Refused as refused:
            budget = refused.claim.budget
            raise BudgetExceeded(
                budget.name,
                budget.limit_usd,
                to_usd(refused.spent_nanousd),
                to_usd(refused.reserved_nanousd),
                to_usd(amount),
            ) from None
        except Exception as error:
            from costkit.ledger.engine import first_line

            self._unavailable(call, hard, first_line(error))
            return
        self._outage_logged = False
        self.keeper.hold(call.request_id, self.lease_s)

    def _unavailable(self, call: Call, hard: Sequence[Budget], reason: str) -> None:
        names = [b.name for b in hard]
        if not self.allow_unavailable:
            raise BudgetUnavailable(names, reason)
        if not self._outage_logged:
            self._outage_logged = True
            log.warning(
                "costkit: budget %s cannot be checked (%s); on_unavailable='allow' sends requests "
                "without a reservation until it can",
                ", ".join(repr(n) for n in names),
                reason,
            )
        call.notes.append(f"budget {', '.join(repr(n) for n in names)} not checked: {reason}")

    def settled(self, call: Call, row: Row) -> None:
        self.keeper.release(call.request_id)


def budget_hook(
    ledger: object,
    budgets: Iterable[Budget] | str | None,
    on_unavailable: str = "refuse",
    on_warning: Callable[[BudgetEvent], Any] | None = None,
) -> BudgetHook | None:
    """The hook for a transport's ``budgets=`` option (None when there are none). Raises at set-up:

    ``ConfigError`` for ``budgets="config"`` without a usable config file, ``TypeError`` for
    budgets that are not ``Budget`` values or a ledger that is not a ``costkit.Ledger``,
    ``ValueError`` for two different budgets of one name or an unknown ``on_unavailable``.
    """
    if on_unavailable not in ON_UNAVAILABLE:
        raise ValueError(f"on_unavailable must be one of {', '.join(ON_UNAVAILABLE)}, not {on_unavailable!r}")
    if on_warning is not None and not callable(on_warning):
        raise TypeError("on_warning must be a callable taking a costkit.budgets.BudgetEvent")
    if budgets is None:
        return None
    if isinstance(budgets, str):
        if budgets != "config":
            raise ValueError(f"budgets must be a list of costkit.Budget or 'config', not {budgets!r}")
        from costkit.budgets.config import config_path, load_budgets

        found = load_budgets()
        if not found:
            where = config_path()
            if where is not None:
                raise ConfigError(f"{where}: no [[budget]] tables")
            raise ConfigError("budgets='config': no costkit.toml, [tool.costkit] or $COSTKIT_CONFIG found")
        budgets = found
    chosen: dict[str, Budget] = {}
    for budget in budgets:
        if not isinstance(budget, Budget):
            raise TypeError(f"budgets must be costkit.Budget values, not {type(budget).__name__}")
        if chosen.get(budget.name, budget) != budget:
            raise ValueError(f"two different budgets are named {budget.name!r}")
        chosen[budget.name] = budget
    if not chosen:
        return None
    from costkit.ledger.ledger import Ledger

    if not isinstance(ledger, Ledger):
        kind = type(ledger).__name__
        raise TypeError(f"budgets need a costkit.Ledger as the ledger (it holds their counters), not {kind}")
    lease = lease_seconds()
    return BudgetHook(
        ledger, list(chosen.values()), on_unavailable=on_unavailable, on_warning=on_warning, lease_s=lease
    )
