"""FakeUpstream, driven the way costkit's users drive the provider: the official openai SDK (on its
own httpx2 client and on a legacy ``httpx.Client``), raw httpx, and raw sockets for the framing.

These test the test double, not costkit. Most of them check the fake's counts against the
cookbook, so their server reports agreeing usage (``disagree=False``); the disagreeing usage
every interceptor test gets by default has its own section."""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from PIL import Image

from tests.cookbook import CORPORATE_JARGON, WEATHER_MESSAGES, WEATHER_TOOLS
from tests.fakeupstream import (
    DEFAULT_COMPLETION_TEXT,
    DEFAULT_TOOL_ARGUMENTS,
    SCENARIOS,
    FakeUpstream,
    disagreement,
    warm_cache_tokens,
)

ROOT = Path(__file__).resolve().parents[2]
MODEL = "openai/gpt-4.1"
MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "name": "ada", "content": "What does GPT-4.1 cost per million input tokens?"},
]


# ---------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def upstream(reference_encoding: Any) -> Iterator[FakeUpstream]:
    """One server for the module (plain tiktoken already loaded by conftest's fixture), reporting the
    usage the cookbook gives; a test of the disagreeing usage switches it on (``reset()`` restores)."""
    with FakeUpstream(disagree=False) as server:
        yield server


@pytest.fixture(autouse=True)
def _clean(request: pytest.FixtureRequest) -> Iterator[None]:
    if "upstream" not in request.fixturenames:
        yield
        return
    server: FakeUpstream = request.getfixturevalue("upstream")
    server.reset()
    yield
    assert server.errors == []


@pytest.fixture(params=["httpx2", "httpx"])
def client(request: pytest.FixtureRequest, upstream: FakeUpstream) -> Iterator[openai.OpenAI]:
    """The SDK on its default httpx2 client, and on a legacy ``httpx.Client``."""
    http_client = httpx.Client() if request.param == "httpx" else None
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0, http_client=http_client)
    yield sdk
    sdk.close()


@pytest.fixture
def raw(upstream: FakeUpstream) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=upstream.base_url, headers={"authorization": "Bearer sk-test"}) as c:
        yield c


def chat(client: openai.OpenAI, scenario: str | None = None, **kwargs: Any) -> Any:
    headers = dict(kwargs.pop("extra_headers", {}))
    if scenario:
        headers["X-Fake-Scenario"] = scenario
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(model=MODEL, extra_headers=headers, **kwargs)


def cookbook_prompt_tokens(encoding: Any, messages: list[dict[str, str]]) -> int:
    """The cookbook's ``num_tokens_from_messages`` for the o200k models, written out plainly."""
    total = 3
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value))
            if key == "name":
                total += 1
    return total


def sse_events(response: httpx.Response) -> list[str]:
    """The ``data:`` payloads of an SSE body, in order."""
    return [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data: ")]


def raw_exchange(port: int, method: str, path: str, body: bytes = b"", headers: str = "") -> bytes:
    """One request on a fresh socket with ``Connection: close``; everything the server sent."""
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{headers}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def parse_chunked(received: bytes) -> tuple[str, list[bytes], bool]:
    """(head, chunk payloads, whether the zero-length last chunk arrived), parsing strictly."""
    head, _, rest = received.partition(b"\r\n\r\n")
    chunks: list[bytes] = []
    while rest:
        size_line, sep, rest = rest.partition(b"\r\n")
        assert sep, f"truncated chunk-size line {size_line!r}"
        size = int(size_line, 16)
        if size == 0:
            assert rest == b"\r\n"
            return head.decode(), chunks, True
        if len(rest) < size + 2:
            return head.decode(), chunks, False
        assert rest[size : size + 2] == b"\r\n"
        chunks.append(rest[:size])
        rest = rest[size + 2 :]
    return head.decode(), chunks, False


def body_of(stream: bool | None = True, **extra: Any) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, **extra}
    if stream is not None:
        body["stream"] = stream
    return json.dumps(body).encode()


# ---------------------------------------------------------------- JSON answers


