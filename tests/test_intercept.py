"""The interceptor, driven by the official openai SDK against a real server on 127.0.0.1.

Every test reads its rows back from a real SQLite ledger file. The fake upstream disagrees
with costkit's own counts (a prompt offset that changes per request, hidden reasoning tokens,
a warm prompt cache), so a row that took the provider's numbers and a row that took costkit's
estimate look different; each row is checked against the usage the fake recorded as sent, and
its cost against the published gpt-4.1 prices written out below, never against costkit's own
pricing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading

import httpx
import httpx2
import openai
import pytest

import costkit
from costkit import ContextWindowExceeded, Ledger
from tests.fakeupstream import FakeUpstream, count_completion, count_prompt, count_text

BODY_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Name three prime numbers."},
]
INPUT, CACHED, OUTPUT = 2000, 500, 8000
"""nano-USD per token for gpt-4.1: $2.00 input, $0.50 cached input, $8.00 output per million."""


@pytest.fixture(scope="module")
def upstream():
    with FakeUpstream() as server:
        yield server


@pytest.fixture
def ledger(tmp_path):
    book = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    yield book
    book.close()


def rows(ledger: Ledger) -> list[dict]:
    assert ledger.flush(timeout=30)
    frame = ledger.frame()
    return frame.sort_values("started_at").to_dict("records")


def sdk(upstream, ledger, stack: str = "httpx2", **options):
    """An OpenAI client wrapped by costkit on the chosen HTTP stack."""
    if stack == "httpx2":
        client = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test-SECRET", max_retries=0)
    else:
        client = openai.OpenAI(
            base_url=upstream.base_url, api_key="sk-test-SECRET", max_retries=0, http_client=httpx.Client()
        )
    return costkit.wrap(client, ledger=ledger, **options)


def create(client, scenario: str, headers: dict | None = None, **kwargs):
    return client.chat.completions.create(
        model="openai/gpt-4.1",
        messages=BODY_MESSAGES,
        extra_headers={"X-Fake-Scenario": scenario, **(headers or {})},
        **kwargs,
    )


def expected_prompt(**body) -> int:
    """The prompt as counted by the cookbook rules: what costkit estimates (the provider says more)."""
    return count_prompt({"model": "openai/gpt-4.1", "messages": BODY_MESSAGES, **body})


def nano(input_tokens: int, cached: int, output: int) -> int:
    """The published prices, written out: uncached input, cached input and output, each at its rate."""
    return (input_tokens - cached) * INPUT + cached * CACHED + output * OUTPUT


def reported(request) -> tuple[int, int, int]:
    """(prompt, cached, completion) tokens of the usage the fake sent with a recorded request."""
    usage = request.usage
    return usage["prompt_tokens"], usage["prompt_tokens_details"]["cached_tokens"], usage["completion_tokens"]


def assert_row_charged(row: dict, tokens: tuple[int, int, int], source: str = "provider") -> None:
    """The row holds exactly these (input, cached, output) tokens from ``source``, at the published prices."""
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == tokens
    assert row["usage_source"] == source
    assert row["cost_nanousd"] == nano(*tokens)
    assert row["price_id"] == "gpt-4.1@2025-04-14"


def assert_row_from_provider(row: dict, request, visible_output: int | None = None) -> None:
    """The row holds the usage the fake sent with ``request``, priced, and it is not costkit's estimate:
    the input differs from the row's own estimate, the output from ``visible_output`` (the reply's
    tokens as costkit would count them)."""
    tokens = reported(request)
    assert_row_charged(row, tokens)
    assert row["response_id"] == request.response_id
    assert tokens[0] != row["estimated_input_tokens"]
    if visible_output is not None:
        assert tokens[2] != visible_output


# Plain responses ----------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["httpx2", "httpx"])
def test_plain_response_is_recorded_from_provider_usage(upstream, ledger, stack):
    client = sdk(upstream, ledger, stack)
    reply = create(client, "json", stream=False)
    (row,) = rows(ledger)
    prompt = expected_prompt(stream=False)
    visible = count_completion(reply.choices[0].message.content).tokens
    sent = upstream.requests[-1]
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (
        sent.usage["prompt_tokens"],
        sent.usage["completion_tokens"],
    )
    assert (row["status"], row["stream"]) == ("ok", False)
    assert row["estimated_input_tokens"] == prompt  # costkit's own count; the provider said more
    assert_row_from_provider(row, sent, visible)
    assert row["response_id"] == reply.id
    assert row["model"] == "gpt-4.1"
    assert row["endpoint_host"] == "127.0.0.1"
    assert row["http_status"] == 200


def test_cached_tokens_are_charged_at_the_cached_rate(upstream, ledger):
    upstream.extra_prompt_tokens, upstream.cached_tokens = 2000, 1920
    try:
        create(sdk(upstream, ledger), "json", stream=False)
    finally:
        upstream.extra_prompt_tokens, upstream.cached_tokens = 0, None
    (row,) = rows(ledger)
    sent = upstream.requests[-1]
    prompt, cached, completion = reported(sent)
    assert cached == 1920 and prompt > expected_prompt(stream=False) + 2000  # the offset, on top
    assert_row_from_provider(row, sent)
    assert row["cost_nanousd"] == (prompt - 1920) * 2000 + 1920 * 500 + completion * 8000


def test_x_metrics_are_kept(upstream, ledger):
    create(sdk(upstream, ledger), "json_x_metrics", stream=False)
    (row,) = rows(ledger)
    assert set(row["x_metrics"]) == {"ttft_seconds", "tps", "total_time_seconds"}
    assert_row_from_provider(row, upstream.requests[-1])


def test_plain_response_without_usage_is_estimated(upstream, ledger):
    reply = create(sdk(upstream, ledger), "json_no_usage", stream=False)
    (row,) = rows(ledger)
    prompt = expected_prompt(stream=False)
    output = count_completion(reply.choices[0].message.content).tokens
    assert upstream.requests[-1].usage is None
    assert_row_charged(row, (prompt, 0, output), "estimated")
    assert row["cost_nanousd"] == prompt * 2000 + output * 8000 > 0


def test_a_tool_call_reply_is_charged_the_providers_output_not_the_arguments_counted(upstream, ledger):
    client = sdk(upstream, ledger)
    reply = create(client, "json_tool_calls", stream=False)
    (row,) = rows(ledger)
    call = reply.choices[0].message.tool_calls[0]
    assert call.function.arguments
    visible = count_text(call.function.name) + count_text(call.function.arguments)
    assert_row_from_provider(row, upstream.requests[-1], visible)


# Streams ----------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["httpx2", "httpx"])
def test_stream_is_recorded_with_exact_usage_and_the_caller_never_sees_the_usage_chunk(
    upstream, ledger, stack
):
    upstream.reset()
    chunks = list(create(sdk(upstream, ledger, stack), "sse", stream=True))
    assert all(chunk.choices for chunk in chunks)  # no usage-only chunk reached the caller
    assert all(chunk.usage is None for chunk in chunks)
    sent = upstream.requests[-1]
    assert sent.json["stream_options"] == {"include_usage": True}  # costkit asked upstream for usage
    (row,) = rows(ledger)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert (row["status"], row["stream"]) == ("ok", True)
    assert row["estimated_input_tokens"] == expected_prompt(stream=True)
    assert_row_from_provider(row, sent, count_completion(text).tokens)
    assert row["ttft_us"] is not None and 0 < row["ttft_us"] <= row["latency_us"]


def test_a_caller_that_asked_for_usage_still_gets_its_usage_chunk(upstream, ledger):
    chunks = list(create(sdk(upstream, ledger), "sse", stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    (row,) = rows(ledger)
    sent = upstream.requests[-1]
    assert chunks[-1].usage.model_dump(exclude_none=True) == sent.usage  # the caller's, untouched
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_row_from_provider(row, sent, count_completion(text).tokens)


def test_usage_on_a_chunk_that_still_has_choices_is_accepted(upstream, ledger):
    chunks = list(create(sdk(upstream, ledger), "sse_usage_on_choice", stream=True))
    carried = [c.usage for c in chunks if c.usage is not None]
    (row,) = rows(ledger)
    sent = upstream.requests[-1]
    assert carried and carried[-1].completion_tokens == sent.usage["completion_tokens"]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_row_from_provider(row, sent, count_completion(text).tokens)


def test_stream_without_usage_is_estimated_from_its_deltas(upstream, ledger):
    chunks = list(create(sdk(upstream, ledger), "sse_no_usage", stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    (row,) = rows(ledger)
    assert row["status"] == "ok" and upstream.requests[-1].usage is None
    prompt, output = expected_prompt(stream=True), count_completion(text).tokens
    assert_row_charged(row, (prompt, 0, output), "estimated")
    assert row["cost_nanousd"] == prompt * 2000 + output * 8000 > 0


def test_streamed_tool_call_is_charged_the_providers_output(upstream, ledger):
    chunks = list(create(sdk(upstream, ledger), "sse_tool_calls", stream=True))
    (row,) = rows(ledger)
    calls = [tc.function for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or ())]
    arguments = "".join(f.arguments or "" for f in calls)
    assert json.loads(arguments)
    visible = count_text(calls[0].name) + count_text(arguments)
    assert_row_from_provider(row, upstream.requests[-1], visible)


def test_stream_cut_midway_reaches_the_caller_unchanged_and_is_recorded_partial(upstream, ledger):
    bare = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(Exception) as without:
        list(create(bare, "sse_cut", stream=True))
    seen: list = []
    with pytest.raises(Exception) as wrapped:
        for chunk in create(sdk(upstream, ledger), "sse_cut", stream=True):
            seen.append(chunk)
    assert type(wrapped.value) is type(without.value)
    (row,) = rows(ledger)
    text = "".join(c.choices[0].delta.content or "" for c in seen if c.choices)
    assert row["status"] == "partial" and upstream.requests[-1].usage is None  # cut before any usage
    prompt, output = expected_prompt(stream=True), count_completion(text).tokens
    assert text and output > 0
    assert_row_charged(row, (prompt, 0, output), "estimated")


def test_caller_closing_a_stream_early_is_recorded_partial(upstream, ledger):
    stream = create(sdk(upstream, ledger), "sse", stream=True)
    first = next(iter(stream))
    stream.close()
    (row,) = rows(ledger)
    assert first.choices
    assert row["status"] == "partial"
    # What costkit read before the close depends on how the socket delivered the events: the
    # output is at most the whole reply; the input is costkit's count; the cost is that arithmetic.
    prompt, output = expected_prompt(stream=True), row["output_tokens"]
    assert output <= count_completion(upstream.completion_text).tokens
    assert_row_charged(row, (prompt, 0, output), "estimated")


def test_malformed_stream_line_is_the_callers_error_and_a_partial_row(upstream, ledger):
    bare = openai.OpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0)
    with pytest.raises(Exception) as without:
        list(create(bare, "sse_malformed", stream=True))
    with pytest.raises(Exception) as wrapped:
        list(create(sdk(upstream, ledger), "sse_malformed", stream=True))
    assert type(wrapped.value) is type(without.value)
    (row,) = rows(ledger)
    assert row["status"] == "partial"
    # The caller stopped at the bad line; how far costkit's copy got depends on the socket's reads.
    prompt, output = expected_prompt(stream=True), row["output_tokens"]
    assert output <= count_completion(upstream.completion_text).tokens
    assert_row_charged(row, (prompt, 0, output), "estimated")


def test_provider_streams_by_default_and_costkit_reads_the_response(upstream, ledger):
    client = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "openai/gpt-4.1", "messages": BODY_MESSAGES}  # no "stream": the provider streams
    with client.stream("POST", f"{upstream.base_url}/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        data = b"".join(response.iter_bytes())
    assert data.rstrip().endswith(b"data: [DONE]")
    (row,) = rows(ledger)
    assert row["stream"] is True or row["stream"] == 1
    # costkit did not ask for usage (the body did not say it streams), so none came: an estimate.
    assert row["status"] == "ok" and upstream.requests[-1].usage is None
    output = count_completion(upstream.completion_text).tokens
    assert_row_charged(row, (expected_prompt(), 0, output), "estimated")


def test_gzip_responses_are_read_on_the_side(upstream, ledger):
    client = sdk(upstream, ledger)
    reply = create(client, "json", headers={"X-Fake-Gzip": "1"}, stream=False)
    chunks = list(create(client, "sse", headers={"X-Fake-Gzip": "1"}, stream=True))
    plain, streamed = rows(ledger)
    assert upstream.requests[-2].header("accept-encoding") != "identity"  # the plain request is untouched
    assert_row_from_provider(plain, upstream.requests[-2], count_text(reply.choices[0].message.content))
    assert all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert_row_from_provider(streamed, upstream.requests[-1], count_text(text))
    raw = costkit.wrap(httpx.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": False}
    response = raw.post(f"{upstream.base_url}/chat/completions", json=body, headers={"X-Fake-Gzip": "1"})
    assert response.headers["content-encoding"] == "gzip"  # the side copy really was compressed
    assert response.json()["usage"] == upstream.requests[-1].usage
    assert_row_from_provider(rows(ledger)[-1], upstream.requests[-1])


# The bytes the caller reads -----------------------------------------------------------------

_VOLATILE = re.compile(rb'"(id|created|system_fingerprint)": ?("[^"]*"|\d+)')


def normalised(data: bytes) -> bytes:
    return _VOLATILE.sub(rb'"\1":"*"', data)


def read_raw(
    client: httpx.Client, upstream, scenario: str, body: dict, headers: dict | None = None
) -> tuple[int, bytes, str]:
    headers = {"X-Fake-Scenario": scenario, **(headers or {})}
    with client.stream(
        "POST", f"{upstream.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        return response.status_code, b"".join(response.iter_raw()), response.headers["content-type"]


@pytest.mark.parametrize(
    ("scenario", "body"),
    [
        ("json", {"stream": False}),
        ("json_x_metrics", {"stream": False}),
        ("sse", {"stream": True}),
        ("sse", {"stream": True, "stream_options": {"include_usage": True}}),
        ("sse_usage_on_choice", {"stream": True}),
        ("sse_tool_calls", {"stream": True}),
        ("status_429", {"stream": False}),
        ("status_500", {"stream": True}),
    ],
)
def test_the_caller_reads_the_same_bytes_with_and_without_costkit(upstream, ledger, scenario, body):
    body = {"model": "openai/gpt-4.1", "messages": BODY_MESSAGES, **body}
    same = {"X-Fake-Sequence": "1"}  # both answered as the same request: the same disagreeing usage
    bare = read_raw(httpx.Client(), upstream, scenario, body, same)
    wrapped = read_raw(costkit.wrap(httpx.Client(), ledger=ledger), upstream, scenario, body, same)
    assert (bare[0], bare[2]) == (wrapped[0], wrapped[2])
    assert normalised(bare[1]) == normalised(wrapped[1])
    (row,) = rows(ledger)
    sent = upstream.requests[-1]
    if bare[0] >= 400:
        assert (row["status"], row["output_tokens"], row["cost_nanousd"]) == ("error", 0, 0)
        assert row["input_tokens"] == row["estimated_input_tokens"] == expected_prompt()
    else:
        assert_row_from_provider(row, sent)


# Errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scenario", "error", "status"),
    [("status_429", openai.RateLimitError, 429), ("status_500", openai.InternalServerError, 500)],
)
def test_http_errors_reach_the_caller_and_are_recorded_at_zero_cost(
    upstream, ledger, scenario, error, status
):
    with pytest.raises(error) as caught:
        create(sdk(upstream, ledger), scenario, stream=False)
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"], row["cost_nanousd"]) == ("error", status, 0)
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (
        expected_prompt(stream=False),
        0,
        0,
    )
    assert row["usage_source"] == "estimated"
    assert caught.value.status_code == status
    assert row["error"].startswith(f"HTTP {status}")


def test_a_timeout_reaches_the_caller_and_is_recorded(upstream, ledger):
    upstream.delay = 2.0
    client = sdk(upstream, ledger).with_options(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        create(client, "slow", stream=False)
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"], row["cost_nanousd"]) == ("error", None, 0)
    assert "Timeout" in row["error"]


def test_a_refused_connection_reaches_the_caller_and_is_recorded(ledger):
    client = costkit.wrap(
        openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0), ledger=ledger
    )
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4.1", messages=BODY_MESSAGES)
    (row,) = rows(ledger)
    assert (row["status"], row["cost_nanousd"]) == ("error", 0)


def test_a_request_that_cannot_fit_is_refused_before_sending_and_recorded_blocked(upstream, ledger):
    upstream.reset()
    huge = [{"role": "user", "content": "costkit " * 1_100_000}]
    with pytest.raises(ContextWindowExceeded) as caught:
        sdk(upstream, ledger).chat.completions.create(model="openai/gpt-4.1", messages=huge, max_tokens=100)
    assert upstream.requests == []  # not a byte left
    assert caught.value.limit == 1_047_576
    assert caught.value.overflow == caught.value.tokens + 100 - 1_047_576 > 0
    (row,) = rows(ledger)
    assert (row["status"], row["cost_nanousd"], row["input_tokens"]) == ("blocked", 0, caught.value.tokens)


def test_other_endpoints_pass_through_untouched(upstream, ledger):
    models = sdk(upstream, ledger).models.list()
    assert any(m.id == "openai/gpt-4.1" for m in models)
    assert rows(ledger) == []


# Attribution ------------------------------------------------------------------------------


def test_tags_from_transport_context_and_header_are_merged_and_the_header_stays_home(upstream, ledger):
    upstream.reset()
    client = sdk(upstream, ledger, tags={"team": "platform", "feature": "summaries"})
    with costkit.tags(team="search", job="nightly-eval"):
        create(client, "json", headers={"X-Costkit-Tags": "user=42"}, stream=False)
    (row,) = rows(ledger)
    assert row["tags"] == {"team": "search", "feature": "summaries", "job": "nightly-eval", "user": "42"}
    assert upstream.requests[-1].header("x-costkit-tags") is None
    assert_row_from_provider(row, upstream.requests[-1])


def test_tags_follow_threads_and_asyncio_tasks(upstream, ledger):
    upstream.reset()
    client = sdk(upstream, ledger)

    def worker(name: str) -> None:
        with costkit.tags(worker=name):
            create(client, "json", stream=False)

    threads = [threading.Thread(target=worker, args=(f"t{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    async def main() -> None:
        aclient = costkit.wrap(
            openai.AsyncOpenAI(base_url=upstream.base_url, api_key="sk-test", max_retries=0), ledger=ledger
        )

        async def task(name: str) -> None:
            with costkit.tags(worker=name):
                await aclient.chat.completions.create(
                    model="gpt-4.1",
                    messages=BODY_MESSAGES,
                    stream=False,
                    extra_headers={"X-Fake-Scenario": "json"},
                )

        await asyncio.gather(*(task(f"a{i}") for i in range(4)))

    asyncio.run(main())
    found = rows(ledger)
    assert sorted(r["tags"]["worker"] for r in found) == ["a0", "a1", "a2", "a3", "t0", "t1", "t2", "t3"]
    sent = {request.response_id: request for request in upstream.requests}
    assert len(sent) == 8
    for row in found:  # each row has its own request's usage, not a neighbour's
        assert_row_from_provider(row, sent[row["response_id"]])
    assert len({r["input_tokens"] for r in found}) > 1  # the provider's offsets differ between requests


# Async ------------------------------------------------------------------------------------


@pytest.mark.parametrize("stack", ["httpx2", "httpx"])
def test_async_client_streamed_and_plain(upstream, ledger, stack):
    async def main() -> list:
        http_client = None if stack == "httpx2" else httpx.AsyncClient()
        client = openai.AsyncOpenAI(
            base_url=upstream.base_url,
            api_key="sk-test",
            max_retries=0,
            **({"http_client": http_client} if http_client else {}),
        )
        client = costkit.wrap(client, ledger=ledger)
        plain = await client.chat.completions.create(
            model="gpt-4.1", messages=BODY_MESSAGES, stream=False, extra_headers={"X-Fake-Scenario": "json"}
        )
        stream = await client.chat.completions.create(
            model="gpt-4.1", messages=BODY_MESSAGES, stream=True, extra_headers={"X-Fake-Scenario": "sse"}
        )
        chunks = [c async for c in stream]
        return [plain, chunks]

    plain, chunks = asyncio.run(main())
    found = rows(ledger)
    assert [r["stream"] for r in found] == [False, True]
    assert [r["status"] for r in found] == ["ok", "ok"]
    assert found[0]["response_id"] == plain.id
    assert all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert_row_from_provider(found[0], upstream.requests[-2], count_text(plain.choices[0].message.content))
    assert_row_from_provider(found[1], upstream.requests[-1], count_text(text))


def test_wrap_picks_the_stack_of_the_client_and_is_idempotent(ledger):
    sync2 = costkit.wrap(httpx2.Client(), ledger=ledger)
    assert type(sync2._transport).__module__ == "costkit.intercept.transports"
    assert isinstance(sync2._transport, costkit.Httpx2Transport)
    again = costkit.wrap(sync2, ledger=ledger)
    assert again._transport is sync2._transport
    assert isinstance(costkit.wrap(httpx.AsyncClient(), ledger=ledger)._transport, costkit.AsyncTransport)
    with pytest.raises(TypeError):
        costkit.wrap(object())


# No secrets -------------------------------------------------------------------------------


def test_the_api_key_is_never_written_anywhere(upstream, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "secret-test.sqlite"
    book = Ledger(f"sqlite:///{path}", store_text=True)
    client = costkit.wrap(
        openai.OpenAI(base_url=upstream.base_url, api_key="sk-live-TOPSECRET-123", max_retries=0), ledger=book
    )
    create(client, "json", stream=False)
    with pytest.raises(openai.RateLimitError):
        create(client, "status_429", stream=False)
    with pytest.raises(ContextWindowExceeded) as refused:
        client.chat.completions.create(
            model="gpt-4.1", messages=[{"role": "user", "content": "x " * 1_100_000}]
        )
    book.close()
    assert "TOPSECRET" not in str(refused.value)
    for file in tmp_path.rglob("*"):
        if file.is_file():
            assert b"TOPSECRET" not in file.read_bytes(), file
    assert "TOPSECRET" not in caplog.text


# The budget seam ---------------------------------------------------------------------------


def test_a_hook_can_refuse_before_sending_and_sees_every_settled_row(upstream, ledger):
    class Budget:
        def __init__(self) -> None:
            self.settled_rows: list = []

        def before_send(self, call) -> None:
            if call.tags.get("team") == "over-budget":
                raise costkit.RequestRefused("team over budget")

        def settled(self, call, row) -> None:
            self.settled_rows.append((row.status, row.cost_nanousd))

    budget = Budget()
    client = sdk(upstream, ledger, hooks=[budget])
    create(client, "json", stream=False)
    budget_usage = reported(upstream.requests[-1])
    upstream.reset()
    with costkit.tags(team="over-budget"), pytest.raises(costkit.RequestRefused):
        create(client, "json", stream=False)
    assert upstream.requests == []  # refused before a byte left
    found = rows(ledger)
    assert [r["status"] for r in found] == ["ok", "blocked"]
    prompt, cached, completion = budget_usage
    assert budget.settled_rows == [
        ("ok", (prompt - cached) * 2000 + cached * 500 + completion * 8000),
        ("blocked", 0),
    ]
    assert found[0]["cost_nanousd"] == budget.settled_rows[0][1]
