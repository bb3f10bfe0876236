"""The interceptor's paths no other test ran (issue 8), each through the real transport on 127.0.0.1.

Pinned here:

1. tool calls are counted into the output estimate when the provider sends no usage, in a plain
   answer and in a stream;
2. an SSE event (a content event, and the usage event) split into two network writes at every
   byte offset, with ``\\n`` and with ``\\r\\n`` line ends, whether costkit or the caller asked for
   usage: the caller's bytes are unchanged and the row is exact;
3. ``\\r\\n`` line ends (within 2, and with a field line after the data line); and a body whose
   last event lacks its blank line (``data: [DONE]``, or the usage chunk costkit asked for, which
   must still stay home);
4. a malformed ``data: {"choices": [}`` line after the response id is known makes the row
   ``partial`` (in its own network write or sharing one), for a raw client as for the SDK; and an
   error event that shares a network write with other events is seen;
5. ``stream_options`` present without ``include_usage`` (``{}``, ``include_usage: false``, other
   options, ``null``): costkit still asks for usage, keeps the caller's other options and hides
   the usage chunk;
6. the fallback row when accounting itself fails (plain, streamed, HTTP error, blocked);
7. the ``X-Costkit-Tags`` header is never forwarded on non-chat endpoints (sync and async
   transports, SDK and raw clients), nor on a chat request costkit could not begin to account for.

Already pinned elsewhere, each checked by a mutation of the product code that a test there kills:
an unknown model recorded unpriced (``test_intercept_usage.py``), a response body that is not
JSON (``test_intercept_hostile.py``), a malformed ``X-Costkit-Tags`` header
(``test_intercept_hooks_secrets_tags.py``), ``\\r\\n`` framing (``test_intercept_hostile.py``).

Every figure is arithmetic written here from the published gpt-4.1 prices (2000 / 500 / 8000
nano-USD per input / cached input / output token) and token counts from plain tiktoken
(``tests/reference_counts.py``), never from costkit's own pricing.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import openai
import pytest

import costkit
from costkit.intercept import accounting, transports
from tests.fakeupstream import FakeUpstream
from tests.reference_counts import count_prompt, count_text
from tests.scripted_upstream import Answer, ScriptedUpstream

INPUT, CACHED, OUTPUT = 2000, 500, 8000  # nano-USD per token, gpt-4.1
MODEL = "gpt-4.1"
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the weather in Zürich, and the time there?"},
]
PROMPT = count_prompt({"model": MODEL, "messages": MESSAGES})  # plain tiktoken, the cookbook's rules
API_KEY = "sk-test-paths"


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def ledger(tmp_path: Any) -> Iterator[costkit.Ledger]:
    with costkit.Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as book:
        yield book


def rows(ledger: costkit.Ledger) -> list[dict[str, Any]]:
    assert ledger.flush(timeout=30)
    return ledger.rows()


def sdk(base_url: str, ledger: costkit.Ledger | None = None) -> openai.OpenAI:
    """The official SDK (on httpx2, its own stack), wrapped by costkit unless ``ledger`` is None."""
    client = openai.OpenAI(base_url=base_url, api_key=API_KEY, max_retries=0)
    return client if ledger is None else costkit.wrap(client, ledger=ledger)


# -- SSE as a provider writes it ------------------------------------------------------------------

MISSING: Any = object()


def event(payload: dict[str, Any] | bytes, end: bytes = b"\n\n") -> bytes:
    """One SSE event: ``data: <compact JSON>`` and a blank line (``end``: ``\\n\\n`` or ``\\r\\n\\r\\n``)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload, separators=(",", ":")).encode()
    return b"data: " + data + end


def chunk(
    choices: list[Any], asked: bool, usage: Any = MISSING, response_id: str = "chatcmpl-paths"
) -> dict[str, Any]:
    """A ``chat.completion.chunk``; a provider asked for usage puts ``"usage":null`` on every chunk."""
    data: dict[str, Any] = {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": 1_744_316_542,
        "model": MODEL,
        "system_fingerprint": "fp_paths",
        "choices": choices,
    }
    if usage is not MISSING:
        data["usage"] = usage
    elif asked:
        data["usage"] = None
    return data