def test_json_usage_matches_an_independent_tiktoken_count(
    client: openai.OpenAI, upstream: FakeUpstream, reference_encoding: Any
) -> None:
    raw_response = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=MESSAGES, stream=False
    )
    completion = raw_response.parse()
    prompt = cookbook_prompt_tokens(reference_encoding, MESSAGES)
    completion_tokens = len(reference_encoding.encode(DEFAULT_COMPLETION_TEXT))
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content == DEFAULT_COMPLETION_TEXT
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (prompt, completion_tokens)
    assert completion.usage.total_tokens == prompt + completion_tokens
    assert completion.usage.prompt_tokens_details.cached_tokens == 0
    assert completion.usage.completion_tokens_details.reasoning_tokens == 0
    headers = raw_response.headers
    assert headers["content-type"] == "application/json"
    assert int(headers["content-length"]) == len(raw_response.http_response.content)
    assert headers["x-request-id"].startswith("req_")
    assert int(headers["openai-processing-ms"]) >= 0
    assert raw_response.request_id == headers["x-request-id"]
    (seen,) = upstream.requests
    assert seen.json["stream"] is False
    assert seen.header("AUTHORIZATION") == "Bearer sk-test"


def test_cookbook_examples_report_the_published_prompt_tokens(client: openai.OpenAI) -> None:
    jargon = chat(client, messages=CORPORATE_JARGON, stream=False)
    weather = chat(client, messages=WEATHER_MESSAGES, tools=WEATHER_TOOLS, stream=False)
    assert jargon.usage.prompt_tokens == 124
    assert weather.usage.prompt_tokens == 101


