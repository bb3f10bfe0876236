"""``Transport(budgets=...)`` through the ``openai`` SDK: what is refused, what is recorded, who is warned.

Every refusal happens before a byte is sent (the fake upstream counts what arrived)
and leaves a ``blocked`` row. Soft budgets never refuse; warnings are logged, recorded
and handed to ``on_warning`` once per budget, threshold and period.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import httpx
import openai
import pytest

import costkit
from costkit.budgets.events import BudgetEvent
from tests.budget_helpers import (
    BODY,
    WORST,
    admitting,
    counter,
    reservations,
    store_of,
    upstream,
    usd,
    wait_registered,
)
from tests.fakeupstream import FakeUpstream
from tests.ledger_helpers import db_url, pg_schema, spooled_ids, sqlite_url

__all__ = ["db_url", "pg_schema", "sqlite_url", "upstream"]


def client_for(upstream, ledger: costkit.Ledger, **options: object) -> openai.OpenAI:
    return costkit.wrap(
        openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0), ledger=ledger, **options
    )


def test_a_request_over_a_hard_budget_is_refused_unsent_and_recorded_blocked(db_url: str, upstream) -> None:
    budget = admitting(1)
    with costkit.Ledger(db_url) as ledger:
        client = client_for(upstream, ledger, budgets=[budget])
        reply = client.chat.completions.create(**BODY)
        assert reply.choices[0].finish_reason == "length"
        assert ledger.flush(10)
        with pytest.raises(costkit.BudgetExceeded) as refused:
            client.chat.completions.create(**BODY)
        error = refused.value
        assert isinstance(error, costkit.RequestRefused)
        assert (error.budget, error.limit_usd, error.spent_usd, error.reserved_usd, error.request_usd) == (
            "cap",
            usd(WORST + WORST // 2),
            usd(WORST),
            Decimal(0),
            usd(WORST),
        )
        assert str(error) == (
            f"budget 'cap' would be exceeded: ${usd(WORST)} spent and $0 reserved of its "
            f"${usd(WORST + WORST // 2)} leave ${usd(WORST // 2)}, less than this request's worst case "
            f"of ${usd(WORST)}; nothing was sent"
        )
        assert len(upstream.requests) == 1
        assert ledger.flush(10)
        ok, blocked = sorted(ledger.rows(), key=lambda r: r["status"] != "ok")
        assert (ok["status"], ok["cost_nanousd"]) == ("ok", WORST)
        assert (blocked["status"], blocked["cost_nanousd"], blocked["http_status"]) == ("blocked", 0, None)
        assert blocked["error"] == str(error)
        assert counter(db_url, "cap") == (WORST, 0) and reservations(db_url) == []


def test_an_unpriced_request_under_a_hard_budget_is_refused_not_waved_through(
    sqlite_url: str, upstream
) -> None:
    with costkit.Ledger(sqlite_url) as ledger:
        client = client_for(upstream, ledger, budgets=[admitting(100)])
        with pytest.raises(costkit.BudgetUnpriced, match="unknown model 'gpt-9'"):
            client.chat.completions.create(**{**BODY, "model": "gpt-9"})
        with pytest.raises(costkit.BudgetUnpriced, match="max_tokens: must be a positive integer"):
            client.chat.completions.create(**{**BODY, "max_tokens": 0})
        assert upstream.requests == []
        # A body that is not JSON cannot be billed: it goes out as it is (the provider refuses it).
        raw = costkit.wrap(httpx.Client(), ledger=ledger, budgets=[admitting(100)])
        assert raw.post(f"{upstream.base_url}/chat/completions", content=b"{not json").status_code == 400
        assert ledger.flush(10)  # (the ledger creates its tables on its own thread: read them after)
        assert reservations(sqlite_url) == []
        assert sorted((r["status"], r["cost_nanousd"]) for r in ledger.rows()) == [
            ("blocked", 0),
            ("blocked", 0),
            ("error", 0),
        ]


def test_only_requests_carrying_a_budgets_tags_count_or_are_refused(sqlite_url: str, upstream) -> None:
    search = admitting(1, "search", tags={"team": "search"})
    with costkit.Ledger(sqlite_url) as ledger:
        client = client_for(upstream, ledger, budgets=[search])
        with costkit.tags(team="search", user="ana"):
            client.chat.completions.create(**BODY)
            with pytest.raises(costkit.BudgetExceeded):
                client.chat.completions.create(**BODY)
        with costkit.tags(team="ads"):
            client.chat.completions.create(**BODY)
        client.chat.completions.create(**BODY)
        assert len(upstream.requests) == 3
        assert ledger.flush(10)
        assert counter(sqlite_url, "search") == (WORST, 0)


def test_several_hard_budgets_reserve_all_or_none(db_url: str, upstream) -> None:
    search = admitting(1, "search", tags={"team": "search"})
    everything = admitting(5, "everything")
    with costkit.Ledger(db_url) as ledger:
        client = client_for(upstream, ledger, budgets=[search, everything])
        with costkit.tags(team="search"):
            client.chat.completions.create(**BODY)
            assert ledger.flush(10)
            with pytest.raises(costkit.BudgetExceeded) as refused:
                client.chat.completions.create(**BODY)
        assert refused.value.budget == "search"
        assert counter(db_url, "everything") == (WORST, 0)  # nothing left held by the refused request
        client.chat.completions.create(**BODY)  # not the search team's: only "everything" applies
        assert ledger.flush(10)
        assert counter(db_url, "everything") == (2 * WORST, 0)
        assert counter(db_url, "search") == (WORST, 0)


def test_a_soft_budget_never_refuses_and_warns_once_per_threshold(
    sqlite_url: str, upstream, caplog: pytest.LogCaptureFixture
) -> None:
    soft = costkit.Budget("soft", usd(3 * WORST // 2), hard=False, warn_at=(0.5, 1.0))
    heard: list[BudgetEvent] = []
    with costkit.Ledger(sqlite_url) as ledger:
        client = client_for(upstream, ledger, budgets=[soft], on_warning=heard.append)
        # registration runs in the background; once it is in, each row's spend is counted as it lands
        wait_registered(sqlite_url, "soft")
        for _ in range(3):
            client.chat.completions.create(**BODY)
            assert ledger.flush(10)
            assert reservations(sqlite_url) == []  # a soft budget holds nothing
        assert len(upstream.requests) == 3
        assert [(e.budget, e.threshold, e.spent_usd) for e in heard] == [
            ("soft", Decimal("0.5"), usd(WORST)),
            ("soft", Decimal("1"), usd(2 * WORST)),
        ]
        assert ledger.budget_events() == heard
        status = ledger.budget_status(soft)
        assert status.spent_usd == usd(3 * WORST) and status.remaining_usd == usd(3 * WORST // 2 - 3 * WORST)
    warned = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "reached" in r.getMessage()
    ]
    assert len(warned) == 2 and "budget 'soft' reached 100%" in warned[1]


def test_an_on_warning_callback_that_raises_is_logged_not_passed_on(
    sqlite_url: str, upstream, caplog
) -> None:
    def broken(event: BudgetEvent) -> None:
        raise RuntimeError("the pager is down")

    with costkit.Ledger(sqlite_url) as ledger:
        client = client_for(upstream, ledger, budgets=[admitting(3, warn_at=(0.1,))], on_warning=broken)
        client.chat.completions.create(**BODY)
        assert ledger.flush(10)
        client.chat.completions.create(**BODY)
        assert ledger.flush(10)
        assert len(ledger.budget_events()) == 1 and len(ledger.rows()) == 2
    assert any("on_warning callback failed" in r.getMessage() for r in caplog.records)


DOWN = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"


def test_a_hard_budget_fails_closed_when_its_database_is_unavailable(upstream, tmp_path: Path) -> None:
    with costkit.Ledger(DOWN, spool_dir=tmp_path / "spool") as ledger:
        client = client_for(upstream, ledger, budgets=[admitting(100)])
        for _ in range(2):
            with pytest.raises(
                costkit.BudgetUnavailable, match=r"budget 'cap' cannot be checked \("
            ) as refused:
                client.chat.completions.create(**BODY)
            assert isinstance(refused.value, costkit.RequestRefused) and refused.value.budgets == ("cap",)
        assert upstream.requests == []
        ledger.flush(5)
        assert len(spooled_ids(tmp_path / "spool")) == 2  # the blocked rows wait for the database


def test_budget_work_for_a_closed_ledger_stops_without_another_word(
    upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A budget that could not register while the database was down is not retried after close."""
    import time

    from costkit.budgets.leases import keeper_for

    ledger = costkit.Ledger(DOWN, spool_dir=tmp_path / "spool")
    client_for(upstream, ledger, budgets=[admitting(100)])  # registration is left to the lease thread
    keeper = keeper_for(store_of(ledger))._thread
    assert keeper is not None, "registering a budget against a down database starts the lease thread"

    def warned() -> bool:
        return any("could not register a budget yet" in r.getMessage() for r in caplog.records)

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not warned():
        time.sleep(0.05)
    assert warned()
    ledger.close(5)
    caplog.clear()
    keeper.join(35)  # its longest wait between attempts is 30 s; the back-off reaches only 2 s here
    assert not keeper.is_alive()
    assert [r.getMessage() for r in caplog.records if r.name.startswith("costkit")] == []