def delta(content: dict[str, Any], finish: str | None = None, index: int = 0) -> dict[str, Any]:
    return {"index": index, "delta": content, "logprobs": None, "finish_reason": finish}


def asked_for_usage(request: dict[str, Any] | None) -> bool:
    options = (request or {}).get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def sse(pieces: tuple[bytes, ...]) -> Answer:
    return Answer(content_type="text/event-stream; charset=utf-8", pieces=pieces, chunked=True)


def raw_stream(base_url: str, ledger: costkit.Ledger | None, caller_asked: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "stream": True}
    if caller_asked:
        body["stream_options"] = {"include_usage": True}
    client = httpx2.Client() if ledger is None else costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        return b"".join(response.iter_raw())


# 1. Tool calls in the output estimate, without usage --------------------------------------------

WEATHER = ("get_weather", '{"city":"Zürich","unit":"celsius"}')
CLOCK = ("get_local_time", '{"timezone":"Europe/Zurich"}')


def test_a_plain_answer_without_usage_counts_its_tool_calls_into_the_output(scripted, ledger):
    calls = [
        {"id": f"call_{i}", "type": "function", "function": {"name": name, "arguments": arguments}}
        for i, (name, arguments) in enumerate((WEATHER, CLOCK))
    ]
    reply = {
        "id": "chatcmpl-tools-json",
        "object": "chat.completion",
        "created": 1_744_316_542,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": None, "tool_calls": calls},
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
    }  # and no "usage"
    scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    answer = sdk(scripted.base_url, ledger).chat.completions.create(model=MODEL, messages=MESSAGES)
    got = [(c.function.name, c.function.arguments) for c in answer.choices[0].message.tool_calls]
    assert got == [WEATHER, CLOCK]
    (row,) = rows(ledger)
    # each call's name and arguments, as costkit counts them (the text is None)
    output = count_text("get_weather" + WEATHER[1]) + count_text("get_local_time" + CLOCK[1])
    assert (row["status"], row["usage_source"], row["stream"]) == ("ok", "estimated", False)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (PROMPT, 0, output)
    assert row["cost_nanousd"] == PROMPT * INPUT + output * OUTPUT
    assert "no usage from the provider" in row["notes"]


def tool_stream_events(_request: dict[str, Any] | None) -> Answer:
    """Text, then two parallel tool calls whose arguments arrive in fragments; no usage chunk
    (a provider that ignores ``stream_options``)."""
    events = [
        chunk([delta({"role": "assistant", "content": ""})], False),
        chunk([delta({"content": "Checking both."})], False),
    ]
    for index, (name, arguments) in enumerate((WEATHER, CLOCK)):
        first = {"index": index, "id": f"call_{index}", "type": "function"}
        first["function"] = {"name": name, "arguments": ""}
        events.append(chunk([delta({"tool_calls": [first]})], False))
        for at in range(0, len(arguments), 5):
            fragment = {"index": index, "function": {"arguments": arguments[at : at + 5]}}
            events.append(chunk([delta({"tool_calls": [fragment]})], False))
    events.append(chunk([delta({}, "tool_calls")], False))
    return sse((*(event(e) for e in events), event(b"[DONE]")))


def test_a_stream_without_usage_counts_its_tool_call_fragments_into_the_output(scripted, ledger):
    scripted.render = tool_stream_events
    stream = sdk(scripted.base_url, ledger).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    text, arguments = "", ["", ""]
    for part in stream:
        text += part.choices[0].delta.content or ""
        for call in part.choices[0].delta.tool_calls or ():
            arguments[call.index] += call.function.arguments or ""
    assert (text, arguments) == ("Checking both.", [WEATHER[1], CLOCK[1]])
    assert asked_for_usage(scripted.received[-1].json)  # costkit asked; this provider did not answer
    (row,) = rows(ledger)
    output = count_text("Checking both.") + count_text("get_weather" + WEATHER[1])
    output += count_text("get_local_time" + CLOCK[1])
    assert (row["status"], row["usage_source"], row["stream"]) == ("ok", "estimated", True)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (PROMPT, 0, output)
    assert row["cost_nanousd"] == PROMPT * INPUT + output * OUTPUT