def test_images_and_tool_call_history_count_like_the_api(
    upstream: FakeUpstream, reference_encoding: Any
) -> None:
    png = io.BytesIO()
    Image.new("RGB", (1024, 1024), "white").save(png, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    arguments = '{"location":"Paris"}'
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe both."},
                {"type": "image_url", "image_url": {"url": url, "detail": "high"}},
                {"type": "image_url", "image_url": {"url": url, "detail": "low"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_current_weather", "arguments": arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    enc = reference_encoding.encode
    expected = (
        3
        + (3 + len(enc("user")) + len(enc("Describe both.")) + 765 + 85)
        + (
            3
            + len(enc("assistant"))
            + sum(len(enc(s)) for s in ("call_1", "function", "get_current_weather", arguments))
        )
        + (3 + len(enc("tool")) + len(enc("call_1")) + len(enc("22C")))
    )
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as sdk:
        completion = sdk.chat.completions.create(model=MODEL, messages=messages, stream=False)
    assert completion.usage.prompt_tokens == expected


def test_extra_prompt_and_cached_tokens_are_reported(
    client: openai.OpenAI, upstream: FakeUpstream, reference_encoding: Any
) -> None:
    upstream.extra_prompt_tokens = 2000
    upstream.cached_tokens = 1920
    usage = chat(client, stream=False).usage
    assert usage.prompt_tokens == cookbook_prompt_tokens(reference_encoding, MESSAGES) + 2000
    assert usage.prompt_tokens_details.cached_tokens == 1920
    by_header = chat(client, stream=False, extra_headers={"X-Fake-Cached-Tokens": "1024"}).usage
    assert by_header.prompt_tokens_details.cached_tokens == 1024


def test_json_x_metrics_carries_the_providers_timings(client: openai.OpenAI, raw: httpx.Client) -> None:
    completion = chat(client, "json_x_metrics", stream=False)
    metrics = completion.model_extra["x_metrics"]
    assert set(metrics) == {"ttft_seconds", "tps", "total_time_seconds"}
    assert all(type(value) is float for value in metrics.values())
    assert metrics["total_time_seconds"] > metrics["ttft_seconds"] > 0
    assert completion.usage is not None
    plain = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Scenario": "json"}).json()
    assert "x_metrics" not in plain


def test_json_no_usage_has_no_usage_key(client: openai.OpenAI, raw: httpx.Client) -> None:
    assert chat(client, "json_no_usage", stream=False).usage is None
    body = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Scenario": "json_no_usage"})
    assert "usage" not in body.json()


def test_json_tool_calls_name_the_requested_tool(client: openai.OpenAI, reference_encoding: Any) -> None:
    completion = chat(client, "json_tool_calls", messages=WEATHER_MESSAGES, tools=WEATHER_TOOLS, stream=False)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_current_weather"
    assert json.loads(call.function.arguments) == {"location": "Boston, MA", "unit": "celsius"}
    enc = reference_encoding.encode
    assert completion.usage.completion_tokens == len(enc("get_current_weather")) + len(
        enc(call.function.arguments)
    )
    assert completion.usage.prompt_tokens == 101


def test_max_tokens_cuts_the_reply_with_finish_reason_length(
    client: openai.OpenAI, reference_encoding: Any
) -> None:
    completion = chat(client, stream=False, max_tokens=5)
    text = completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "length"
    assert DEFAULT_COMPLETION_TEXT.startswith(text)
    assert completion.usage.completion_tokens == len(reference_encoding.encode(text)) <= 5


def test_completion_words_header_sets_the_reply_length(client: openai.OpenAI) -> None:
    completion = chat(client, stream=False, extra_headers={"X-Fake-Completion-Words": "120"})
    assert len(completion.choices[0].message.content.split(" ")) == 120
    stream = chat(client, stream=True, extra_headers={"X-Fake-Completion-Words": "7"})
    contents = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(contents) == 7


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("include_usage", [False, True])
def test_sse_streams_one_word_per_delta_and_usage_only_when_asked(
    client: openai.OpenAI, reference_encoding: Any, include_usage: bool
) -> None:
    options = {"include_usage": True} if include_usage else openai.omit
    chunks = list(chat(client, "sse", stream=True, stream_options=options))
    first, *middle = chunks
    assert first.choices[0].delta.role == "assistant" and first.choices[0].delta.content == ""
    contents = [c.choices[0].delta.content for c in middle if c.choices and c.choices[0].delta.content]
    assert "".join(contents) == DEFAULT_COMPLETION_TEXT
    assert len(contents) == len(DEFAULT_COMPLETION_TEXT.split(" "))
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    usage_chunks = [c for c in chunks if c.usage is not None]
    if include_usage:
        (last,) = usage_chunks
        assert last is chunks[-1] and last.choices == []
        assert last.usage.prompt_tokens == cookbook_prompt_tokens(reference_encoding, MESSAGES)
        assert last.usage.completion_tokens == len(reference_encoding.encode(DEFAULT_COMPLETION_TEXT))
    else:
        assert usage_chunks == []
        assert all(c.choices for c in chunks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_sse_bytes_carry_usage_null_only_when_asked(raw: httpx.Client, include_usage: bool) -> None:
    body = body_of(True, stream_options={"include_usage": include_usage})
    with raw.stream("POST", "/chat/completions", content=body) as response:
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
        events = sse_events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    with_choices = [c for c in chunks if c["choices"]]
    assert all(c["object"] == "chat.completion.chunk" and c["model"] == MODEL for c in chunks)
    if include_usage:
        assert all("usage" in c and c["usage"] is None for c in with_choices)
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
        assert len(with_choices) == len(chunks) - 1
    else:
        assert not any("usage" in c for c in chunks)
        assert with_choices == chunks


def test_sse_framing_is_one_event_per_chunk_ending_with_done(upstream: FakeUpstream) -> None:
    received = raw_exchange(upstream.port, "POST", "/v1/chat/completions", body_of(None))
    head, chunks, terminated = parse_chunked(received)
    assert head.startswith("HTTP/1.1 200 OK\r\n")
    assert "\r\nTransfer-Encoding: chunked" in head and "Content-Length" not in head
    assert "\r\nDate: " in head and "\r\nx-request-id: req_" in head
    assert terminated
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in chunks)
    assert chunks[-1] == b"data: [DONE]\n\n"


def test_events_are_flushed_as_they_are_produced(raw: httpx.Client) -> None:
    headers = {"X-Fake-Completion-Words": "3", "X-Fake-Chunk-Delay-Ms": "80"}
    arrivals = []
    with raw.stream("POST", "/chat/completions", content=body_of(True), headers=headers) as response:
        start = time.perf_counter()
        for line in response.iter_lines():
            if line.startswith("data: "):
                arrivals.append(time.perf_counter() - start)
    assert len(arrivals) == 6  # role, 3 words, finish, [DONE]
    # Buffered events would arrive together at the end; flushed ones arrive one delay apart.
    assert all(later - earlier > 0.05 for earlier, later in itertools.pairwise(arrivals))


def test_obfuscation_padding_only_when_asked(client: openai.OpenAI) -> None:
    padded = list(chat(client, "sse", stream=True, stream_options={"include_obfuscation": True}))
    plain = list(chat(client, "sse", stream=True))
    assert all(isinstance(c.obfuscation, str) and c.obfuscation for c in padded)
    assert all(c.obfuscation is None for c in plain)
    text = "".join(c.choices[0].delta.content or "" for c in padded if c.choices)
    assert text == DEFAULT_COMPLETION_TEXT


@pytest.mark.parametrize("include_usage", [False, True])
def test_usage_on_the_finish_chunk_with_choices(client: openai.OpenAI, include_usage: bool) -> None:
    options = {"include_usage": True} if include_usage else openai.omit
    chunks = list(chat(client, "sse_usage_on_choice", stream=True, stream_options=options))
    (with_usage,) = [c for c in chunks if c.usage is not None]
    assert with_usage is chunks[-1]
    assert with_usage.choices[0].finish_reason == "stop"
    assert all(c.choices for c in chunks)


def test_sse_no_usage_ignores_include_usage(client: openai.OpenAI, raw: httpx.Client) -> None:
    chunks = list(chat(client, "sse_no_usage", stream=True, stream_options={"include_usage": True}))
    assert all(c.usage is None and c.choices for c in chunks)
    body = body_of(True, stream_options={"include_usage": True})
    with raw.stream(
        "POST", "/chat/completions", content=body, headers={"X-Fake-Scenario": "sse_no_usage"}
    ) as r:
        assert '"usage"' not in r.read().decode()


def test_sse_tool_calls_stream_arguments_in_fragments(client: openai.OpenAI, reference_encoding: Any) -> None:
    chunks = list(
        chat(
            client,
            "sse_tool_calls",
            messages=WEATHER_MESSAGES,
            tools=WEATHER_TOOLS,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    calls = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices and c.choices[0].delta.tool_calls]
    first, *fragments = calls
    assert first.index == 0 and first.id.startswith("call_") and first.type == "function"
    assert first.function.name == "get_current_weather" and first.function.arguments == ""
    assert len(fragments) > 3 and all(f.id is None and f.function.name is None for f in fragments)
    arguments = "".join(f.function.arguments for f in fragments)
    assert arguments == DEFAULT_TOOL_ARGUMENTS
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
        "tool_calls"
    ]
    usage = chunks[-1].usage
    enc = reference_encoding.encode
    assert chunks[-1].choices == [] and usage.prompt_tokens == 101
    assert usage.completion_tokens == len(enc("get_current_weather")) + len(enc(arguments))


def test_sse_cut_raises_in_the_sdk(client: openai.OpenAI) -> None:
    seen = []
    with pytest.raises(openai.APIConnectionError) as caught:
        for chunk in chat(client, "sse_cut", stream=True, stream_options={"include_usage": True}):
            seen.append(chunk)
    assert isinstance(caught.value.__cause__, (httpx.RemoteProtocolError, httpx2.RemoteProtocolError))
    assert "incomplete chunked read" in str(caught.value.__cause__)
    assert "".join(c.choices[0].delta.content for c in seen) == " ".join(
        DEFAULT_COMPLETION_TEXT.split(" ")[:3]
    )
    assert all(c.usage is None for c in seen)


def test_sse_cut_is_an_incomplete_chunked_body_on_the_wire(upstream: FakeUpstream, raw: httpx.Client) -> None:
    received = raw_exchange(
        upstream.port, "POST", "/v1/chat/completions", body_of(True), "X-Fake-Scenario: sse_cut\r\n"
    )
    _, chunks, terminated = parse_chunked(received)
    assert not terminated and not received.endswith(b"0\r\n\r\n")
    assert len(chunks) == 4 and b"[DONE]" not in received
    with (
        pytest.raises(httpx.RemoteProtocolError),
        raw.stream(
            "POST", "/chat/completions", content=body_of(True), headers={"X-Fake-Scenario": "sse_cut"}
        ) as response,
    ):
        response.read()


def test_sse_malformed_event_breaks_the_sdk_but_the_stream_goes_on(
    client: openai.OpenAI, raw: httpx.Client
) -> None:
    seen = []
    with pytest.raises(json.JSONDecodeError):
        for chunk in chat(client, "sse_malformed", stream=True):
            seen.append(chunk)
    assert len(seen) == 3
    headers = {"X-Fake-Scenario": "sse_malformed"}
    with raw.stream("POST", "/chat/completions", content=body_of(True), headers=headers) as response:
        events = sse_events(response)
    assert events[3] == "{not json" and events[-1] == "[DONE]"
    good = [json.loads(e) for i, e in enumerate(events[:-1]) if i != 3]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in good) == DEFAULT_COMPLETION_TEXT


def test_auto_streams_when_stream_is_absent(client: openai.OpenAI, raw: httpx.Client) -> None:
    # The SDK leaves `stream` out unless asked; the provider then streams, and the SDK hands back
    # the SSE text as a str instead of a ChatCompletion.
    result = chat(client)
    assert isinstance(result, str) and result.startswith("data: {") and result.endswith("data: [DONE]\n\n")
    response = raw.post("/chat/completions", content=body_of(None))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert raw.post("/chat/completions", content=body_of(False)).headers["content-type"] == "application/json"


def test_async_client_streams_and_answers_json(upstream: FakeUpstream, reference_encoding: Any) -> None:
    async def run() -> tuple[list[Any], Any]:
        async with openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            chunks = [chunk async for chunk in stream]
            completion = await sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=False)
            return chunks, completion

    chunks, completion = asyncio.run(run())
    prompt = cookbook_prompt_tokens(reference_encoding, MESSAGES)
    assert chunks[-1].usage.prompt_tokens == completion.usage.prompt_tokens == prompt
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_COMPLETION_TEXT
    assert [r.header("x-stainless-async") for r in upstream.requests] == ["async:asyncio"] * 2
    assert len({r.connection for r in upstream.requests}) == 1  # the async SDK drains after [DONE]


# ---------------------------------------------------------------- errors and timeouts


def test_429_raises_rate_limit_error_with_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as caught:
        chat(client, "status_429", stream=False)
    assert caught.value.status_code == 429
    assert caught.value.response.headers["retry-after"] == "0"
    assert caught.value.body["type"] == "rate_limit_exceeded"
    assert caught.value.code == "rate_limit_exceeded"


def test_sdk_retries_a_429_through_the_transport(upstream: FakeUpstream) -> None:
    sdk = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=1)
    with sdk, pytest.raises(openai.RateLimitError):
        sdk.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers={"X-Fake-Scenario": "status_429"}
        )
    assert [r.header("x-stainless-retry-count") for r in upstream.requests] == ["0", "1"]


