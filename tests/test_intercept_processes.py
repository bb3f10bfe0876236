"""Process patterns, interceptor side: what is settled up at set-up, at exit and when a stream is dropped.

The exit cases run in fresh processes with the default ledger in a private
``XDG_DATA_HOME``; the rows are read back from that SQLite file.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select

import costkit
from costkit.ledger.errors import LedgerError
from costkit.ledger.schema import requests_table
from tests.fakeupstream import count_completion, count_text
from tests.ledger_helpers import TcpProxy, ids_in_ledger, pg_schema, pg_url
from tests.test_intercept import (
    BODY_MESSAGES,
    assert_row_charged,
    assert_row_from_provider,
    expected_prompt,
    ledger,
    rows,
    upstream,
)

__all__ = ["ledger", "pg_schema", "upstream"]

REPO = Path(__file__).resolve().parents[1]
INPUT, OUTPUT = 2000, 8000  # nano-USD per token, gpt-4.1


def run(code: str, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("COSTKIT_DB_URL", "COSTKIT_PRICES")}
    environ.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=environ, timeout=60, cwd=REPO
    )


def default_ledger_rows(tmp_path: Path) -> list[dict]:
    engine = create_engine(f"sqlite:///{tmp_path / 'data' / 'costkit' / 'ledger.sqlite'}")
    try:
        with engine.connect() as connection:
            return [dict(r) for r in connection.execute(select(requests_table)).mappings()]
    finally:
        engine.dispose()


OPEN_AT_EXIT = """
import sys, openai, costkit
client = costkit.wrap(openai.OpenAI(base_url=sys.argv[1], api_key="sk-test", max_retries=0))
stream = client.chat.completions.create(
    model="gpt-4.1", messages=[{"role": "user", "content": "Name three prime numbers."}], stream=True,
    extra_headers={"X-Fake-Scenario": "sse", "X-Fake-Chunk-Delay-Ms": "100"},
)
chunks = iter(stream)
got = [next(chunks), next(chunks)]
print("".join(c.choices[0].delta.content or "" for c in got), flush=True)
# exits with the stream still open: neither read to the end nor closed
"""


def test_a_stream_open_at_exit_is_settled_partial_and_priced(upstream, tmp_path):
    result = run(OPEN_AT_EXIT, tmp_path, upstream.base_url)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    received = result.stdout.rstrip("\n")
    (row,) = default_ledger_rows(tmp_path)
    prompt = count_text("user") + count_text("Name three prime numbers.") + 3 + 3
    output = count_text(received)
    assert received and output > 0
    assert (row["status"], row["usage_source"]) == ("partial", "estimated")
    assert (row["input_tokens"], row["output_tokens"]) == (prompt, output)
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT > 0
    assert row["price_id"] == "gpt-4.1@2025-04-14"
    assert "stream still open at interpreter exit" in row["notes"]


def test_a_response_dropped_without_close_is_settled_when_collected(upstream, ledger):
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": True}
    headers = {"X-Fake-Scenario": "sse", "X-Fake-Chunk-Delay-Ms": "50"}
    request = client.build_request(
        "POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers
    )
    response = client.send(request, stream=True)
    raw = response.iter_raw()
    got = b"".join(next(raw) for _ in range(3))
    del response, raw
    gc.collect()
    found = rows(ledger)
    assert len(found) == 1
    (row,) = found
    events = [json.loads(line[6:]) for line in got.split(b"\n") if line.startswith(b"data: {")]
    output = count_text("".join(e["choices"][0]["delta"].get("content") or "" for e in events))
    prompt = expected_prompt(stream=True, stream_options={"include_usage": True})
    assert output > 0
    assert row["status"] == "partial" and (row["input_tokens"], row["output_tokens"]) == (prompt, output)
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT
    assert "dropped without being closed" in row["notes"]


ENCODING_AT_BUILD = """
import costkit
from costkit.counting import tokens
costkit.Transport(ledger=costkit.Ledger("sqlite:///" + __import__("sys").argv[1]))
print(tokens.is_loaded())
"""


def test_the_encoding_is_loaded_when_a_transport_is_built(tmp_path):
    result = run(ENCODING_AT_BUILD, tmp_path, str(tmp_path / "l.sqlite"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True"]


BAD_URL_AT_BUILD = """
import json, costkit
from costkit.ledger.errors import LedgerError
from costkit.ledger.schema import requests_table
try:
    costkit.Transport()