# 2-3. An event split across network writes at every byte, \n and \r\n ---------------------------

SPLIT_USAGE = {
    "prompt_tokens": 1234,
    "completion_tokens": 56,
    "prompt_tokens_details": {"cached_tokens": 1024},
}


def split_stream(asked: bool, end: bytes, response_id: str) -> list[bytes]:
    """The stream's events as the provider makes them: the usage chunk only when asked."""
    events = [
        chunk([delta({"role": "assistant", "content": ""})], asked, response_id=response_id),
        chunk([delta({"content": "Grüezi, it is 14°C."})], asked, response_id=response_id),
        chunk([delta({}, "stop")], asked, response_id=response_id),
    ]
    if asked:
        events.append(chunk([], asked, usage=SPLIT_USAGE, response_id=response_id))
    return [*(event(e, end) for e in events), event(b"[DONE]", end)]


def split_render(request: dict[str, Any] | None, end: bytes, which: int, at: int, response_id: str) -> Answer:
    """The stream with event ``which`` cut into two network writes at byte ``at``."""
    events = split_stream(asked_for_usage(request), end, response_id)
    return sse((*events[:which], events[which][:at], events[which][at:], *events[which + 1 :]))


@pytest.mark.parametrize("caller_asked", [False, True], ids=["costkit asked for usage", "the caller asked"])
@pytest.mark.parametrize("end", [b"\n\n", b"\r\n\r\n"], ids=["lf", "crlf"])
def test_an_event_split_at_every_byte_reaches_the_caller_unchanged_and_the_row_exact(
    scripted, ledger, end, caller_asked
):
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "stream": True}
    if caller_asked:
        body["stream_options"] = {"include_usage": True}
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    url = f"{scripted.base_url}/chat/completions"
    sent: list[str] = []
    for which in (1, 3):  # the content event, and the usage event (costkit asks when the caller did not)
        size = len(split_stream(True, end, f"chatcmpl-{which}-0000")[which])
        for at in range(1, size):
            response_id = f"chatcmpl-{which}-{at:04d}"
            scripted.render = functools.partial(
                split_render, end=end, which=which, at=at, response_id=response_id
            )
            with client.stream("POST", url, json=body) as response:
                got = b"".join(response.iter_raw())
            assert got == b"".join(split_stream(caller_asked, end, response_id)), (which, at)
            sent.append(response_id)
    found = {row["response_id"]: row for row in rows(ledger)}
    assert sorted(found) == sorted(sent)
    prompt, cached, completion = 1234, 1024, 56
    for row in found.values():
        assert (row["status"], row["usage_source"]) == ("ok", "provider"), row
        assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (
            prompt,
            cached,
            completion,
        )
        assert row["cost_nanousd"] == (prompt - cached) * INPUT + cached * CACHED + completion * OUTPUT


def test_crlf_events_with_a_field_after_the_data_line_are_read(scripted, ledger):
    """``data: {...}\\r\\nid: 7\\r\\n\\r\\n``: the data line's own ``\\r`` is not part of its JSON."""

    def render(request: dict[str, Any] | None) -> Answer:
        lines = split_stream(asked_for_usage(request), b"", "chatcmpl-crlf")  # data lines
        return sse(tuple(line + b"\r\nid: %d\r\n\r\n" % i for i, line in enumerate(lines)))

    scripted.render = render
    stream = sdk(scripted.base_url, ledger).chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Grüezi, it is 14°C."
    assert all(c.choices for c in chunks)  # the usage chunk costkit asked for stayed home
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["response_id"]) == ("ok", "provider", "chatcmpl-crlf")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (1234, 1024, 56)
    assert row["cost_nanousd"] == (1234 - 1024) * INPUT + 1024 * CACHED + 56 * OUTPUT


