"""``costkit ledger reprice``: unpriced rows get priced once a price exists; priced rows never change.

Runs the installed command against a real SQLite file and a real PostgreSQL schema.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from costkit.ledger import Ledger
from tests.ledger_helpers import child_env, db_url, make_row, pg_schema, run_costkit  # noqa: F401

JAN = datetime(2026, 1, 10, 12, 0, tzinfo=timezone.utc)
PRICES = """
[[price]]
id = "gpt-5-2026"
model = "openai/gpt-5"
effective_from = 2026-01-01
input = "1.25"
cached_input = "0.125"
output = "10"

[[price]]
id = "qubrid-gpt-5-2026"
model = "openai/gpt-5"
host = "platform.qubrid.com"
effective_from = 2026-01-01
input = "2.50"
cached_input = "0.25"
output = "20"
"""


def unpriced(request_id: str, **fields) -> object:
    values = {
        "request_id": request_id,
        "model": "openai/gpt-5",
        "started_at": JAN,
        "endpoint_host": "api.example.com",
        "input_tokens": 1000,
        "cached_input_tokens": 200,
        "output_tokens": 100,
        "cost_nanousd": 0,
        "price_id": None,
        "notes": "unpriced: unknown price for 'openai/gpt-5'",
    }
    values.update(fields)
    return make_row(**values)


def seed(url: str) -> None:
    with Ledger(url) as ledger:
        for row in (
            unpriced("a-plain"),
            unpriced("b-qubrid", endpoint_host="platform.qubrid.com"),
            unpriced("c-partial", status="partial", usage_source="estimated", estimated_input_tokens=1000),
            unpriced("d-error", status="error", http_status=500),
            unpriced("e-blocked", status="blocked"),
            unpriced("f-unknown-input", usage_source="estimated", estimated_input_tokens=None),
            unpriced("g-too-early", started_at=datetime(2025, 12, 31, 23, 59, tzinfo=timezone.utc)),
            unpriced("h-other-model", model="gpt-6"),
            unpriced("i-late", started_at=JAN + timedelta(days=40)),
            make_row(request_id="j-priced", model="gpt-4.1", started_at=JAN),  # $0.003532, must stay
            make_row(
                request_id="k-priced-gpt5",
                model="openai/gpt-5",
                started_at=JAN,
                price_id="manual",
                cost_nanousd=7,
            ),
        ):
            ledger.record(row)
        assert ledger.flush(timeout=30)


def by_id(url: str) -> dict[str, dict]:
    with Ledger(url) as ledger:
        return {row["request_id"]: row for row in ledger.rows()}


def reprice(url: str, prices: Path, *args: str):
    return run_costkit("ledger", "reprice", "--db", url, "--prices", str(prices), *args)


def test_reprice_prices_what_it_now_can_and_nothing_else(db_url, tmp_path):
    seed(db_url)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    before = by_id(db_url)
    result = reprice(db_url, prices, "--since", "2026-01-01", "--until", "2026-02-01", "--json")
    assert result.returncode == 0, result.stderr
    plain = 800 * 1250 + 200 * 125 + 100 * 10_000  # nano-USD at $1.25 / $0.125 / $10 per 1M
    qubrid = 800 * 2500 + 200 * 250 + 100 * 20_000
    assert json.loads(result.stdout) == {
        "schema": "costkit.reprice/1",
        "repriced": 3,
        "still_unpriced": 2,  # f (input never known), h (no price); g and i are outside the window
        "cost_nanousd": 2 * plain + qubrid,
        "cost_usd": "0.0081",
    }
    after = by_id(db_url)
    assert (after["a-plain"]["cost_nanousd"], after["a-plain"]["price_id"]) == (plain, "gpt-5-2026")
    assert (after["b-qubrid"]["cost_nanousd"], after["b-qubrid"]["price_id"]) == (qubrid, "qubrid-gpt-5-2026")
    assert (after["c-partial"]["cost_nanousd"], after["c-partial"]["price_id"]) == (plain, "gpt-5-2026")
    assert after["a-plain"]["notes"].startswith("unpriced: unknown price for 'openai/gpt-5'; repriced ")
    for untouched in ("d-error", "e-blocked", "f-unknown-input", "g-too-early", "h-other-model", "i-late"):
        assert after[untouched] == before[untouched], untouched
    assert after["j-priced"] == before["j-priced"] and after["j-priced"]["cost_nanousd"] == 3_532_000
    assert after["k-priced-gpt5"] == before["k-priced-gpt5"]

    again = reprice(db_url, prices, "--json")  # idempotent; without bounds it also finds i-late
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["repriced"] == 1
    assert by_id(db_url)["a-plain"] == after["a-plain"]
    third = reprice(db_url, prices)  # f, h, and g (no price yet on its day)
    assert third.returncode == 0 and third.stdout.strip() == "repriced 0 row(s) ($0.00); 3 still unpriced"


def test_reprice_works_in_batches(tmp_path):
    from costkit.ledger.engine import make_engine
    from costkit.ledger.location import resolve_url
    from costkit.ledger.reprice import reprice as run
    from costkit.pricing import PriceBook

    url = f"sqlite:///{tmp_path / 'batches.sqlite'}"
    with Ledger(url) as ledger:
        for i in range(25):
            ledger.record(unpriced(f"r{i:02d}"))
        assert ledger.flush(timeout=30)
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    engine = make_engine(resolve_url(url))
    try:
        result = run(engine, PriceBook.builtin().with_file(prices), batch_size=4)
    finally:
        engine.dispose()
    assert (result.repriced, result.still_unpriced) == (25, 0)
    assert {row["price_id"] for row in by_id(url).values()} == {"gpt-5-2026"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--since", "yesterday"), "--since: 'yesterday' is not"),
        (("--prices", "/nonexistent/prices.toml"), "cannot read price file"),
        (("--db", "mysql://x@y/z"), "unsupported database"),
    ],
)
def test_reprice_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    seed(url)
    result = run_costkit("ledger", "reprice", "--db", url, *args, env=child_env(XDG_DATA_HOME=str(tmp_path)))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr
    assert "Traceback" not in result.stderr