except LedgerError as exc:
    print(json.dumps(["LedgerError", str(exc)]))
else:
    print(json.dumps(["built", ""]))
"""


@pytest.mark.parametrize("url", ["mysql://user@db/costs", "postgresql+psycopg://user@db:notaport/x"])
def test_a_default_ledger_url_that_cannot_be_right_fails_when_the_transport_is_built(tmp_path, url):
    result = run(BAD_URL_AT_BUILD, tmp_path, COSTKIT_DB_URL=url)
    assert result.returncode == 0, result.stderr
    kind, message = json.loads(result.stdout)
    assert kind == "LedgerError", message
    assert "Traceback" not in result.stderr


def test_the_default_ledger_is_opened_when_the_transport_is_built(tmp_path, monkeypatch):
    from costkit.intercept import options

    monkeypatch.setattr(options, "_default_ledger", None)
    monkeypatch.setenv("COSTKIT_DB_URL", f"sqlite:///{tmp_path / 'default.sqlite'}")
    transport = costkit.Transport()
    try:
        assert transport.options.ledger is options._default_ledger is not None
        assert (tmp_path / "default.sqlite").exists()
    finally:
        options._default_ledger.close()
    with pytest.raises(LedgerError):
        monkeypatch.setattr(options, "_default_ledger", None)
        monkeypatch.setenv("COSTKIT_DB_URL", "oracle://nobody@nowhere/x")
        costkit.Transport()


def test_a_stream_settled_at_exit_is_not_settled_again_when_closed(upstream, ledger):
    from costkit.intercept import inflight
    from tests.test_intercept import create, sdk

    stream = create(sdk(upstream, ledger), "sse", {"X-Fake-Chunk-Delay-Ms": "20"}, stream=True)
    next(iter(stream))
    inflight.settle_open()  # what the exit callback does
    stream.close()
    (row,) = rows(ledger)
    assert row["status"] == "partial" and "stream still open at interpreter exit" in row["notes"]
    output = row["output_tokens"]  # what costkit's copy had read by then: at most the whole reply
    assert 0 <= output <= count_completion(upstream.completion_text).tokens
    assert_row_charged(row, (expected_prompt(stream=True), 0, output), "estimated")


THROUGH_A_DOWN_LEDGER = """
import sys, time, openai, costkit
client = costkit.wrap(openai.OpenAI(base_url=sys.argv[1], api_key="sk-test", max_retries=0))
for i in range(3):
    start = time.perf_counter()
    client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": "Name three prime numbers."}], stream=False,
        extra_headers={"X-Fake-Scenario": "json"},
    )
    print(round(time.perf_counter() - start, 3), flush=True)