@pytest.mark.parametrize("caller_asked", [False, True], ids=["costkit asked for usage", "the caller asked"])
@pytest.mark.parametrize("last", ["[DONE]", "usage chunk"])
def test_a_last_event_without_its_blank_line_is_read_and_forwarded_as_the_caller_expects(
    scripted, ledger, last, caller_asked
):
    """The body ends right after the last event's data line: ``data: [DONE]``, or (from a server
    that sends no ``[DONE]``) the usage chunk, which must still stay home when costkit asked for it."""

    def lines(asked: bool) -> list[bytes]:
        events = split_stream(asked, b"", "chatcmpl-unended")
        return events if last == "[DONE]" else events[:-1]

    scripted.render = lambda request: sse((b"\n\n".join(lines(asked_for_usage(request))),))
    got = raw_stream(scripted.base_url, ledger, caller_asked)
    if caller_asked:
        expected = b"\n\n".join(lines(True))  # untouched
    elif last == "[DONE]":
        expected = b"\n\n".join(lines(False))  # what the bare client reads, to the last byte
    else:  # every event the bare client reads, each with the blank line that ended it upstream
        expected = b"".join(line + b"\n\n" for line in lines(False))
    assert got == expected
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["response_id"]) == ("ok", "provider", "chatcmpl-unended")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (1234, 1024, 56)
    assert row["cost_nanousd"] == (1234 - 1024) * INPUT + 1024 * CACHED + 56 * OUTPUT


# 4. A malformed line after the response id is known ---------------------------------------------

MALFORMED = b'data: {"choices": [}\n\n'
USAGE = {"prompt_tokens": 321, "completion_tokens": 12}


def stream_with(extra: bytes, shared_write: bool) -> Any:
    """A stream whose third event is ``extra``: in its own network write, or sharing one with its
    neighbours (as a proxy that buffers does)."""

    def render(request: dict[str, Any] | None) -> Answer:
        asked = asked_for_usage(request)
        events = [
            event(chunk([delta({"role": "assistant", "content": ""})], asked)),
            event(chunk([delta({"content": "Hello"})], asked)),
            extra,
            event(chunk([delta({"content": " there."})], asked)),
            event(chunk([delta({}, "stop")], asked)),
        ]
        if asked:
            events.append(event(chunk([], asked, usage=USAGE)))
        events.append(event(b"[DONE]"))
        if shared_write:
            events[1:4] = [b"".join(events[1:4])]
        return sse(tuple(events))

    return render


# A chunk with a form feed after it: JSON allows only space, tab, CR and LF around a value, so the
# SDK's json.loads fails on it ("Extra data") as it does on the unclosed array.
FORM_FEED = b'data: {"id":"chatcmpl-paths","object":"chat.completion.chunk","choices":[]}\x0c\n\n'


@pytest.mark.parametrize("caller_asked", [False, True], ids=["costkit asked for usage", "the caller asked"])
@pytest.mark.parametrize("shared_write", [False, True], ids=["own write", "shared write"])
@pytest.mark.parametrize("malformed", [MALFORMED, FORM_FEED], ids=["unclosed array", "form feed"])
def test_a_malformed_line_after_the_id_makes_a_raw_clients_row_partial(
    scripted, ledger, shared_write, caller_asked, malformed
):
    scripted.render = stream_with(malformed, shared_write)
    got = raw_stream(scripted.base_url, ledger, caller_asked)
    assert got == raw_stream(scripted.base_url, None, caller_asked)  # forwarded as the bare client reads it
    assert malformed in got
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["response_id"]) == (
        "partial",
        "provider",
        "chatcmpl-paths",
    )
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (321, 0, 12)
    assert row["cost_nanousd"] == 321 * INPUT + 12 * OUTPUT


