"""A hard budget through ``costkit proxy --workers 2`` admits exactly the requests it should.

Each request costs exactly its worst case (``tests/budget_helpers.py``), and the budget admits
ten of them: of fifty sent at once, from fifty connections spread over two worker processes,
exactly ten may reach the upstream, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import httpx
import pytest

from tests.budget_helpers import BODY, WORST, admitting, upstream
from tests.ledger_helpers import pg_schema, pg_url
from tests.proxy_helpers import running_proxy

__all__ = ["pg_schema", "upstream"]

SENT, ADMITTED = 50, 10


def _send_all(base_url: str) -> list[int]:
    statuses: list[int] = []
    start = threading.Barrier(SENT)

    def one() -> None:
        with httpx.Client(timeout=60) as client:
            start.wait()
            statuses.append(client.post(f"{base_url}/chat/completions", json=BODY).status_code)

    threads = [threading.Thread(target=one) for _ in range(SENT)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return statuses


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_budget_for_ten_admits_exactly_ten_across_two_workers(upstream, tmp_path: Path, request, backend):
    url = (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if backend == "sqlite"
        else pg_url(request.getfixturevalue("pg_schema"))
    )
    budget = admitting(ADMITTED)
    (tmp_path / "costkit.toml").write_text(
        f'[[budget]]\nname = "{budget.name}"\nusd = "{budget.usd}"\nhard = true\n'
    )
    with running_proxy(upstream.base_url, url, tmp_path, "--workers", "2") as proxy:
        statuses = _send_all(proxy.base_url)
        assert proxy.stop() == 0
    log = proxy.log()
    assert len(set(re.findall(r"pid (\d+) serving", log))) == 2, log
    assert sorted(statuses) == [200] * ADMITTED + [429] * (SENT - ADMITTED)
    assert len(upstream.requests) == ADMITTED
    rows = proxy.rows()
    assert sorted(r["status"] for r in rows) == ["blocked"] * (SENT - ADMITTED) + ["ok"] * ADMITTED
    assert {r["cost_nanousd"] for r in rows if r["status"] == "ok"} == {WORST}