"""


def test_requests_never_wait_for_a_black_holed_ledger_database_and_their_rows_arrive_later(
    upstream, tmp_path, pg_schema
):
    """``COSTKIT_DB_URL`` at a host that accepts and never answers: the issue saw 10 s a request."""
    proxy = TcpProxy()
    proxy.blackhole()
    try:
        url = pg_url(pg_schema, proxy.port) + "&connect_timeout=2"
        done = run(THROUGH_A_DOWN_LEDGER, tmp_path, upstream.base_url, COSTKIT_DB_URL=url)
        assert done.returncode == 0, done.stderr
        waits = [float(line) for line in done.stdout.split()]
        assert len(waits) == 3 and max(waits) < 0.5, waits  # the first includes the SDK's own warm-up
        assert "Traceback" not in done.stderr
        said = done.stderr.strip().splitlines()
        assert len(said) == 1 and said[0].startswith("costkit ledger: ") and "spool" in said[0], said
        proxy.restore()
        replay = "from costkit.cli import main; main(['ledger', 'replay', '--json'])"
        replayed = run(replay, tmp_path, COSTKIT_DB_URL=url)
        assert replayed.returncode == 0, replayed.stderr
        assert json.loads(replayed.stdout)["rows"] == 3
    finally:
        proxy.close()
    assert len(ids_in_ledger(pg_url(pg_schema))) == 3
    engine = create_engine(pg_url(pg_schema))
    try:
        with engine.connect() as connection:
            found = [dict(r) for r in connection.execute(select(requests_table)).mappings()]
    finally:
        engine.dispose()
    sent = {request.response_id: request for request in upstream.requests}
    for row in found:  # the spooled rows kept the provider's numbers through the replay
        assert_row_from_provider(row, sent[row["response_id"]])


def test_a_stream_open_when_sigterm_arrives_is_settled_partial_and_kept(upstream, tmp_path):
    """The service is stopped (SIGTERM) mid-stream: the stream's row is spooled on the way out."""
    environ = {k: v for k, v in os.environ.items() if k not in ("COSTKIT_DB_URL", "COSTKIT_PRICES")}
    environ.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    code = OPEN_AT_EXIT + "import time\ntime.sleep(60)\n"
    child = subprocess.Popen(
        [sys.executable, "-c", code, upstream.base_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        cwd=REPO,
    )
    received = child.stdout.readline().rstrip("\n")  # two chunks read; the stream is open
    child.send_signal(signal.SIGTERM)
    _out, err = child.communicate(timeout=30)
    assert child.returncode == -signal.SIGTERM, err  # still "killed by SIGTERM"
    assert "Traceback" not in err, err
    replayed = run("from costkit.cli import main; main(['ledger', 'replay', '--json'])", tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    (row,) = default_ledger_rows(tmp_path)
    prompt = count_text("user") + count_text("Name three prime numbers.") + 3 + 3
    output = count_text(received)
    assert received and output > 0
    assert (row["status"], row["usage_source"]) == ("partial", "estimated")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (prompt, 0, output)
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT > 0


POOL = """
import collections, multiprocessing, sys, openai, costkit
from tests.fakeupstream import FakeUpstream

upstream = FakeUpstream().start()
ledger = costkit.Ledger(sys.argv[1])
client = costkit.wrap(
    openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0), ledger=ledger
)


def call(i):
    # Half the calls are streams the worker never reads nor closes: garbage in a reference cycle,
    # settled when collected, when the worker exits, or when the pool's exit sends it SIGTERM.
    client.chat.completions.create(
        model="gpt-4.1", messages=[{"role": "user", "content": f"task {i}"}], stream=bool(i % 2),
        extra_headers={"X-Costkit-Tags": f"i={i}"},
    )
    return i


if __name__ == "__main__":
    multiprocessing.set_start_method("fork")
    for _ in range(3):
        with multiprocessing.Pool(4) as pool:
            pool.map(call, range(40))
    ledger.flush()
    found = collections.Counter(int(r["tags"]["i"]) for r in ledger.rows())
    print(sorted(i for i in range(40) if found[i] != 3))  # tasks without exactly one row a round
    # Every row of a plain call holds the usage the provider sent for it, at the published prices.
    sent = {request.response_id: request.usage for request in upstream.requests}
    wrong = []
    for row in ledger.rows():
        if not row["stream"]:
            usage = sent[row["response_id"]]
            tokens = (usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"],
                      usage["completion_tokens"])
            price = (tokens[0] - tokens[1]) * 2000 + tokens[1] * 500 + tokens[2] * 8000
            got = (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"])
            if (got, row["usage_source"], row["cost_nanousd"]) != (tokens, "provider", price):
                wrong.append(row["tags"]["i"])
    print(len([row for row in ledger.rows() if not row["stream"]]), wrong)
"""


def test_a_pool_whose_exit_sigterms_its_workers_keeps_every_row(tmp_path):
    """The issue's pattern: `with multiprocessing.Pool(4) as p: p.map(call, range(40))`, three times."""
    script = tmp_path / "pool.py"
    script.write_text(POOL)
    environ = {k: v for k, v in os.environ.items() if k not in ("COSTKIT_DB_URL", "COSTKIT_PRICES")}
    environ.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "ledger.sqlite")],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["[]", "60 []"], done.stdout  # 20 plain calls a round, all exact
