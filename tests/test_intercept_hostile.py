"""Hostile or odd upstream answers: CRLF events, events split across reads, malformed lines after
the id, error events inside a 200 stream, bodies that are not JSON, bodies past the side-copy bound.
"""

# ruff: noqa: F811  (pytest fixtures imported from tests.ledger_helpers are re-bound as arguments)
from __future__ import annotations

import json

import httpx
import openai
import pytest

import costkit
from costkit.intercept import responses
from tests.fakeupstream import count_completion, count_text
from tests.ledger_helpers import pg_schema, pg_url  # noqa: F401
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
STREAM_PROMPT = {"stream": True, "stream_options": {"include_usage": True}}


def assert_estimated_from_what_arrived(row: dict, upstream) -> None:
    """A stream the caller stopped reading: costkit's input count, the output of what its copy saw
    before the stop (at most the whole reply: how far that got depends on the socket's reads)."""
    prompt, output = expected_prompt(stream=True), row["output_tokens"]
    assert 0 < output <= count_completion(upstream.completion_text).tokens
    assert_row_charged(row, (prompt, 0, output), "estimated")
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT


SHAPES = {
    "crlf": {"X-Fake-Line-Ending": "crlf"},
    "split": {"X-Fake-Write-Size": "7"},
    "crlf split": {"X-Fake-Line-Ending": "crlf", "X-Fake-Write-Size": "5"},
    "gzip split": {"X-Fake-Encoding": "gzip", "X-Fake-Force-Encoding": "1", "X-Fake-Write-Size": "3"},
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_odd_event_framing_is_read_exactly_and_hides_the_usage_chunk(upstream, ledger, shape):
    chunks = list(create(sdk(upstream, ledger), "sse", SHAPES[shape], stream=True))
    assert chunks and all(chunk.choices for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    (row,) = rows(ledger)
    assert row["status"] == "ok"
    assert row["estimated_input_tokens"] == expected_prompt(**STREAM_PROMPT)
    assert_row_from_provider(row, upstream.requests[-1], count_completion(text).tokens)


@pytest.mark.parametrize("shape", ["crlf", "split", "crlf split"])
def test_odd_event_framing_reaches_the_caller_byte_for_byte(upstream, ledger, shape):
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": True}
    headers = {"X-Fake-Scenario": "sse", **SHAPES[shape]}
    url = f"{upstream.base_url}/chat/completions"
    with httpx.Client() as bare, bare.stream("POST", url, json=body, headers=headers) as response:
        expected = b"".join(response.iter_raw())
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    with client.stream("POST", url, json=body, headers=headers) as response:
        got = b"".join(response.iter_raw())
    assert normalised(got) == normalised(expected)
    assert_row_from_provider(rows(ledger)[0], upstream.requests[-1], count_text(upstream.completion_text))


def test_a_malformed_line_after_the_id_is_partial_through_the_sdk(upstream, ledger):
    bare = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(Exception) as without:
        list(create(bare, "sse_malformed_after_id", stream=True))
    with pytest.raises(Exception) as wrapped:
        list(create(sdk(upstream, ledger), "sse_malformed_after_id", stream=True))
    assert type(wrapped.value) is type(without.value)
    (row,) = rows(ledger)
    assert row["status"] == "partial"
    assert "the caller's read ended in JSONDecodeError" in row["notes"]
    assert_estimated_from_what_arrived(row, upstream)


def test_an_error_event_inside_a_200_stream_is_partial_with_its_message(upstream, ledger):
    with pytest.raises(openai.APIError, match="overloaded mid-stream"):
        list(create(sdk(upstream, ledger), "sse_error_event", stream=True))
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"]) == ("partial", 200)
    assert row["error"] == "The model overloaded mid-stream."
    assert_estimated_from_what_arrived(row, upstream)  # the SDK stopped at the error event


def test_an_error_event_read_by_a_raw_client_is_partial_too(upstream, ledger):
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": True}
    headers = {"X-Fake-Scenario": "sse_error_event"}
    with client.stream(
        "POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        data = b"".join(response.iter_bytes())
    assert data.rstrip().endswith(b"data: [DONE]")
    (row,) = rows(ledger)
    assert row["status"] == "partial" and row["error"] == "The model overloaded mid-stream."
    # Read to the end, the usage after the error event was seen: the provider's numbers.
    assert_row_from_provider(row, upstream.requests[-1], count_text(upstream.completion_text))


def test_a_200_body_that_is_not_json_is_partial_estimated_and_noted(upstream, ledger):
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": False}
    response = client.post(
        f"{upstream.base_url}/chat/completions", json=body, headers={"X-Fake-Scenario": "json_not_json"}
    )
    assert response.status_code == 200 and response.content.startswith(b"<html>")
    (row,) = rows(ledger)
    prompt = expected_prompt(stream=False)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "partial",
        "estimated",
        prompt,
        0,
    )
    assert row["cost_nanousd"] == prompt * INPUT
    assert "response body is not JSON" in row["notes"]


def test_a_stream_past_the_side_copy_bound_is_still_accounted_from_its_usage(upstream, ledger, monkeypatch):
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", 2000)
    headers = {"X-Fake-Completion-Words": "400"}
    chunks = list(create(sdk(upstream, ledger), "sse", headers, stream=True))
    assert all(chunk.choices for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    (row,) = rows(ledger)
    # The usage at the end was still read, though the copy stopped long before it.
    assert_row_from_provider(row, upstream.requests[-1], count_completion(text).tokens)
    assert row["status"] == "ok"  # the caller got it all; only costkit's copy was cut


def test_a_plain_body_past_the_side_copy_bound_is_forwarded_whole_and_noted(upstream, ledger, monkeypatch):
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", 500)
    reply = create(sdk(upstream, ledger), "json", stream=False)
    assert reply.choices[0].message.content
    (row,) = rows(ledger)
    assert row["status"] == "partial"
    assert "response body over 500 bytes: not read" in row["notes"]
    assert_row_charged(row, (expected_prompt(stream=False), 0, 0), "estimated")
    assert row["cost_nanousd"] == expected_prompt(stream=False) * INPUT


def test_an_error_object_in_a_200_answer_is_partial_with_its_message(upstream, ledger):
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": False}
    response = client.post(
        f"{upstream.base_url}/chat/completions", json=body, headers={"X-Fake-Scenario": "json_error_200"}
    )
    assert response.status_code == 200 and "error" in response.json()
    (row,) = rows(ledger)
    assert (row["status"], row["error"]) == ("partial", "The model overloaded mid-stream.")
    assert upstream.requests[-1].usage is None
    assert_row_charged(row, (expected_prompt(stream=False), 0, 0), "estimated")
    assert row["cost_nanousd"] == expected_prompt(stream=False) * INPUT


def test_hostile_text_with_nul_bytes_still_reaches_postgresql(upstream, pg_schema, tmp_path):
    book = costkit.Ledger(pg_url(pg_schema), spool_dir=tmp_path / "spool")
    try:
        client = sdk(upstream, book)
        message = json.dumps("overloaded\u0000 again, key sk-proj-AAAAbbbbCCCCdddd1111")
        with pytest.raises(openai.APIError):
            list(create(client, "sse_error_event", {"X-Fake-Error-Message": message}, stream=True))
        (row,) = rows(book)
    finally:
        book.close()
    assert row["error"] == "overloaded again, key sk-[redacted]"
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


def test_a_body_the_preflight_refuses_to_judge_still_has_its_input_counted_and_priced(upstream, ledger):
    """`max_tokens: 0` leaves no verdict (no output reserve to judge), but the input still counts."""
    reply = create(sdk(upstream, ledger), "json_no_usage", max_tokens=0, stream=False)
    (row,) = rows(ledger)
    prompt = expected_prompt(max_tokens=0, stream=False)
    output = count_completion(reply.choices[0].message.content or "").tokens
    assert (row["usage_source"], row["estimated_input_tokens"], row["input_tokens"]) == (
        "estimated",
        prompt,
        prompt,
    )
    assert row["price_id"] == "gpt-4.1@2025-04-14"
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT > 0
