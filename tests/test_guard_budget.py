"""``costkit guard --budget NAME``: the batch's worst case on top of the budget's spend so far, read from a
real ledger (SQLite and PostgreSQL), with the budget from a real config file."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import costkit
from tests.guard_helpers import body, guard, guard_json, one_line_error, worst_nanousd, write_jsonl
from tests.ledger_helpers import db_url, make_row, pg_schema

__all__ = ["db_url", "pg_schema"]

BODIES = [
    body("Grade this answer: Paris is the capital of France.", max_tokens=300),
    body("Hi", max_tokens=50),
]
SPENT = 3_532_000 + 1_000_000  # two rows of the team's this month (nano-USD)


def usd_text(nanousd: int) -> str:
    """Nano-USD as the exact decimal string a config file holds."""
    return f"{nanousd // 1_000_000_000}.{nanousd % 1_000_000_000:09d}"


def seed(url: str) -> None:
    """This month: two rows of the evals team, one of another team; last month: one evals row."""
    now = datetime.now(timezone.utc)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    with costkit.Ledger(url) as ledger:
        ledger.record(make_row(started_at=now, finished_at=now, tags={"team": "evals"}))
        ledger.record(
            make_row(started_at=now, finished_at=now, cost_nanousd=1_000_000, tags={"team": "evals"})
        )
        ledger.record(make_row(started_at=now, finished_at=now, cost_nanousd=7_000_000, tags={"team": "web"}))
        before = month_start - timedelta(seconds=1)
        ledger.record(make_row(started_at=before, finished_at=before, tags={"team": "evals"}))
        assert ledger.flush(30)


def config(path: Path, limit_nanousd: int) -> None:
    path.write_text(
        "[[budget]]\n"
        'name = "evals"\n'
        f'usd = "{usd_text(limit_nanousd)}"\n'
        'period = "month"\n'
        'tags = {team = "evals"}\n'
    )


def test_spend_so_far_plus_the_batch_passes_at_the_limit_and_fails_one_nano_dollar_under(tmp_path, db_url):
    seed(db_url)
    write_jsonl(tmp_path / "evals.jsonl", BODIES)
    batch = sum(worst_nanousd(b) for b in BODIES)

    config(tmp_path / "costkit.toml", SPENT + batch)
    out = guard_json(tmp_path, "evals.jsonl", "--budget", "evals", "--db", db_url)
    assert out["status"] == "pass"
    (standing,) = out["budgets"]
    current = standing.pop("current_period")
    amounts = {k: _nano(standing.pop(k)) for k in ("limit_usd", "batch_max_cost_usd", "after_batch_usd")}
    assert amounts == {
        "limit_usd": SPENT + batch,
        "batch_max_cost_usd": batch,
        "after_batch_usd": SPENT + batch,
    }
    assert standing == {
        "name": "evals",
        "period": "month",
        "tz": "UTC",
        "spent_usd": "0.004532",  # this month's evals rows only: not the web team's, not last month's
        "reserved_usd": "0.00",
        "ok": True,
    }
    assert current.startswith(datetime.now(timezone.utc).strftime("%Y-%m-01T00:00+00:00 to "))

    config(tmp_path / "costkit.toml", SPENT + batch - 1)
    out = guard_json(tmp_path, "evals.jsonl", "--budget", "evals", "--db", db_url, expect=1)
    assert out["status"] == "fail" and out["budgets"][0]["ok"] is False
    (finding,) = out["findings"]
    assert finding["check"] == "budget" and finding["level"] == "fail"
    assert finding["message"].startswith("budget evals: $0.004532 spent + $0.00 reserved + $")


def _shown(nanousd: int) -> str:
    """Dollars as costkit prints them: no trailing zeros beyond the cent."""
    whole, frac = divmod(nanousd, 1_000_000_000)
    return f"{whole}.{f'{frac:09d}'.rstrip('0').ljust(2, '0')}"


def _next_month() -> str:
    now = datetime.now(timezone.utc)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{year:04d}-{month:02d}-01T00:00+00:00"


def _nano(text: str) -> int:
    whole, _, frac = text.partition(".")
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0"))


def test_the_table_shows_where_the_budget_stands_and_the_failure_is_one_stderr_line(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    seed(url)
    write_jsonl(tmp_path / "evals.jsonl", BODIES)
    batch = sum(worst_nanousd(b) for b in BODIES)
    config(tmp_path / "team.toml", SPENT + batch - 1)
    result = guard(tmp_path, "evals.jsonl", "--budget", "evals", "--config", "team.toml", "--db", url)
    assert result.returncode == 1, result.stderr
    month = datetime.now(timezone.utc).strftime("%Y-%m-01T00:00+00:00")
    shown = [line for line in result.stdout.splitlines() if line.startswith("budget evals (")]
    assert shown == [
        f"budget evals ({month} to {_next_month()}): $0.004532 spent and reserved + "
        f"${_shown(batch)} -> ${_shown(SPENT + batch)} of ${_shown(SPENT + batch - 1)}"
    ]
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("costkit: FAIL: budget evals: ") and "over its $" in line


def test_a_default_ledger_no_client_created_yet_has_spent_nothing(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", BODIES)
    batch = sum(worst_nanousd(b) for b in BODIES)
    config(tmp_path / "costkit.toml", batch)
    out = guard_json(tmp_path, "evals.jsonl", "--budget", "evals", env={"COSTKIT_DB_URL": ""})
    assert out["status"] == "pass"
    assert out["budgets"][0]["spent_usd"] == "0.00"
    assert _nano(out["budgets"][0]["after_batch_usd"]) == batch


@pytest.mark.parametrize(
    ("toml", "args", "message"),
    [
        ("", ("--budget", "evals"), "--budget evals: no such budget in the config"),
        (
            '[[budget]]\nname = "evals"\nusd = 5.5\n',
            ("--budget", "evals"),
            "costkit.toml: budget 'evals': usd:",
        ),
    ],
)
def test_an_unknown_budget_or_a_bad_config_is_one_line_and_exit_2(tmp_path, toml, args, message):
    write_jsonl(tmp_path / "evals.jsonl", BODIES)
    (tmp_path / "costkit.toml").write_text(toml)
    line = one_line_error(guard(tmp_path, "evals.jsonl", *args))
    assert message in line, line


def test_a_ledger_that_cannot_be_read_is_one_line_and_exit_2(tmp_path):
    write_jsonl(tmp_path / "evals.jsonl", BODIES)
    config(tmp_path / "costkit.toml", 10**9)
    down = "postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2"
    line = one_line_error(guard(tmp_path, "evals.jsonl", "--budget", "evals", "--db", down))
    assert "127.0.0.1:1" in line, line
    missing = tmp_path / "nowhere.sqlite"
    line = one_line_error(guard(tmp_path, "evals.jsonl", "--budget", "evals", "--db", str(missing)))
    assert "no ledger database at" in line, line
