"""``costkit proxy`` as an operator meets it: refusals, local keys, health, shutdown, bad input.

Every test runs the real ``costkit proxy`` command as a subprocess against a real fake
upstream on 127.0.0.1 and reads rows back from the ledger the proxy wrote.
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import COSTKIT, run_costkit
from tests.fakeupstream import FakeUpstream
from tests.proxy_helpers import free_port, nano, reported, running_proxy, wait_for_rows

MESSAGES = [{"role": "user", "content": "Name three prime numbers."}]
BODY = {"model": "openai/gpt-4.1", "messages": MESSAGES}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as server:
        yield server


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite'}"


def test_a_request_that_cannot_fit_is_refused_openai_style_and_recorded_blocked(upstream, tmp_path):
    upstream.reset()
    huge = [{"role": "user", "content": "costkit " * 1_100_000}]
    with running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        with pytest.raises(openai.BadRequestError) as caught:
            client.chat.completions.create(model="openai/gpt-4.1", messages=huge, max_tokens=100)
        assert caught.value.status_code == 400
        assert caught.value.code == "context_length_exceeded"
        error = caught.value.body
        assert error["type"] == "invalid_request_error"
        assert "1,047,576-token context window" in error["message"]
        assert upstream.requests == []  # nothing was forwarded
        (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["cost_nanousd"], row["http_status"]) == ("blocked", 0, None)
    assert row["input_tokens"] > 1_047_576


def test_a_hard_budget_refuses_with_429_once_spent(upstream, tmp_path):
    upstream.reset()
    # $0.0004 holds one request's worst case (its input plus a 16-token output reserve, about $0.00016)
    # but not a second one on top of the first's spend: the provider's usage, hidden reasoning tokens
    # included, leaves less than a worst case.
    (tmp_path / "costkit.toml").write_text('[[budget]]\nname = "cap"\nusd = "0.0004"\nhard = true\n')
    with running_proxy(
        upstream.base_url, sqlite_url(tmp_path), tmp_path, "--config", "costkit.toml"
    ) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        first = client.chat.completions.create(**BODY, max_tokens=16, stream=False)
        assert first.choices
        # The first row's spend, not its (smaller) reservation, is what leaves too little: wait for the
        # writer to store it, as a loaded machine may not have yet when the answer reaches the client.
        wait_for_rows(proxy, 1)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(**BODY, max_tokens=16, stream=False)
        assert caught.value.code == "costkit_budget_exceeded"
        assert "budget 'cap' would be exceeded" in caught.value.body["message"]
        assert len(upstream.requests) == 1
        rows = wait_for_rows(proxy, 2)
    assert [r["status"] for r in rows] == ["ok", "blocked"]
    assert rows[0]["cost_nanousd"] == nano(*reported(upstream.requests[0]))


def write_keys(tmp_path: Path, key: str, **fields: str) -> Path:
    extra = "".join(f'{name} = "{value}"\n' for name, value in fields.items())
    text = f'[[key]]\nsha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    text += 'tags = {team = "search", user = "ana"}\n' + extra
    path = tmp_path / "keys.toml"
    path.write_text(text)
    return path


def test_local_keys_map_to_tags_and_an_upstream_key_that_is_never_stored(upstream, tmp_path):
    upstream.reset()
    local, real = "ck-local-0123456789", "sk-upstream-SECRET-42"
    keys = write_keys(tmp_path, local, upstream_key_env="QUBRID_API_KEY")
    with running_proxy(
        upstream.base_url, sqlite_url(tmp_path), tmp_path, "--keys", str(keys), QUBRID_API_KEY=real
    ) as proxy:
        url = f"{proxy.base_url}/chat/completions"
        body = {**BODY, "stream": False}
        refused = []
        for headers in ({}, {"Authorization": "Bearer ck-wrong"}, {"Authorization": f"Basic {local}"}):
            answer = httpx.post(url, json=body, headers=headers)
            refused.append((answer.status_code, answer.json()["error"]["code"]))
        assert refused == [(401, "invalid_api_key")] * 3
        assert upstream.requests == []  # nothing forwarded for an unknown or missing key
        answer = httpx.post(
            url,
            json=body,
            headers={"Authorization": f"Bearer {local}", "X-Costkit-Tags": "team=other,job=ci"},
        )
        assert answer.status_code == 200
        (sent,) = upstream.requests
        assert sent.header("Authorization") == f"Bearer {real}"  # the local key stays home
        assert sent.header("X-Costkit-Tags") is None
        (row,) = wait_for_rows(proxy, 1)
        assert row["tags"] == {"team": "search", "user": "ana", "job": "ci"}  # the key's tags win
        assert row["cost_nanousd"] == nano(*reported(sent))
        proxy.stop()
        log = proxy.log()
    stored = (tmp_path / "ledger.sqlite").read_bytes()
    for secret in (local, real):
        assert secret not in log and secret.encode() not in stored
    assert log.count("POST /v1/chat/completions 401") == 3


def test_hash_key_prints_what_a_keys_file_holds():
    done = run_costkit("proxy", "hash-key", stdin=b"ck-local-0123456789\n")
    assert done.returncode == 0
    assert done.stdout.strip() == hashlib.sha256(b"ck-local-0123456789").hexdigest()
    empty = run_costkit("proxy", "hash-key", stdin=b"")
    assert empty.returncode == 2 and "give the key on stdin" in empty.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--upstream URL is required"),
        (["--upstream", "ftp://x"], "--upstream must be an http(s) URL"),
        (["--upstream", "http://127.0.0.1:1/v1", "--keys", "missing.toml"], "missing.toml: cannot be read"),
        (["--upstream", "http://127.0.0.1:1/v1", "--config", "missing.toml"], "no such config file"),
        (["--upstream", "http://127.0.0.1:1/v1", "--workers", "0"], "--workers must be at least 1"),
        (["--upstream", "http://127.0.0.1:1/v1", "--db", "nosuch://x"], "proxy:"),
    ],
)
def test_bad_flags_and_files_are_one_line_and_exit_2(tmp_path, args, message):
    done = run_costkit("proxy", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_an_address_that_cannot_be_listened_on_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = run_costkit("proxy", "--upstream", "http://127.0.0.1:1/v1", "--port", port, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"costkit: proxy: cannot listen on 127.0.0.1:{port}: Address already in use"
    not_ours = run_costkit(
        "proxy", "--upstream", "http://127.0.0.1:1/v1", "--host", "192.0.2.1", cwd=tmp_path
    )
    assert not_ours.returncode == 2
    assert "cannot listen on 192.0.2.1:8787" in not_ours.stderr


def test_a_keys_file_naming_an_unset_variable_is_refused_at_start(tmp_path):
    keys = write_keys(tmp_path, "ck-x", upstream_key_env="NOT_SET_ANYWHERE")
    done = run_costkit("proxy", "--upstream", "http://127.0.0.1:1/v1", "--keys", str(keys), cwd=tmp_path)
    assert done.returncode == 2
    assert "$NOT_SET_ANYWHERE is not set" in done.stderr


def test_health_reports_the_ledger_and_a_down_database_spools(upstream, tmp_path):
    upstream.reset()
    down = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    with running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path) as proxy:
        health = proxy.health()
        assert health["schema"] == "costkit.proxy.health/1"
        assert health["ledger"] == {"queue_depth": 0, "spool_rows": 0, "database_reachable": True}
    with running_proxy(upstream.base_url, down, tmp_path) as proxy:
        client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-test", max_retries=0)
        client.chat.completions.create(**BODY, stream=False)  # served although the database is down
        spooled = {"queue_depth": 0, "spool_rows": 1, "database_reachable": False}
        deadline = time.monotonic() + 20
        while (health := proxy.health())["ledger"] != spooled and time.monotonic() < deadline:
            time.sleep(0.1)  # (a row being moved to the spool counts in both for a moment)
        assert health["ledger"] == spooled
        assert health["status"] == "degraded"


def test_an_unreachable_upstream_is_a_502_and_an_error_row(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with running_proxy(dead, sqlite_url(tmp_path), tmp_path) as proxy:
        answer = httpx.post(f"{proxy.base_url}/chat/completions", json={**BODY, "stream": False})
        assert answer.status_code == 502
        assert answer.json()["error"]["code"] == "upstream_unreachable"
        (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["cost_nanousd"]) == ("error", 0)
    assert row["error"].startswith("ConnectError")


def test_a_caller_that_leaves_mid_stream_leaves_a_partial_row(upstream, tmp_path):
    upstream.reset()
    body = json.dumps({**BODY, "stream": True}).encode()
    with running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
            head = (
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "X-Fake-Chunk-Delay-Ms: 100\r\nX-Fake-Completion-Words: 60\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            sock.sendall(head.encode() + body)
            assert b"200 OK" in sock.recv(65536)
        (row,) = wait_for_rows(proxy, 1)
        assert len(upstream.requests) == 1
    assert row["status"] == "partial"
    assert "ClientDisconnected" in row["notes"]
    assert row["latency_us"] < 3_000_000  # closed when the caller left, not at the end of the 6 s stream


def _stream_all(base_url: str, n: int, headers: dict[str, str], results: list[bytes | BaseException]) -> None:
    def one() -> None:
        try:
            with (
                httpx.Client(timeout=60) as client,
                client.stream(
                    "POST", f"{base_url}/chat/completions", json={**BODY, "stream": True}, headers=headers
                ) as response,
            ):
                results.append(b"".join(response.iter_raw()))
        except BaseException as exc:
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def test_fifty_concurrent_streams_each_get_their_stream_and_one_exact_row(upstream, tmp_path):
    upstream.reset()
    results: list[bytes | BaseException] = []
    with running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path) as proxy:
        _stream_all(proxy.base_url, 50, {"X-Fake-Chunk-Delay-Ms": "20"}, results)
        rows = wait_for_rows(proxy, 50)
    assert len(results) == 50 and all(
        isinstance(r, bytes) and r.endswith(b"data: [DONE]\n\n") for r in results
    )
    assert all(b'"usage"' not in r for r in results)
    sent = {r.response_id: r for r in upstream.requests}
    assert len(sent) == 50 and len(rows) == 50
    for row in rows:
        assert row["status"] == "ok"
        assert row["cost_nanousd"] == nano(*reported(sent[row["response_id"]]))


@pytest.mark.parametrize("grace", [30, 1])
def test_sigterm_under_load_loses_no_row(upstream, tmp_path, grace):
    """With time enough, every stream finishes; past the grace period, the rest are partial rows."""
    upstream.reset()
    results: list[bytes | BaseException] = []
    headers = {"X-Fake-Chunk-Delay-Ms": "100", "X-Fake-Completion-Words": "30"}  # about 3 s a stream
    proxy_cm = running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path, "--grace", str(grace))
    with proxy_cm as proxy:
        load = threading.Thread(target=_stream_all, args=(proxy.base_url, 20, headers, results))
        load.start()
        upstream.wait_for_requests(20, timeout=30)
        time.sleep(0.3)
        proxy.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        after = subprocess.run(["curl", "-sS", proxy.base_url + "/models"], capture_output=True, timeout=30)
        code = proxy.stop()
        load.join()
    assert code == 0, proxy.log()
    assert after.returncode == 7, after  # curl: "couldn't connect": it stopped accepting at once
    rows = proxy.rows()
    assert len(rows) == len(upstream.requests) == 20
    statuses = sorted(r["status"] for r in rows)
    if grace == 30:
        assert statuses == ["ok"] * 20
        assert all(isinstance(r, bytes) and r.endswith(b"data: [DONE]\n\n") for r in results)
    else:
        assert statuses == ["partial"] * 20
        assert all(r["output_tokens"] > 0 and r["cost_nanousd"] > 0 for r in rows)
        assert "cancelled at shutdown, after the grace period" in proxy.log()


def test_the_proxy_command_is_listed_and_starts_fast():
    started = time.monotonic()
    done = subprocess.run([COSTKIT, "--help"], capture_output=True, text=True, timeout=60)
    assert "proxy" in done.stdout
    assert time.monotonic() - started < 5


def test_paths_under_v1_map_onto_the_upstream_base_and_others_onto_its_origin(upstream, tmp_path):
    upstream.reset()
    with running_proxy(upstream.base_url, sqlite_url(tmp_path), tmp_path) as proxy:
        direct = httpx.get(
            f"{upstream.base_url}/models/openai%2Fgpt-4.1?x=1", headers={"X-Costkit-Tags": "a=b"}
        )
        via = httpx.get(f"{proxy.base_url}/models/openai%2Fgpt-4.1?x=1", headers={"X-Costkit-Tags": "a=b"})
        other = httpx.delete(f"{proxy.origin}/elsewhere?y=2")
        assert (via.status_code, via.content) == (direct.status_code, direct.content)
        assert [(r.method, r.path) for r in upstream.requests[1:]] == [
            ("GET", "/v1/models/openai%2Fgpt-4.1?x=1"),
            ("DELETE", "/elsewhere?y=2"),
        ]
        assert upstream.requests[1].header("X-Costkit-Tags") is None  # costkit's header stays home
        assert (
            other.status_code == 404 and other.json()["error"]["message"] == "Invalid URL (DELETE /elsewhere)"
        )
        assert proxy.rows() == []  # nothing but chat completions is recorded
        httpx.get(f"{proxy.base_url}/models%0AFORGED%20200")
        proxy.stop()
    lines = proxy.log().splitlines()
    assert not any(line.startswith("FORGED") for line in lines)
    assert any("INFO GET /v1/models%0AFORGED%20200 404 " in line for line in lines)  # as sent, on one line
