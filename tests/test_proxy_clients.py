"""``costkit proxy`` with real clients in three languages: curl, Node's fetch and the Python SDK.

Each client is pointed at the proxy (one base URL changed) and, for comparison, straight at
the same fake upstream, with ``X-Fake-Sequence`` so both answers carry the same disagreeing
usage. The caller must get the same status, headers and body bytes (ids and timestamps
aside) and the proxy must write exactly one row, holding the provider's usage priced at the
published rates written out in ``tests/proxy_helpers.py``.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import subprocess
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.fakeupstream import FakeUpstream
from tests.proxy_helpers import ROOT, nano, normalised, reported, running_proxy, wait_for_rows

VISION = ROOT / "examples" / "vision.json"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def proxy(upstream, tmp_path):
    with running_proxy(upstream.base_url, f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path) as running:
        yield running


def curl(base_url: str, sequence: int, *extra: str) -> tuple[dict[str, str], bytes]:
    """The provider's own curl example (examples/vision.json, "stream": true), against ``base_url``."""
    done = subprocess.run(
        [
            "curl", "-sS", "-D", "-", "-X", "POST", f"{base_url}/chat/completions",
            "-H", "Authorization: Bearer QUBRID_API_KEY",
            "-H", "Content-Type: application/json",
            "-H", f"X-Fake-Sequence: {sequence}",
            *extra,
            "-d", f"@{VISION}",
        ],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return headers, body


def row_is_the_providers(row: dict, request) -> None:
    tokens = reported(request)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == tokens
    assert row["usage_source"] == "provider"
    assert row["cost_nanousd"] == nano(*tokens)
    assert row["price_id"] == "gpt-4.1@2025-04-14"
    assert row["response_id"] == request.response_id
    assert tokens[0] != row["estimated_input_tokens"]  # the provider's count, not costkit's estimate


def test_curl_runs_the_providers_example_through_the_proxy_byte_for_byte(upstream, proxy):
    direct_headers, direct = curl(upstream.base_url, 7)
    headers, body = curl(proxy.base_url, 7)
    assert headers["content-type"] == direct_headers["content-type"] == "text/event-stream; charset=utf-8"
    assert normalised(body) == normalised(direct)
    assert body.count(b"data: ") > 10 and body.endswith(b"data: [DONE]\n\n")
    assert b'"usage"' not in body  # curl did not ask for usage: the chunk costkit asked for stays home
    # Every end-to-end header arrives, once; none of the proxy's own (no second Date or Server).
    for name in set(direct_headers) - HOP_BY_HOP - {"date", "x-request-id", "openai-processing-ms"}:
        assert headers[name] == direct_headers[name], name
    assert not HOP_BY_HOP & {k for k in headers if k != "transfer-encoding"}
    sent = upstream.requests[-1]
    assert sent.header("Authorization") == "Bearer QUBRID_API_KEY"  # no --keys: the caller's own
    assert sent.json["stream_options"] == {"include_usage": True}
    (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["stream"], row["http_status"]) == ("ok", True, 200)
    row_is_the_providers(row, sent)
    proxy.stop()
    assert "QUBRID_API_KEY" not in proxy.log()
    assert b"QUBRID_API_KEY" not in (Path(proxy.db_url.removeprefix("sqlite:///"))).read_bytes()


def test_a_plain_answer_reaches_curl_with_its_content_length_and_the_upstream_gets_the_same_bytes(
    upstream, proxy, tmp_path
):
    body = json.loads(VISION.read_bytes()) | {"stream": False}
    (tmp_path / "plain.json").write_text(json.dumps(body))
    raw = (tmp_path / "plain.json").read_bytes()
    direct_headers, direct = _curl_file(upstream.base_url, tmp_path / "plain.json", 8)
    headers, got = _curl_file(proxy.base_url, tmp_path / "plain.json", 8)
    assert normalised(got) == normalised(direct)
    assert headers["content-length"] == direct_headers["content-length"] == str(len(got))
    sent = upstream.requests[-1]
    assert sent.body == raw  # a plain request goes up exactly as the caller sent it
    (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["stream"]) == ("ok", False)
    row_is_the_providers(row, sent)


def _curl_file(base_url: str, path: Path, sequence: int, *extra: str) -> tuple[dict[str, str], bytes]:
    done = subprocess.run(
        ["curl", "-sS", "-D", "-", f"{base_url}/chat/completions", "-H", "Content-Type: application/json",
         "-H", f"X-Fake-Sequence: {sequence}", *extra, "--data-binary", f"@{path}"],
        capture_output=True, check=True, timeout=60,
    )  # fmt: skip
    head, _, body = done.stdout.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")[1:]
    return {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}, body


NODE_FETCH = r"""
import { readFileSync } from "node:fs";
const [url, sequence, stream] = process.argv.slice(1);
const body = JSON.parse(readFileSync(process.env.BODY_FILE, "utf8"));
body.stream = stream === "1";
const response = await fetch(url + "/chat/completions", {
  method: "POST",
  headers: {
    "Content-Type": "application/json", "Authorization": "Bearer sk-node", "X-Fake-Sequence": sequence,
  },
  body: JSON.stringify(body),
});
const chunks = [];
for await (const chunk of response.body) chunks.push(Buffer.from(chunk));
process.stdout.write(JSON.stringify({
  status: response.status,
  type: response.headers.get("content-type"),
  body: Buffer.concat(chunks).toString("base64"),
}));
"""


def node_fetch(base_url: str, sequence: int, stream: bool) -> tuple[int, str, bytes]:
    done = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_FETCH, base_url, str(sequence), "1" if stream else "0"],
        capture_output=True, check=True, timeout=60, env={"BODY_FILE": str(VISION), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    out = json.loads(done.stdout)
    return out["status"], out["type"], base64.b64decode(out["body"])


@pytest.mark.parametrize("stream", [True, False])
def test_node_fetch_gets_the_same_answer_through_the_proxy(upstream, proxy, stream):
    direct = node_fetch(upstream.base_url, 21, stream)
    got = node_fetch(proxy.base_url, 21, stream)
    assert got[:2] == direct[:2]
    assert normalised(got[2]) == normalised(direct[2])
    (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["stream"]) == ("ok", stream)
    row_is_the_providers(row, upstream.requests[-1])


def test_the_python_sdk_changes_only_its_base_url(upstream, proxy):
    messages = [{"role": "user", "content": "Name three prime numbers."}]
    client = openai.OpenAI(base_url=proxy.base_url, api_key="sk-python", max_retries=0)
    plain = client.chat.completions.create(model="openai/gpt-4.1", messages=messages, stream=False)
    plain_request = upstream.requests[-1]
    assert plain.usage.prompt_tokens == plain_request.usage["prompt_tokens"]
    chunks = list(client.chat.completions.create(model="openai/gpt-4.1", messages=messages, stream=True))
    stream_request = upstream.requests[-1]
    assert all(chunk.choices for chunk in chunks)  # the usage chunk costkit asked for is not seen
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == plain.choices[0].message.content
    models = client.models.list()  # another path: passed through, not recorded
    assert [m.id for m in models.data] == ["openai/gpt-4.1", "openai/gpt-4.1-mini", "openai/gpt-4.1-nano"]
    rows = wait_for_rows(proxy, 2)
    assert len(rows) == 2
    row_is_the_providers(rows[0], plain_request)
    row_is_the_providers(rows[1], stream_request)
    assert [r["stream"] for r in rows] == [False, True]


def test_stream_chunks_reach_the_caller_as_they_arrive(upstream, proxy):
    body = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"X-Fake-Chunk-Delay-Ms": "150", "X-Fake-Completion-Words": "8"}
    arrivals = []
    with (
        httpx.Client(timeout=30) as client,
        client.stream("POST", f"{proxy.base_url}/chat/completions", json=body, headers=headers) as response,
    ):
        started = time.monotonic()
        for _ in response.iter_raw():
            arrivals.append(time.monotonic() - started)
    assert len(arrivals) >= 8
    # One network read per upstream write, spread over the stream: nothing is held back to the end.
    assert arrivals[0] < 0.3 * arrivals[-1]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert sum(g > 0.1 for g in gaps) >= 6