def test_500_and_400_raise_their_sdk_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as server_error:
        chat(client, "status_500", stream=True)
    assert server_error.value.body["type"] == "server_error"
    with pytest.raises(openai.BadRequestError) as bad_request:
        chat(client, "status_400", stream=False)
    assert bad_request.value.body["param"] == "temperature"


def test_slow_outlasts_a_client_timeout_and_answers_later(
    client: openai.OpenAI, upstream: FakeUpstream
) -> None:
    start = time.perf_counter()
    with pytest.raises(openai.APITimeoutError):
        chat(client, "slow", stream=False, timeout=0.2)
    assert time.perf_counter() - start < 1.5
    upstream.delay = 0.15
    start = time.perf_counter()
    completion = chat(client, "slow", stream=False)
    assert time.perf_counter() - start >= 0.15
    assert completion.choices[0].message.content == DEFAULT_COMPLETION_TEXT


def test_bad_bodies_and_unknown_scenarios_are_400(raw: httpx.Client) -> None:
    not_json = raw.post("/chat/completions", content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["error"]["type"] == "invalid_request_error"
    no_messages = raw.post("/chat/completions", json={"model": MODEL})
    assert no_messages.status_code == 400 and no_messages.json()["error"]["param"] == "messages"
    unknown = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Scenario": "nope"})
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]