def test_on_unavailable_allow_sends_with_one_warning_and_a_note(
    upstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with costkit.Ledger(DOWN, spool_dir=tmp_path / "spool") as ledger:
        client = client_for(upstream, ledger, budgets=[admitting(1)], on_unavailable="allow")
        for _ in range(3):
            client.chat.completions.create(**BODY)
        assert len(upstream.requests) == 3
        ledger.flush(5)
    warned = [r.getMessage() for r in caplog.records if "on_unavailable='allow'" in r.getMessage()]
    assert len(warned) == 1 and "budget 'cap' cannot be checked" in warned[0]
    import json

    lines = [
        json.loads(line)
        for path in (tmp_path / "spool").glob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(lines) == 3 and all("budget 'cap' not checked" in (line["notes"] or "") for line in lines)
    assert all(line["status"] == "ok" for line in lines)


def test_budgets_config_loads_the_working_directorys_costkit_toml(
    sqlite_url: str, upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSTKIT_CONFIG", raising=False)
    with costkit.Ledger(sqlite_url) as ledger:
        with pytest.raises(costkit.ConfigError, match=r"no costkit\.toml"):
            client_for(upstream, ledger, budgets="config")
        (tmp_path / "costkit.toml").write_text(
            f'[[budget]]\nname = "cfg"\nusd = "{usd(WORST + WORST // 2)}"\n'
        )
        client = client_for(upstream, ledger, budgets="config")
        client.chat.completions.create(**BODY)
        with pytest.raises(costkit.BudgetExceeded, match="budget 'cfg'"):
            client.chat.completions.create(**BODY)


def test_budget_options_are_checked_when_the_transport_is_built(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with costkit.Ledger(sqlite_url) as ledger:
        with pytest.raises(TypeError, match=r"costkit\.Budget values, not dict"):
            costkit.Transport(ledger=ledger, budgets=[{"name": "x", "usd": "1"}])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="on_unavailable must be one of refuse, allow"):
            costkit.Transport(ledger=ledger, budgets=[admitting(1)], on_unavailable="maybe")
        with pytest.raises(ValueError, match="two different budgets are named 'cap'"):
            costkit.Transport(ledger=ledger, budgets=[admitting(1), admitting(2)])
        monkeypatch.setenv("COSTKIT_BUDGET_LEASE_SECONDS", "soon")
        with pytest.raises(costkit.ConfigError, match=r"\$COSTKIT_BUDGET_LEASE_SECONDS: must be a number"):
            costkit.Transport(ledger=ledger, budgets=[admitting(1)])

    class Recorder:
        def record(self, row: costkit.Row) -> None: ...

    with pytest.raises(TypeError, match=r"budgets need a costkit\.Ledger"):
        costkit.Transport(ledger=Recorder(), budgets=[admitting(1)])
    costkit.Transport(ledger=Recorder(), budgets=[])  # no budgets: any recorder will do


def test_a_client_with_mounts_calls_on_warning_once_an_event(sqlite_url: str, upstream) -> None:
    heard: list[BudgetEvent] = []
    mounted = httpx.Client(mounts={"http://127.0.0.1": httpx.HTTPTransport()})
    with costkit.Ledger(sqlite_url) as ledger:
        client = costkit.wrap(
            mounted, ledger=ledger, budgets=[admitting(2, warn_at=(0.1,))], on_warning=heard.append
        )
        assert client.post(f"{upstream.base_url}/chat/completions", json=BODY).status_code == 200
        assert ledger.flush(10)
    assert [e.threshold for e in heard] == [Decimal("0.1")]  # one transport per mount, one callback call


def test_spend_is_what_the_provider_billed_even_past_the_worst_case(sqlite_url: str) -> None:
    """The provider's usage is the truth: one that bills more than costkit could foresee (framing
    tokens, hidden reasoning) takes spend past the limit by the difference; then nothing more fits."""
    budget = admitting(2)
    with FakeUpstream(default_scenario="json") as disagreeing, costkit.Ledger(sqlite_url) as ledger:
        client = client_for(disagreeing, ledger, budgets=[budget])
        client.chat.completions.create(**BODY)
        assert ledger.flush(10)
        (usage,) = [r.usage for r in disagreeing.requests]
        billed = (usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]) * 2000 + (
            usage["prompt_tokens_details"]["cached_tokens"] * 500 + usage["completion_tokens"] * 8000
        )
        assert billed > budget.limit_nanousd > WORST  # one request past a limit made for two
        assert counter(sqlite_url, "cap") == (billed, 0)
        assert ledger.budget_status(budget).spent_usd == usd(billed) > budget.usd
        with pytest.raises(costkit.BudgetExceeded) as refused:
            client.chat.completions.create(**BODY)
        assert refused.value.spent_usd == usd(billed)
        assert len(disagreeing.requests) == 1