def test_a_malformed_line_after_the_id_is_the_sdks_error_and_a_partial_row(scripted, ledger):
    scripted.render = stream_with(MALFORMED, shared_write=False)
    with pytest.raises(Exception) as bare:
        list(sdk(scripted.base_url).chat.completions.create(model=MODEL, messages=MESSAGES, stream=True))
    with pytest.raises(Exception) as wrapped:
        list(
            sdk(scripted.base_url, ledger).chat.completions.create(
                model=MODEL, messages=MESSAGES, stream=True
            )
        )
    assert type(wrapped.value) is type(bare.value)
    (row,) = rows(ledger)
    assert row["status"] == "partial"
    # the caller's read ended at the malformed line, before the usage chunk: costkit's own counts
    output = count_text("Hello")
    assert (row["usage_source"], row["input_tokens"], row["output_tokens"]) == ("estimated", PROMPT, output)
    assert row["cost_nanousd"] == PROMPT * INPUT + output * OUTPUT


def test_usage_on_the_last_content_chunk_is_read_whatever_precedes_it(scripted, ledger):
    """A provider that puts a short usage object on its last content chunk (no usage-only chunk, no
    [DONE]), after a choice whose last key is the delta: the provider's counts reach the row."""

    def render(request: dict[str, Any] | None) -> Answer:
        assert asked_for_usage(request)
        last = {"index": 0, "finish_reason": "stop", "delta": {"content": None}}  # ...null}}],"usage":
        return sse(
            (
                event(chunk([delta({"role": "assistant", "content": "Sunny"})], True)),
                event(chunk([last], True, usage=USAGE)),
            )
        )

    scripted.render = render
    got = raw_stream(scripted.base_url, ledger, caller_asked=True)
    assert got.endswith(b'null}}],"usage":{"prompt_tokens":321,"completion_tokens":12}}\n\n')
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("ok", "provider")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (321, 0, 12)
    assert row["cost_nanousd"] == 321 * INPUT + 12 * OUTPUT


def test_an_error_event_sharing_a_network_write_with_other_events_is_seen(scripted, ledger):
    error = event({"error": {"message": "The model overloaded mid-stream.", "type": "server_error"}})
    scripted.render = stream_with(error, shared_write=True)
    got = raw_stream(scripted.base_url, ledger, caller_asked=False)
    assert got == raw_stream(scripted.base_url, None, caller_asked=False) and error in got
    (row,) = rows(ledger)
    assert (row["status"], row["error"]) == ("partial", "The model overloaded mid-stream.")
    assert (row["usage_source"], row["input_tokens"], row["output_tokens"]) == ("provider", 321, 12)
    assert row["cost_nanousd"] == 321 * INPUT + 12 * OUTPUT


# 5. stream_options without include_usage --------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"include_usage": False}, {"include_obfuscation": True}, None],
    ids=["empty", "include_usage false", "other options", "null"],
)
def test_stream_options_without_include_usage_still_gets_usage_and_keeps_the_callers_options(
    fake, ledger, options
):
    fake.reset()
    usage = {
        "prompt_tokens": 2006,
        "completion_tokens": 300,
        "prompt_tokens_details": {"cached_tokens": 1920},
    }
    stream = sdk(fake.base_url, ledger).chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        extra_body={"stream_options": options},
        extra_headers={"X-Fake-Scenario": "sse", "X-Fake-Usage": json.dumps(usage)},
    )
    chunks = list(stream)
    assert chunks and all(c.choices and c.usage is None for c in chunks)  # the usage chunk stayed home
    if options and options.get("include_obfuscation"):
        assert all(getattr(c, "obfuscation", None) for c in chunks)  # the caller's option was honoured
    sent = fake.requests[-1].json["stream_options"]
    assert sent == {**(options or {}), "include_usage": True}
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("ok", "provider")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (2006, 1920, 300)
    assert row["cost_nanousd"] == (2006 - 1920) * INPUT + 1920 * CACHED + 300 * OUTPUT == 3_532_000


# 6. The fallback row when accounting itself fails ------------------------------------------------


def _accounting_fails(*_args: object) -> None:
    raise RuntimeError("costkit bug under test")


