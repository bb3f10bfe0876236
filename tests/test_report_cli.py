"""``costkit report`` and ``costkit demo`` run for real: files, exit codes, the webhook, the demo ledger.

Every command is the installed console script in a subprocess, with its own data
directory (``XDG_DATA_HOME``), so the default ledger and the demo ledger are fresh.
The webhook is a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.report_helpers import IMG, fill, price, row

COSTKIT = Path(sys.executable).with_name("costkit")


def costkit(*args: str, cwd: Path, data: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COSTKIT_")}
    env["XDG_DATA_HOME"] = str(data)
    return subprocess.run(
        [str(COSTKIT), *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def yesterday_ledger(tmp_path: Path) -> tuple[Path, int, str]:
    """A ledger with two requests yesterday (UTC): (path, their cost, yesterday's date)."""
    yesterday = datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )
    path = tmp_path / "ledger.sqlite"
    fill(
        f"sqlite:///{path}",
        [
            row(yesterday + timedelta(hours=3), tags={"team": IMG}),
            row(yesterday + timedelta(hours=4), model="gpt-4.1-mini", input_tokens=3000, cached=0, output=10),
        ],
    )
    cost = price("gpt-4.1", 2006, 1920, 300) + price("gpt-4.1-mini", 3000, 0, 10)
    return path, cost, yesterday.date().isoformat()


