"""Real parts for the budget tests: one request body whose worst case is exactly what it costs.

``BODY`` asks for at most ``MAX_TOKENS`` output tokens; the fake upstream's answer is
longer, so it stops at the limit (``finish_reason: length``), and with ``disagree=False`` it
reports the prompt as tiktoken counts it. The request therefore costs exactly its pre-flight worst case
(``WORST`` nano-USD), so a budget of ``N × WORST`` plus half of one admits exactly ``N``
requests however they interleave: settling frees nothing another request could use.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from costkit.budgets.budget import Budget
from costkit.budgets.sql import TIME, sql
from costkit.budgets.store import BudgetStore, budget_store
from costkit.ledger import Ledger
from costkit.money import to_usd
from costkit.verdict import preflight
from tests.fakeupstream import FakeUpstream

REPO = Path(__file__).resolve().parents[1]
MAX_TOKENS = 16
BODY: dict[str, Any] = {
    "model": "gpt-4.1",
    "messages": [{"role": "user", "content": "Say hello to the budget tests."}],
    "max_tokens": MAX_TOKENS,
    "stream": False,
}
WORST = preflight(BODY).max_cost_nanousd
INPUT_TOKENS = preflight(BODY, exact=True).input_tokens
assert WORST == INPUT_TOKENS * 2000 + MAX_TOKENS * 8000


def usd(nanousd: int) -> Decimal:
    return to_usd(nanousd)


def admitting(n: int, name: str = "cap", **options: Any) -> Budget:
    """A hard budget that admits exactly ``n`` worst-case requests (and half of one more)."""
    return Budget(name, usd(n * WORST + WORST // 2), **options)


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    """A provider whose usage agrees with costkit's count, so a request costs its worst case exactly."""
    with FakeUpstream(default_scenario="json", disagree=False) as server:
        yield server


def store_of(ledger: Ledger) -> BudgetStore:
    return budget_store(ledger._store)


def register(ledger: Ledger, *budgets: Budget) -> None:
    """Register budgets in the ledger as a transport does before its first reservation."""
    store_of(ledger).ensure_registered(list(budgets))


def counters(url: str, budget: str) -> dict[datetime, tuple[int, int]]:
    """Every counter of a budget: period start (UTC) -> ``(spent, reserved)`` nano-USD."""
    statement = sql(
        "SELECT period_start, spent_nanousd, reserved_nanousd FROM costkit_budget_periods WHERE budget = :b",
        columns={"period_start": TIME},
    )
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {r[0]: (int(r[1]), int(r[2])) for r in connection.execute(statement, {"b": budget})}
    finally:
        engine.dispose()


def counter(url: str, budget: str) -> tuple[int, int]:
    """``(spent, reserved)`` nano-USD of a budget's one counter."""
    found = counters(url, budget)
    assert len(found) == 1, found
    return next(iter(found.values()))


def wait_registered(url: str, budget: str, timeout: float = 10.0) -> None:
    """Wait until a budget's registration (done on a background thread) is in the database."""
    engine = create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as connection:
                try:
                    found = connection.execute(
                        text("SELECT 1 FROM costkit_budgets WHERE name = :b"), {"b": budget}
                    ).first()
                except DBAPIError:  # the ledger creates its tables on its own thread, too
                    found = None
            if found is not None:
                return
            assert time.monotonic() < deadline, f"budget {budget!r} was not registered in {timeout} s"
            time.sleep(0.02)
    finally:
        engine.dispose()


def reservations(url: str) -> list[tuple[str, str, int]]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return [
                (r[0], r[1], int(r[2]))
                for r in connection.execute(
                    text("SELECT request_id, budget, amount_nanousd FROM costkit_budget_reservations")
                )
            ]
    finally:
        engine.dispose()


def child_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process: its own data directory, this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTKIT_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(REPO), **extra)
    return env


def start_python(code: str, tmp_path: Path, *args: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(tmp_path, **env),
        cwd=REPO,
    )