@pytest.mark.parametrize("path", ["plain", "stream", "http error", "blocked"])
def test_when_accounting_itself_fails_a_fallback_row_is_kept_and_the_caller_is_untouched(
    scripted, ledger, monkeypatch, caplog, path
):
    caplog.set_level(logging.DEBUG, logger="costkit")
    reply = {
        "id": "chatcmpl-fallback",
        "object": "chat.completion",
        "created": 1_744_316_542,
        "model": MODEL,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 40, "completion_tokens": 2},
    }
    streamed = (event(chunk([delta({"content": "Hi."})], False)), event(b"[DONE]"))
    if path == "http error":
        failure = {"error": {"message": "Rate limit reached", "type": "rate_limit_exceeded"}}
        scripted.render = lambda _request: Answer(status=429, pieces=(json.dumps(failure).encode(),))
    elif path == "stream":
        scripted.render = lambda _request: sse(streamed)
    else:
        scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    monkeypatch.setattr(accounting.Call, "_row", _accounting_fails)
    client = sdk(scripted.base_url, ledger).with_options(default_headers={"X-Costkit-Tags": "team=search"})
    create = client.chat.completions.create
    if path == "plain":
        assert create(model=MODEL, messages=MESSAGES).choices[0].message.content == "Hi."
    elif path == "stream":
        stream = create(model=MODEL, messages=MESSAGES, stream=True)
        assert [part.choices[0].delta.content for part in stream] == ["Hi."]
    elif path == "http error":
        with pytest.raises(openai.RateLimitError):
            create(model=MODEL, messages=MESSAGES)
    else:
        with pytest.raises(costkit.ContextWindowExceeded):
            create(model=MODEL, messages=[{"role": "user", "content": "costkit " * 1_100_000}], max_tokens=10)
    (row,) = rows(ledger)
    status = {"plain": "ok", "stream": "ok", "http error": "error", "blocked": "blocked"}[path]
    assert (row["status"], row["model"], row["endpoint_host"]) == (status, MODEL, "127.0.0.1")
    assert (row["error"], row["cost_nanousd"], row["price_id"]) == ("costkit accounting failed", 0, None)
    http_status = {"plain": 200, "stream": 200, "http error": 429, "blocked": None}[path]
    assert (row["http_status"], row["stream"], row["tags"]) == (
        http_status,
        path == "stream",
        {"team": "search"},
    )
    assert f"accounting failed for request {row['request_id']}" in caplog.text


# 7. The tags header never leaves on other endpoints ----------------------------------------------


def test_the_tags_header_is_removed_on_other_endpoints_by_every_transport(fake, ledger):
    fake.reset()
    tags = {"X-Costkit-Tags": "team=search"}
    listed = [m.id for m in sdk(fake.base_url, ledger).models.list(extra_headers=tags)]
    costkit.wrap(httpx.Client(), ledger=ledger).get(f"{fake.base_url}/models", headers=tags)

    async def main() -> list[str]:
        client = costkit.wrap(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0), ledger=ledger
        )
        models = await client.models.list(extra_headers=tags)
        async with costkit.wrap(httpx.AsyncClient(), ledger=ledger) as raw:
            await raw.get(f"{fake.base_url}/models", headers=tags)
        return [m.id async for m in models]

    assert "openai/gpt-4.1" in listed and listed == asyncio.run(main())
    assert [r.path for r in fake.requests] == ["/v1/models"] * 4
    assert [r.header("x-costkit-tags") for r in fake.requests] == [None] * 4
    assert rows(ledger) == []


STORED_ID = "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcX"  # a stored completion's id


def stored_completions_api(request: dict[str, Any] | None) -> Answer:
    """The provider's other endpoints beside chat completions: embeddings, and the stored-completions
    list (a GET) and update (a POST to ``/chat/completions/{id}``); each answer carries usage-like data."""
    completion = {
        "id": STORED_ID,
        "object": "chat.completion",
        "created": 1_744_316_542,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Sunny, 14:05.", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290},
    }
    if request is None:  # GET /chat/completions: the list of stored completions
        body: dict[str, Any] = {
            "object": "list",
            "data": [completion],
            "first_id": STORED_ID,
            "last_id": STORED_ID,
            "has_more": False,
        }
    elif "input" in request:
        body = {
            "object": "list",
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5]}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 7, "total_tokens": 7},
        }
    else:  # an update, or a chat completion (the same answer: only the path tells them apart)
        body = completion
    return Answer(pieces=(json.dumps(body).encode(),))