def test_report_writes_every_file_into_reports_date_and_prints_a_summary(
    tmp_path: Path, yesterday_ledger: tuple[Path, int, str]
) -> None:
    ledger, cost, yesterday = yesterday_ledger
    result = costkit("report", "--db", str(ledger), "--by", "tag:team", cwd=tmp_path, data=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "reports" / yesterday
    names = {p.name for p in out.iterdir()}
    assert {
        "report.html",
        "report.json",
        "summary.md",
        "daily.csv",
        "by_model.csv",
        "by_tag_team.csv",
    } <= names
    data = json.loads((out / "report.json").read_text())
    assert data["totals"]["cost_nanousd"] == cost
    assert data["last_day"]["date"] == yesterday
    assert (
        data["period"]["until"] == (datetime.fromisoformat(yesterday) + timedelta(days=1)).date().isoformat()
    )
    assert f"wrote {len(names)} files to reports/{yesterday}/" in result.stdout
    assert "$" in result.stdout and "2 requests" in result.stdout
    assert not (tmp_path / "data" / "costkit").exists()  # the default ledger was never created


def test_chosen_formats_and_directory(tmp_path: Path, yesterday_ledger: tuple[Path, int, str]) -> None:
    ledger, _, _ = yesterday_ledger
    out = tmp_path / "chosen"
    result = costkit(
        "report", "--db", str(ledger), "--format", "md,json", "--out", str(out), cwd=tmp_path, data=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "summary.md"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: 'yesterday' is not a date (YYYY-MM-DD)"),
        (["--since", "2026-11-05", "--until", "2026-11-01"], "must be before"),
        (["--tz", "Nowhere/Land"], "unknown time zone 'Nowhere/Land'"),
        (["--by", "team"], "use 'model' or 'tag:NAME'"),
        (["--format", "html,pdf"], "unknown report format 'pdf'"),
        (["--notify", "ftp://example.invalid/x"], "--notify: give the webhook's http(s) URL"),
        (["--config", "/nonexistent/costkit.toml"], "no such config file"),
        (["--demo", "--db", "x.sqlite"], "--demo reports on the demo ledger"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    args: list[str], message: str, tmp_path: Path, yesterday_ledger: tuple[Path, int, str]
) -> None:
    ledger, _, _ = yesterday_ledger
    line = one_line_error(costkit("report", "--db", str(ledger), *args, cwd=tmp_path, data=tmp_path))
    assert message in line
    assert not (tmp_path / "reports").exists()


def test_unreadable_ledgers_are_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = one_line_error(
        costkit("report", "--db", str(tmp_path / "no.sqlite"), cwd=tmp_path, data=tmp_path)
    )
    assert "no ledger database at" in missing
    assert not (tmp_path / "no.sqlite").exists()
    (tmp_path / "junk.sqlite").write_bytes(b"this is not a database" * 100)
    junk = one_line_error(
        costkit("report", "--db", str(tmp_path / "junk.sqlite"), cwd=tmp_path, data=tmp_path)
    )
    assert "junk.sqlite" in junk
    down = costkit(
        "report", "--db", "postgresql://postgres:s3cret@127.0.0.1:1/test", cwd=tmp_path, data=tmp_path
    )
    line = one_line_error(down)
    assert "cannot be read" in line and "s3cret" not in line


def test_an_empty_default_ledger_reports_an_empty_period(tmp_path: Path) -> None:
    result = costkit("report", "--format", "json", cwd=tmp_path, data=tmp_path / "data")
    assert result.returncode == 0, result.stderr
    assert "no requests in this period" in result.stdout
    assert not (tmp_path / "data" / "costkit" / "ledger.sqlite").exists()


class Webhook:
    """A Slack-style incoming webhook on 127.0.0.1 that keeps what it was sent and answers ``status``."""

    def __init__(self, status: int) -> None:
        self.received: list[dict[str, Any]] = []
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                webhook.received.append({"path": self.path, "json": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *_args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/SECRETTOKEN"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook(request: pytest.FixtureRequest) -> Iterator[Webhook]:
    hook = Webhook(request.param)
    yield hook
    hook.close()


@pytest.mark.parametrize("webhook", [200], indirect=True)
def test_notify_posts_summary_md_to_the_webhook(
    webhook: Webhook, tmp_path: Path, yesterday_ledger: tuple[Path, int, str]
) -> None:
    ledger, _, _ = yesterday_ledger
    out = tmp_path / "out"
    result = costkit(
        "report",
        "--db",
        str(ledger),
        "--by",
        "tag:team",
        "--out",
        str(out),
        "--notify",
        webhook.url,
        cwd=tmp_path,
        data=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(webhook.received) == 1
    assert webhook.received[0]["json"] == {"text": (out / "summary.md").read_text()}
    assert "&lt;img" in webhook.received[0]["json"]["text"]
    assert "SECRETTOKEN" not in result.stdout + result.stderr


@pytest.mark.parametrize("webhook", [500], indirect=True)
def test_a_failed_post_is_exit_2_the_files_stay_and_the_token_is_never_shown(
    webhook: Webhook, tmp_path: Path, yesterday_ledger: tuple[Path, int, str]
) -> None:
    ledger, _, _ = yesterday_ledger
    out = tmp_path / "out"
    result = costkit(
        "report", "--db", str(ledger), "--out", str(out), "--notify", webhook.url, cwd=tmp_path, data=tmp_path
    )
    line = one_line_error(result)
    assert "answered HTTP 500" in line and "127.0.0.1" in line and "the files were written" in line
    assert "SECRETTOKEN" not in result.stdout + result.stderr
    assert (out / "summary.md").exists() and (out / "report.html").exists()
    refused = costkit(
        "report",
        "--db",
        str(ledger),
        "--out",
        str(out),
        "--notify",
        "http://127.0.0.1:1/hook/TOKEN2",
        cwd=tmp_path,
        data=tmp_path,
    )
    line = one_line_error(refused)
    assert "could not post the summary to 127.0.0.1" in line and "TOKEN2" not in line


def rows_of(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as connection:
        return connection.execute(
            "SELECT r.*, (SELECT group_concat(key || '=' || value) FROM costkit_request_tags t "
            "WHERE t.request_id = r.request_id) FROM costkit_requests r ORDER BY request_id"
        ).fetchall()


def test_demo_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a.sqlite", tmp_path / "b.sqlite", tmp_path / "c.sqlite"
    for path, seed in ((first, "3"), (second, "3"), (other, "4")):
        result = costkit(
            "demo", "--db", str(path), "--days", "4", "--seed", seed, cwd=tmp_path, data=tmp_path
        )
        assert result.returncode == 0, result.stderr
    assert rows_of(first) == rows_of(second)
    assert rows_of(first) != rows_of(other)
    again = costkit("demo", "--db", str(first), "--days", "4", "--seed", "3", cwd=tmp_path, data=tmp_path)
    assert again.returncode == 0, again.stderr
    assert rows_of(first) == rows_of(second)  # a second run replaces the demo rows, never adds to them


def test_demo_never_mixes_with_real_traffic(tmp_path: Path, yesterday_ledger: tuple[Path, int, str]) -> None:
    ledger, _, _ = yesterday_ledger
    before = rows_of(ledger)
    line = one_line_error(costkit("demo", "--db", str(ledger), "--days", "2", cwd=tmp_path, data=tmp_path))
    assert "2 requests not from the demo" in line
    assert rows_of(ledger) == before


def test_report_demo_makes_the_demo_ledger_beside_the_real_one_and_reports_on_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    result = costkit("report", "--demo", "--out", str(tmp_path / "out"), cwd=tmp_path, data=data)
    assert result.returncode == 0, result.stderr
    assert (data / "costkit" / "demo.sqlite").exists()
    assert not (data / "costkit" / "ledger.sqlite").exists()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["totals"]["requests"] > 1000
    assert {"team", "feature"} == set(report["tags"])
    assert len(report["tables"]["by_tag_team"]) == 4
    statuses = report["statuses"]
    assert statuses["error"] > 0 and statuses["partial"] > 0 and statuses["blocked"] > 0
    assert report["streamed_requests"] > 0 and report["cache"]["saved_nanousd"] > 0
    assert report["drift"]["requests"] > 0
    monthly = report["tables"]["budgets"][0]
    assert monthly["budget"] == "demo-monthly"
    days = [d for d in report["tables"]["daily"] if d["requests"]]  # 30 demo days may not fill the month
    weekdays = [d["requests"] for d in days if date.fromisoformat(d["date"]).weekday() < 5]
    weekends = [d["requests"] for d in days if date.fromisoformat(d["date"]).weekday() >= 5]
    if weekends and weekdays:  # quieter weekends
        assert max(weekends) < min(weekdays)
    with sqlite3.connect(data / "costkit" / "demo.sqlite") as connection:
        total = connection.execute(
            "SELECT SUM(cost_nanousd) FROM costkit_requests WHERE started_at >= ? AND started_at < ?",
            (report["period"]["since"], report["period"]["until"]),
        ).fetchone()[0]
    assert report["totals"]["cost_nanousd"] == total
    with sqlite3.connect(data / "costkit" / "demo.sqlite") as connection:
        month = connection.execute("SELECT SUM(cost_nanousd) FROM costkit_requests").fetchone()[0]
    limit = Decimal(monthly["limit_usd"]) * 10**9
    assert (
        limit * Decimal("0.8") <= month <= limit * Decimal("1.1")
    )  # 30 days come close to the monthly budget
