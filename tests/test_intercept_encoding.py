"""Compressed streams: the usage chunk costkit asked for never reaches a caller that did not ask.

The fake upstream compresses even when costkit sent ``Accept-Encoding: identity``
(``X-Fake-Force-Encoding``), as a misbehaving upstream or proxy would.
"""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
import openai
import pytest

import costkit
from tests.fakeupstream import count_completion, count_text
from tests.test_intercept import (
    BODY_MESSAGES,
    assert_row_charged,
    assert_row_from_provider,
    create,
    expected_prompt,
    ledger,
    normalised,
    rows,
    sdk,
    upstream,
)

__all__ = ["ledger", "upstream"]

INPUT, OUTPUT = 2000, 8000  # nano-USD per token, gpt-4.1
ENCODINGS = ["gzip", "deflate", "deflate-raw", "br", "zstd"]  # every coding httpx decodes (dev extras)


def forced(encoding: str) -> dict[str, str]:
    return {"X-Fake-Encoding": encoding, "X-Fake-Force-Encoding": "1"}


@pytest.mark.parametrize("stack", ["httpx2", "httpx"])
@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_compressed_stream_never_shows_the_usage_chunk_to_a_caller_that_did_not_ask(
    upstream, ledger, encoding, stack
):
    upstream.reset()
    chunks = list(create(sdk(upstream, ledger, stack), "sse", forced(encoding), stream=True))
    assert upstream.requests[-1].header("accept-encoding") == "identity"  # costkit asked for none
    assert chunks and all(chunk.choices for chunk in chunks)  # chunk.choices[0] never raises
    assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    (row,) = rows(ledger)
    assert row["status"] == "ok"
    assert row["estimated_input_tokens"] == expected_prompt(stream=True)
    assert_row_from_provider(row, upstream.requests[-1], count_completion(text).tokens)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_the_caller_reads_the_same_decoded_bytes_as_without_costkit(upstream, ledger, encoding):
    body = {"model": "openai/gpt-4.1", "messages": BODY_MESSAGES, "stream": True}
    headers = {"X-Fake-Scenario": "sse", **forced(encoding)}
    url = f"{upstream.base_url}/chat/completions"
    with httpx.Client() as bare, bare.stream("POST", url, json=body, headers=headers) as response:
        assert response.headers["content-encoding"] == encoding.replace("-raw", "")
        expected = b"".join(response.iter_bytes())
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    with client.stream("POST", url, json=body, headers=headers) as response:
        assert "content-encoding" not in response.headers  # already decoded, as httpx would have
        assert response.headers["content-type"].startswith("text/event-stream")
        got = b"".join(response.iter_bytes())
    assert b'"usage"' not in got
    assert normalised(got) == normalised(expected)
    assert_row_from_provider(rows(ledger)[0], upstream.requests[-1], count_text(upstream.completion_text))


def test_a_caller_that_asked_for_usage_gets_the_compressed_stream_untouched(upstream, ledger):
    chunks = list(
        create(
            sdk(upstream, ledger), "sse", forced("gzip"), stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    (row,) = rows(ledger)
    assert chunks[-1].usage.model_dump(exclude_none=True) == upstream.requests[-1].usage
    assert_row_from_provider(row, upstream.requests[-1], count_text(upstream.completion_text))
    body = {
        "model": "gpt-4.1",
        "messages": BODY_MESSAGES,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    headers = {"X-Fake-Scenario": "sse", **forced("gzip")}
    with client.stream(
        "POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["content-encoding"] == "gzip"
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw).rstrip().endswith(b"data: [DONE]")
    assert_row_from_provider(rows(ledger)[-1], upstream.requests[-1], count_text(upstream.completion_text))


def test_an_async_client_with_a_compressed_stream(upstream, ledger):
    async def main() -> list:
        client = costkit.wrap(
            openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0), ledger=ledger
        )
        stream = await client.chat.completions.create(
            model="gpt-4.1",
            messages=BODY_MESSAGES,
            stream=True,
            extra_headers={"X-Fake-Scenario": "sse", **forced("gzip")},
        )
        return [chunk async for chunk in stream]

    chunks = asyncio.run(main())
    assert chunks and all(chunk.choices for chunk in chunks)
    (row,) = rows(ledger)
    assert row["status"] == "ok"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert_row_from_provider(row, upstream.requests[-1], count_text(text))


def test_an_encoding_costkit_cannot_decode_is_forwarded_untouched_and_said_so(upstream, ledger):
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": True}
    headers = {"X-Fake-Scenario": "sse", **forced("x-unknown")}
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    with client.stream(
        "POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.headers["content-encoding"] == "x-unknown"
        raw = b"".join(response.iter_raw())
    assert gzip.decompress(raw).startswith(b"data: {")  # the upstream's bytes, as they came
    (row,) = rows(ledger)
    assert row["status"] == "partial"  # costkit could not see the end of it
    assert "'x-unknown', which costkit cannot decode" in row["notes"]
    prompt = expected_prompt(stream=True)
    assert_row_charged(row, (prompt, 0, 0), "estimated")  # nothing of it could be read
    assert row["cost_nanousd"] == prompt * INPUT


def test_a_compressed_plain_answer_is_read_and_forwarded_untouched(upstream, ledger):
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": False}
    headers = {"X-Fake-Scenario": "json", "X-Fake-Encoding": "deflate-raw"}
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    response = client.post(f"{upstream.base_url}/chat/completions", json=body, headers=headers)
    assert response.headers["content-encoding"] == "deflate"
    usage = response.json()["usage"]
    (row,) = rows(ledger)
    assert usage == upstream.requests[-1].usage
    assert_row_from_provider(row, upstream.requests[-1], count_text(upstream.completion_text))
    assert row["status"] == "ok" and json.loads(response.content)["id"] == row["response_id"]