def test_other_paths_are_404_and_other_methods_405(raw: httpx.Client, client: openai.OpenAI) -> None:
    missing = raw.post("/embeddings", json={"input": "x"})
    assert (
        missing.status_code == 404
        and missing.json()["error"]["message"] == "Invalid URL (POST /v1/embeddings)"
    )
    wrong_method = raw.get("/chat/completions")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert raw.delete("/models").status_code == 405
    ids = [model.id for model in client.models.list()]
    assert MODEL in ids
    assert client.models.retrieve(MODEL).owned_by == "openai"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-5")


# ---------------------------------------------------------------- the server itself


def test_requests_are_recorded_as_they_arrived(upstream: FakeUpstream) -> None:
    body = body_of(False)
    raw_exchange(upstream.port, "POST", "/v1/chat/completions?x=1", body, "X-Trace: a\r\nx-trace: b\r\n")
    (seen,) = upstream.requests
    assert (seen.method, seen.path, seen.body, seen.json) == (
        "POST",
        "/v1/chat/completions?x=1",
        body,
        json.loads(body),
    )
    assert ("X-Trace", "a") in seen.headers and ("x-trace", "b") in seen.headers
    assert seen.header_values("X-TRACE") == ["a", "b"] and seen.header("x-missing") is None
    assert seen.scenario == "auto"
    upstream.default_scenario = "json_no_usage"
    upstream.disagree = True
    upstream.reset()
    assert upstream.requests == [] and upstream.default_scenario == "auto"
    assert upstream.disagree is False  # the constructor's setting