def test_compressed_answers_decode_to_the_upstreams_body(upstream, proxy):
    body = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    raw_headers = {"Accept-Encoding": "gzip", "X-Fake-Gzip": "1", "X-Fake-Sequence": "31"}
    with httpx.Client() as client:
        direct = client.post(f"{upstream.base_url}/chat/completions", json=body, headers=raw_headers)
        with client.stream(
            "POST", f"{proxy.base_url}/chat/completions", json=body, headers=raw_headers
        ) as response:
            wire = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"  # the caller's Accept-Encoding went up
            assert response.headers["content-length"] == str(len(wire))
    assert normalised(gzip.decompress(wire)) == normalised(direct.content)
    # A stream costkit asked usage for is asked uncompressed; an upstream that compresses anyway is
    # decoded for the caller, whose body then decodes to the same events.
    stream_body = body | {"stream": True}
    forced = {**raw_headers, "X-Fake-Force-Encoding": "1"}
    with httpx.Client() as client:
        direct = client.post(f"{upstream.base_url}/chat/completions", json=stream_body, headers=forced)
        via = client.post(f"{proxy.base_url}/chat/completions", json=stream_body, headers=forced)
    assert upstream.requests[-1].header("Accept-Encoding") == "identity"
    assert "content-encoding" not in via.headers
    assert normalised(via.content) == normalised(direct.content)
    rows = wait_for_rows(proxy, 2)
    assert [r["status"] for r in rows] == ["ok", "ok"]


@pytest.mark.parametrize(
    ("scenario", "status"), [("status_429", 429), ("status_500", 500), ("status_400", 400)]
)
def test_upstream_errors_reach_the_caller_unchanged_and_are_error_rows(upstream, proxy, scenario, status):
    body = {"model": "openai/gpt-4.1", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    headers = {"X-Fake-Scenario": scenario}
    with httpx.Client() as client:
        direct = client.post(f"{upstream.base_url}/chat/completions", json=body, headers=headers)
        via = client.post(f"{proxy.base_url}/chat/completions", json=body, headers=headers)
    assert via.status_code == direct.status_code == status
    assert via.content == direct.content
    assert via.headers.get("retry-after") == direct.headers.get("retry-after")
    (row,) = wait_for_rows(proxy, 1)
    assert (row["status"], row["http_status"], row["cost_nanousd"]) == ("error", status, 0)
    assert row["error"].startswith(f"HTTP {status}")