def test_only_a_post_to_chat_completions_is_accounted(scripted, ledger):
    """Listing, updating (a POST to ``/chat/completions/{id}``) and embeddings are not chat requests:
    no row; a chat completions path written with a trailing slash is one."""
    scripted.render = stored_completions_api
    del scripted.received[:]
    client = sdk(scripted.base_url, ledger)
    assert [c.id for c in client.chat.completions.list()] == [STORED_ID]
    assert client.chat.completions.update(STORED_ID, metadata={"team": "search"}).id == STORED_ID
    assert client.embeddings.create(model="text-embedding-3-small", input="Zürich").usage.prompt_tokens == 7
    assert rows(ledger) == []
    raw = costkit.wrap(httpx.Client(), ledger=ledger)
    answer = raw.post(f"{scripted.base_url}/chat/completions/", json={"model": MODEL, "messages": MESSAGES})
    assert answer.json()["id"] == STORED_ID
    assert [(r.method, r.path) for r in scripted.received] == [
        ("GET", "/v1/chat/completions"),
        ("POST", f"/v1/chat/completions/{STORED_ID}"),
        ("POST", "/v1/embeddings"),
        ("POST", "/v1/chat/completions/"),
    ]
    (row,) = rows(ledger)
    assert (row["response_id"], row["status"], row["usage_source"]) == (STORED_ID, "ok", "provider")
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (1234, 0, 56)
    assert row["cost_nanousd"] == 1234 * INPUT + 56 * OUTPUT


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_tags_header_is_removed_when_costkit_could_not_begin_to_account(fake, ledger, monkeypatch, mode):
    fake.reset()
    monkeypatch.setattr(transports, "start_call", _accounting_fails)
    headers = {"X-Costkit-Tags": "team=search", "X-Fake-Scenario": "json"}
    if mode == "sync":
        reply = sdk(fake.base_url, ledger).chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=headers
        )
    else:
        client = costkit.wrap(
            openai.AsyncOpenAI(base_url=fake.base_url, api_key=API_KEY, max_retries=0), ledger=ledger
        )
        reply = asyncio.run(
            client.chat.completions.create(model=MODEL, messages=MESSAGES, extra_headers=headers)
        )
    assert reply.choices[0].message.content
    (sent,) = fake.requests
    assert sent.path == "/v1/chat/completions" and sent.header("x-costkit-tags") is None
    assert sent.json == {"model": MODEL, "messages": MESSAGES}  # sent as is


def test_a_read_of_many_events_cut_mid_event_still_finds_a_usage_chunk_inside_it(scripted, ledger):
    """A fast network hands the reader hundreds of events a read (the proxy reads 64 KiB at a time);
    such a read is passed without parsing each event only when none of them carries usage: here
    the usage chunk comes before the last ordinary chunk of the read."""

    def render(request: dict[str, Any] | None) -> Answer:
        asked = asked_for_usage(request)
        events = [
            event(chunk([delta({"role": "assistant", "content": ""})], asked)),
            event(chunk([delta({"content": "Hello"})], asked)),
            *([event(chunk([], asked, usage=USAGE))] if asked else []),
            event(chunk([delta({"content": " there."})], asked)),
            event(chunk([delta({}, "stop")], asked)),
        ]
        body = b"".join(events)
        cut = len(events[0]) + 20  # the second read starts inside the second event
        return sse((body[:cut], body[cut:], event(b"[DONE]")))

    scripted.render = render
    got = raw_stream(scripted.base_url, ledger, caller_asked=False)
    assert got == raw_stream(scripted.base_url, None, caller_asked=False)  # the usage chunk stayed home
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("ok", "provider")
    assert (row["input_tokens"], row["output_tokens"], row["cost_nanousd"]) == (
        321,
        12,
        321 * INPUT + 12 * OUTPUT,
    )