def test_chunked_request_bodies_are_read(raw: httpx.Client, reference_encoding: Any) -> None:
    def pieces() -> Iterator[bytes]:
        body = body_of(False)
        yield body[:10]
        yield body[10:]

    response = raw.post("/chat/completions", content=pieces())
    assert response.request.headers["transfer-encoding"] == "chunked"
    assert response.json()["usage"]["prompt_tokens"] == cookbook_prompt_tokens(reference_encoding, MESSAGES)


def test_gzip_answers_decode_in_the_sdk(
    client: openai.OpenAI, upstream: FakeUpstream, raw: httpx.Client
) -> None:
    upstream.gzip = True
    completion = chat(client, stream=False)
    assert completion.choices[0].message.content == DEFAULT_COMPLETION_TEXT
    chunks = list(chat(client, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens
    with raw.stream("POST", "/chat/completions", content=body_of(True)) as response:
        assert response.headers["content-encoding"] == "gzip"
        assert sse_events(response)[-1] == "[DONE]"


def test_keep_alive_serves_many_requests_on_one_connection(upstream: FakeUpstream, raw: httpx.Client) -> None:
    before = upstream.connections_opened
    for stream in (False, True, False, True):
        assert raw.post("/chat/completions", content=body_of(stream)).status_code == 200
    assert upstream.connections_opened == before + 1
    assert len({r.connection for r in upstream.requests}) == 1


def test_sync_sdk_drops_the_connection_after_each_stream(upstream: FakeUpstream) -> None:
    # The sync SDK stops reading at [DONE] and closes the response before the last chunk is
    # parsed, so httpcore cannot reuse the connection; an interceptor must not read that as a cut.
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as sdk:
        for _ in range(3):
            list(sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
        for _ in range(3):
            sdk.chat.completions.create(model=MODEL, messages=MESSAGES, stream=False)
    first = upstream.requests[0].connection
    assert [r.connection - first for r in upstream.requests] == [0, 1, 2, 3, 3, 3]


def test_concurrent_clients_are_all_answered(upstream: FakeUpstream) -> None:
    with openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0) as sdk:

        def one(i: int) -> int:
            if i % 2:
                return sdk.chat.completions.create(
                    model=MODEL, messages=MESSAGES, stream=False
                ).usage.total_tokens
            chunks = sdk.chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
            return [c for c in chunks][-1].usage.total_tokens

        with ThreadPoolExecutor(8) as pool:
            totals = list(pool.map(one, range(40)))
    assert len(set(totals)) == 1
    assert len(upstream.requests) == 40


def test_stop_closes_idle_connections_and_frees_the_port() -> None:
    server = FakeUpstream().start()
    port = server.port
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
    assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    start = time.perf_counter()
    server.stop()
    assert time.perf_counter() - start < 1.0
    assert sock.recv(65536) == b""  # the idle keep-alive connection was closed
    sock.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1)
    server.stop()  # idempotent


def test_every_scenario_is_documented_and_answers(upstream: FakeUpstream, raw: httpx.Client) -> None:
    upstream.delay = 0.01
    statuses = {}
    for scenario in sorted(SCENARIOS):
        try:
            response = raw.post(
                "/chat/completions", content=body_of(False), headers={"X-Fake-Scenario": scenario}
            )
            statuses[scenario] = response.status_code
        except httpx.RemoteProtocolError:
            statuses[scenario] = "cut"
    assert statuses == {
        **dict.fromkeys(SCENARIOS, 200),
        "sse_cut": "cut",
        "status_429": 429,
        "status_500": 500,
        "status_400": 400,
    }


# ---------------------------------------------------------------- disagreeing usage

LONG_MESSAGES = [
    {"role": "system", "content": "You summarise ledgers. " * 300},
    {"role": "user", "content": "Summarise."},
]


def test_the_default_server_disagrees() -> None:
    assert FakeUpstream().disagree is True


def test_warm_cache_serves_nothing_below_1024_tokens_then_steps_of_128() -> None:
    assert [warm_cache_tokens(n) for n in (0, 1023, 1024, 1151, 1152, 1279, 2006)] == [
        0,
        0,
        1024,
        1024,
        1152,
        1152,
        1920,
    ]


def test_disagreement_is_never_zero_and_changes_from_one_request_to_the_next() -> None:
    pairs = [disagreement(n) for n in range(1, 200)]
    assert all(offset > 0 and reasoning > 0 for offset, reasoning in pairs)
    assert all(a[0] != b[0] and a[1] != b[1] for a, b in itertools.pairwise(pairs))


def test_disagreeing_json_usage_adds_an_offset_and_hidden_reasoning(
    upstream: FakeUpstream, raw: httpx.Client, reference_encoding: Any
) -> None:
    upstream.disagree = True
    answers = [raw.post("/chat/completions", content=body_of(False)).json() for _ in range(2)]
    prompt = cookbook_prompt_tokens(reference_encoding, MESSAGES)
    visible = len(reference_encoding.encode(DEFAULT_COMPLETION_TEXT))
    for answer, seen in zip(answers, upstream.requests, strict=True):
        offset, reasoning = disagreement(seen.sequence)
        assert answer["choices"][0]["message"]["content"] == DEFAULT_COMPLETION_TEXT
        assert answer["usage"] == {
            "prompt_tokens": prompt + offset,
            "completion_tokens": visible + reasoning,
            "total_tokens": prompt + offset + visible + reasoning,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},  # under 1024: no cache
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        }
        assert seen.usage == answer["usage"]  # what the answer carried, kept on the recorded request
        assert seen.response_id == answer["id"]
    assert answers[0]["usage"]["prompt_tokens"] != answers[1]["usage"]["prompt_tokens"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_disagreeing_stream_usage_is_the_one_recorded(
    upstream: FakeUpstream, raw: httpx.Client, reference_encoding: Any, include_usage: bool
) -> None:
    upstream.disagree = True
    body = body_of(True, stream_options={"include_usage": include_usage})
    with raw.stream("POST", "/chat/completions", content=body) as response:
        chunks = [json.loads(event) for event in sse_events(response)[:-1]]
    (seen,) = upstream.requests
    if not include_usage:
        assert seen.usage is None and not any("usage" in c for c in chunks)
        return
    usage = chunks[-1]["usage"]
    offset, reasoning = disagreement(seen.sequence)
    assert usage == seen.usage
    assert usage["prompt_tokens"] == cookbook_prompt_tokens(reference_encoding, MESSAGES) + offset
    assert usage["completion_tokens"] == len(reference_encoding.encode(DEFAULT_COMPLETION_TEXT)) + reasoning
    assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning


def test_a_long_prompt_is_served_from_a_warm_cache_in_steps_of_128(
    upstream: FakeUpstream, client: openai.OpenAI, reference_encoding: Any
) -> None:
    upstream.disagree = True
    usage = chat(client, messages=LONG_MESSAGES, stream=False).usage
    offset = disagreement(upstream.requests[-1].sequence)[0]
    prompt = cookbook_prompt_tokens(reference_encoding, LONG_MESSAGES) + offset
    assert usage.prompt_tokens == prompt > 1024 + 128
    cached = usage.prompt_tokens_details.cached_tokens
    assert cached == 1024 + 128 * ((prompt - 1024) // 128)
    assert prompt - 128 < cached <= prompt and cached % 128 == 0
    assert upstream.requests[-1].usage["prompt_tokens_details"]["cached_tokens"] == cached


def test_the_header_switches_disagreement_per_request(upstream: FakeUpstream, raw: httpx.Client) -> None:
    agreeing = raw.post("/chat/completions", content=body_of(False)).json()["usage"]
    disagreeing = raw.post(
        "/chat/completions", content=body_of(False), headers={"X-Fake-Disagree": "1"}
    ).json()["usage"]
    offset, reasoning = disagreement(upstream.requests[-1].sequence)
    assert disagreeing["prompt_tokens"] == agreeing["prompt_tokens"] + offset
    assert disagreeing["completion_tokens"] == agreeing["completion_tokens"] + reasoning
    upstream.disagree = True
    again = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Disagree": "0"}).json()
    assert again["usage"] == agreeing


def test_the_other_usage_knobs_apply_on_top_of_disagreement(
    upstream: FakeUpstream, raw: httpx.Client, reference_encoding: Any
) -> None:
    upstream.disagree = True
    upstream.extra_prompt_tokens = 2000
    prompt = cookbook_prompt_tokens(reference_encoding, MESSAGES)
    warm = raw.post("/chat/completions", content=body_of(False)).json()["usage"]
    assert warm["prompt_tokens"] == prompt + disagreement(upstream.requests[-1].sequence)[0] + 2000
    assert warm["prompt_tokens_details"]["cached_tokens"] == warm_cache_tokens(warm["prompt_tokens"]) > 0
    upstream.cached_tokens = 512
    assert raw.post("/chat/completions", content=body_of(False)).json()["usage"]["prompt_tokens_details"] == {
        "cached_tokens": 512,
        "audio_tokens": 0,
    }
    edited = raw.post(
        "/chat/completions",
        content=body_of(False),
        headers={"X-Fake-Cached-Tokens": "0", "X-Fake-Usage": json.dumps({"completion_tokens": 7})},
    ).json()["usage"]
    assert edited["completion_tokens"] == 7
    assert edited["prompt_tokens"] == prompt + disagreement(upstream.requests[-1].sequence)[0] + 2000
    assert edited["prompt_tokens_details"]["cached_tokens"] == 0
    assert upstream.requests[-1].usage == edited


def test_answers_without_usage_record_none(upstream: FakeUpstream, raw: httpx.Client) -> None:
    upstream.disagree = True
    for scenario in ("json_no_usage", "json_not_json", "json_error_200", "sse_no_usage", "status_429"):
        raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Scenario": scenario})
    assert [r.usage for r in upstream.requests] == [None] * 5
    raw.post("/chat/completions", content=body_of(True), headers={"X-Fake-Scenario": "sse_usage_on_choice"})
    assert upstream.requests[-1].usage["completion_tokens_details"]["reasoning_tokens"] > 0


def test_answers_are_numbered_and_reset_starts_again() -> None:
    # A server of its own: a slow answer left over from another test would take a number here.
    with FakeUpstream() as server, httpx.Client(base_url=server.base_url) as raw:
        usages = [raw.post("/chat/completions", content=body_of(False)).json()["usage"] for _ in range(3)]
        assert [r.sequence for r in server.requests] == [1, 2, 3]
        assert [u["prompt_tokens"] - usages[0]["prompt_tokens"] for u in usages] == [
            disagreement(n)[0] - disagreement(1)[0] for n in (1, 2, 3)
        ]
        server.reset()
        assert raw.post("/chat/completions", content=body_of(False)).json()["usage"] == usages[0]
        pinned = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Sequence": "2"})
        assert pinned.json()["usage"] == usages[1]  # answered as the second answer was
        assert [r.sequence for r in server.requests] == [1, 2]
        assert raw.post("/chat/completions", content=body_of(False)).json()["usage"] == usages[1]
        bad = raw.post("/chat/completions", content=body_of(False), headers={"X-Fake-Sequence": "x"})
        assert bad.status_code == 400


# ---------------------------------------------------------------- as a separate process


def test_subprocess_mode_prints_ready_and_answers() -> None:
    # As the benchmark starts it: `python -m` from the repository root, tiktoken with no cache set.
    env = {key: value for key, value in os.environ.items() if key != "TIKTOKEN_CACHE_DIR"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakeupstream", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        stdout = process.stdout
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=20)
        line = lines[0].strip() if lines else ""
        assert line.startswith("READY http://127.0.0.1:") and line.endswith("/v1"), line
        base_url = line.split(" ", 1)[1]
        with openai.OpenAI(base_url=base_url, api_key="sk-test", max_retries=0) as sdk:
            completion = sdk.chat.completions.create(
                model=MODEL,
                messages=CORPORATE_JARGON,
                stream=False,
                extra_headers={"X-Fake-Scenario": "json", "X-Fake-Disagree": "0"},
            )
            assert completion.usage.prompt_tokens == 124
            disagreeing = sdk.chat.completions.create(  # the process disagrees by default
                model=MODEL, messages=CORPORATE_JARGON, stream=False
            )
            offset, reasoning = disagreement(2)  # the process's second chat answer
            assert disagreeing.usage.prompt_tokens == 124 + offset
            assert disagreeing.usage.completion_tokens_details.reasoning_tokens == reasoning
            chunks = list(
                sdk.chat.completions.create(
                    model=MODEL,
                    messages=MESSAGES,
                    stream=True,
                    stream_options={"include_usage": True},
                    extra_headers={"X-Fake-Completion-Words": "5"},
                )
            )
            assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 5
            with pytest.raises(openai.RateLimitError):
                sdk.chat.completions.create(
                    model=MODEL, messages=MESSAGES, extra_headers={"X-Fake-Scenario": "status_429"}
                )
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
