"""Paths of accounting.py and responses.py that mutation testing (issue 8, tests/MUTATION.md) found
unpinned, each through the real transport and the official SDK or a raw httpx2 client on 127.0.0.1.

Pinned here:

1. a refused request keeps the refusal's own text as its row's error, and a blocked stream says so;
2. a hook that fails is logged once per hook and exception type, with its traceback, redacted of the
   caller's own credential (one that is not key-shaped, which only the credential list can catch);
3. a compressed body that cannot be decoded: the caller's client raises as it would without costkit,
   and the row is ``partial``, estimated, with a note saying the rest was not read;
4. a failure of costkit's own while reading a stream (``passthrough``): the caller still gets every
   byte, exactly once, and the row is ``partial`` and estimated from what was read before.

Every figure is arithmetic written here from the published gpt-4.1 prices (2000 / 500 / 8000
nano-USD per input / cached input / output token) and token counts from plain tiktoken
(``tests/reference_counts.py``), never from costkit's own pricing.
"""

from __future__ import annotations

import json
import logging
import time
import zlib
from collections.abc import Iterator
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import httpx2
import openai
import pytest

import costkit
from costkit.intercept import accounting, responses
from costkit.intercept.responses import ResponseReader
from tests.reference_counts import count_prompt, count_text
from tests.scripted_upstream import Answer, ScriptedUpstream, split_at
from tests.test_intercept_paths import MESSAGES, MODEL, PROMPT, chunk, delta, event, rows, sse

INPUT, CACHED, OUTPUT = 2000, 500, 8000  # nano-USD per token, gpt-4.1
PLAIN_KEY = "swordfish-open-sesame"  # not key-shaped: only the caller's credential list redacts it


@pytest.fixture(scope="module")
def scripted() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream() as server:
        yield server


@pytest.fixture
def ledger(tmp_path: Any) -> Iterator[costkit.Ledger]:
    with costkit.Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}") as book:
        yield book


def sdk(base_url: str, ledger: costkit.Ledger, api_key: str = "sk-test-mutation", **options: Any) -> Any:
    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    return costkit.wrap(client, ledger=ledger, **options)


REPLY = {
    "id": "chatcmpl-mutation",
    "object": "chat.completion",
    "created": 1_744_316_542,
    "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi."}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 40, "completion_tokens": 2},
}


# 1. A refusal's text on its row -------------------------------------------------------------------


class Refuser:
    def before_send(self, call: Any) -> None:
        raise costkit.RequestRefused("team search is over its monthly budget")

    def settled(self, call: Any, row: Any) -> None:
        pass


@pytest.mark.parametrize("stream", [False, True])
def test_a_refused_request_keeps_the_refusals_text_and_its_input_estimate(scripted, ledger, stream):
    sent: list[Any] = []
    scripted.render = lambda request: sent.append(request) or Answer(pieces=(json.dumps(REPLY).encode(),))
    with pytest.raises(costkit.RequestRefused) as refused:
        sdk(scripted.base_url, ledger, hooks=[Refuser()]).chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=stream
        )
    assert str(refused.value) == "team search is over its monthly budget"
    assert sent == []  # not a byte left
    (row,) = rows(ledger)
    prompt = count_prompt({"model": MODEL, "messages": MESSAGES, "stream": stream})
    assert (row["status"], row["http_status"], row["stream"]) == ("blocked", None, stream)
    assert row["error"] == "team search is over its monthly budget"
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (prompt, 0, 0)
    assert (row["estimated_input_tokens"], row["usage_source"]) == (prompt, "estimated")
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)


# 2. A failing hook in the log ---------------------------------------------------------------------


class LeakyHookError(Exception):
    pass


class FirstFailingHook:
    """Raises on every ``before_send``: first a LeakyHookError naming the caller's key, then a KeyError."""

    def __init__(self) -> None:
        self.calls = 0

    def before_send(self, call: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("budget table")
        raise LeakyHookError(f"no budget for the key {PLAIN_KEY} (call {self.calls})")

    def settled(self, call: Any, row: Any) -> None:
        pass


class SecondFailingHook(FirstFailingHook):
    pass


def test_a_failing_hook_is_logged_once_per_hook_and_error_with_its_traceback_redacted(
    scripted, ledger, caplog
):
    caplog.set_level(logging.DEBUG, logger="costkit")
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    first, second = FirstFailingHook(), SecondFailingHook()
    client = sdk(scripted.base_url, ledger, api_key=PLAIN_KEY, hooks=[first, second])
    for _ in range(3):  # LeakyHookError, KeyError, LeakyHookError again from each hook
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES)
        assert reply.choices[0].message.content == "Hi."
    errors = [r for r in caplog.records if r.name == "costkit" and r.levelno == logging.ERROR]
    hook_errors = [r.getMessage() for r in errors if "FailingHook.before_send failed" in r.getMessage()]
    first_name = f"hook {FirstFailingHook.__qualname__}.before_send failed; accounting goes on"
    second_name = f"hook {SecondFailingHook.__qualname__}.before_send failed; accounting goes on"
    # each (hook, exception type) once with its traceback; the third round only at debug level
    assert [m.splitlines()[0] for m in hook_errors] == [
        f"costkit: {first_name}",
        f"costkit: {second_name}",
        f"costkit: {first_name}",
        f"costkit: {second_name}",
    ]
    assert "LeakyHookError: no budget for the key [redacted] (call 1)" in hook_errors[0]
    assert "KeyError: 'budget table'" in hook_errors[2]
    assert PLAIN_KEY not in caplog.text
    assert "(call 3)" not in caplog.text  # the repeat is one line, without the message
    found = rows(ledger)
    assert [r["status"] for r in found] == ["ok", "ok", "ok"]
    accounted = "failed (KeyError); the request was accounted anyway"
    assert found[1]["notes"] == (
        f"hook {FirstFailingHook.__qualname__}.before_send {accounted}"
        f"; hook {SecondFailingHook.__qualname__}.before_send {accounted}"
    )


class FailingSettledHook:
    """Raises on every ``settled``: a LeakyHookError naming the key, a KeyError, then the first again."""

    def __init__(self) -> None:
        self.calls = 0

    def before_send(self, call: Any) -> None:
        pass

    def settled(self, call: Any, row: Any) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("budget table")
        raise LeakyHookError(f"no budget for the key {PLAIN_KEY} (row {row.status}, call {self.calls})")


class CountingBug(RuntimeError):
    pass


def test_a_bug_in_costkits_own_count_is_logged_once_redacted_and_the_request_still_accounted(
    scripted, ledger, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="costkit")
    calls = iter(range(1, 10))

    def broken_preflight(*_args: Any, **_kwargs: Any) -> Any:
        call = next(calls)
        if call == 3:
            raise KeyError("encoding table")
        raise CountingBug(f"tokenizer state lost for {PLAIN_KEY} (call {call})")

    def refusing_count(_body: Any) -> Any:  # the count for the row fails too, as the caller's fault
        raise costkit.InvalidRequest("messages", "cannot be counted now")

    monkeypatch.setattr(accounting, "preflight", broken_preflight)
    monkeypatch.setattr(accounting, "count_request", refusing_count)
    scripted.render = lambda _request: Answer(pieces=(json.dumps(NO_USAGE).encode(),))
    client = sdk(scripted.base_url, ledger, api_key=PLAIN_KEY)
    for _ in range(3):  # CountingBug, CountingBug again, KeyError
        assert (
            client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == "Hi."
        )
    logged = [r.getMessage() for r in caplog.records if r.name == "costkit" and r.levelno == logging.ERROR]
    counted = [m for m in logged if m.startswith("costkit: could not count a request\n")]
    assert len(counted) == 2  # once per exception type, with its traceback; the repeat at debug level
    assert "CountingBug: tokenizer state lost for [redacted] (call 1)" in counted[0]
    assert "KeyError: 'encoding table'" in counted[1]
    assert PLAIN_KEY not in caplog.text and "(call 2)" not in caplog.text
    found = rows(ledger)  # sent, answered and recorded; why it is unpriced is the first failure
    assert [(r["status"], r["price_id"], r["cost_nanousd"]) for r in found] == [("ok", None, 0)] * 3
    assert [r["notes"].rsplit("; ", 1)[-1] for r in found] == [
        f"unpriced: input tokens unknown (costkit could not count the request ({kind}))"
        for kind in ("CountingBug", "CountingBug", "KeyError")
    ]


def test_accounting_failures_are_logged_once_per_type_and_the_fallback_row_keeps_its_start(
    scripted, ledger, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG, logger="costkit")
    failures = iter([KeyError("row field"), KeyError("row field"), ValueError("row value")])

    def failing_row(*_args: Any) -> Any:
        raise next(failures)

    def slow(_request: Any) -> Answer:
        time.sleep(0.3)  # the row is made at least this long after the request started
        return Answer(pieces=(json.dumps(REPLY).encode(),))

    monkeypatch.setattr(accounting.Call, "_row", failing_row)
    scripted.render = slow
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    starts = []
    for _ in range(3):
        starts.append(datetime.now().astimezone())
        client.post(f"{scripted.base_url}/chat/completions", json={"model": MODEL, "messages": MESSAGES})
    logged = [r.getMessage() for r in caplog.records if r.name == "costkit" and r.levelno == logging.ERROR]
    failed = [m for m in logged if "accounting failed for request" in m]
    assert len(failed) == 2  # KeyError, then ValueError, each with its traceback; the repeat at debug
    assert "KeyError: 'row field'" in failed[0] and "ValueError: row value" in failed[1]
    found = sorted(rows(ledger), key=lambda r: r["started_at"])
    assert [r["error"] for r in found] == ["costkit accounting failed"] * 3
    for row, start in zip(found, starts, strict=True):  # when the request started, not when it settled
        assert abs((row["started_at"] - start).total_seconds()) < 0.2


def test_a_failing_settled_hook_is_logged_once_per_error_redacted_and_the_row_is_kept(
    scripted, ledger, caplog
):
    caplog.set_level(logging.DEBUG, logger="costkit")
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    client = sdk(scripted.base_url, ledger, api_key=PLAIN_KEY, hooks=[FailingSettledHook()])
    for _ in range(3):
        assert (
            client.chat.completions.create(model=MODEL, messages=MESSAGES).choices[0].message.content == "Hi."
        )
    name = f"hook {FailingSettledHook.__qualname__}.settled failed"
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR and name in r.getMessage()]
    assert [m.splitlines()[0] for m in errors] == [f"costkit: {name}", f"costkit: {name}"]
    assert "LeakyHookError: no budget for the key [redacted] (row ok, call 1)" in errors[0]
    assert "KeyError: 'budget table'" in errors[1]
    assert PLAIN_KEY not in caplog.text and "call 3" not in caplog.text
    assert [(r["status"], r["cost_nanousd"]) for r in rows(ledger)] == [("ok", 40 * INPUT + 2 * OUTPUT)] * 3


# 3. A compressed body that cannot be decoded -------------------------------------------------------


def corrupt_gzip(data: bytes) -> bytes:
    """A gzip body whose deflate stream turns to junk a few bytes in (the header is fine)."""
    good = zlib.compress(data, wbits=31)
    return good[:12] + b"\xff" * 40 + good[52:]


def raw_post(base_url: str, ledger: costkit.Ledger | None, body: dict[str, Any]) -> Any:
    """A raw httpx2 client's POST, read to its end; returns the response or the exception it raised."""
    client = httpx2.Client() if ledger is None else costkit.wrap(httpx2.Client(), ledger=ledger)
    try:
        with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
            return b"".join(response.iter_bytes())
    except httpx2.DecodingError as exc:
        return type(exc)


def estimated_row(row: dict[str, Any], prompt: int, output: int) -> None:
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (prompt, 0, output)
    assert (row["estimated_input_tokens"], row["usage_source"]) == (prompt, "estimated")
    assert row["cost_nanousd"] == prompt * INPUT + output * OUTPUT
    assert row["price_id"] == "gpt-4.1@2025-04-14"


@pytest.mark.parametrize("stream", [False, True])
def test_a_body_that_cannot_be_decoded_is_the_callers_error_and_a_partial_row(scripted, ledger, stream):
    if stream:
        body = event(chunk([delta({"content": "Hi."})], True)) + event(
            chunk([], True, {"prompt_tokens": 40, "completion_tokens": 2})
        )
        content_type = "text/event-stream"
    else:
        body, content_type = json.dumps(REPLY).encode(), "application/json"
    pieces = split_at(corrupt_gzip(body), [30, 60])
    scripted.render = lambda _request: Answer(
        content_type=content_type, pieces=pieces, chunked=True, extra_headers=(("Content-Encoding", "gzip"),)
    )
    request: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
    if stream:  # the caller asked for usage: costkit forwards the compressed bytes for it to decode
        request |= {"stream": True, "stream_options": {"include_usage": True}}
    assert raw_post(scripted.base_url, None, request) is httpx2.DecodingError
    assert raw_post(scripted.base_url, ledger, request) is httpx2.DecodingError
    # a caller reading the raw bytes reads on past the corrupt ones: all of them reach it, noted once
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{scripted.base_url}/chat/completions", json=request) as response:
        assert b"".join(response.iter_raw()) == b"".join(pieces)
    for row in rows(ledger):
        assert (row["status"], row["http_status"], row["stream"]) == ("partial", 200, stream)
        assert row["notes"].startswith(
            "no usage from the provider: input from costkit's count, output estimated from what arrived; "
            "cannot decode gzip body: "
        )
        assert row["notes"].endswith(": the rest was forwarded untouched, not read")
        assert row["notes"].count("cannot decode") == 1
        estimated_row(row, count_prompt(request), 0)


def test_a_stream_costkit_decodes_for_the_caller_that_turns_corrupt_is_the_callers_error(scripted, ledger):
    body = event(chunk([delta({"content": "Hi."})], True)) + event(b"[DONE]")
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream",
        pieces=(corrupt_gzip(body),),
        extra_headers=(("Content-Encoding", "gzip"),),
    )
    request = {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert raw_post(scripted.base_url, None, request) is httpx2.DecodingError
    assert raw_post(scripted.base_url, ledger, request) is httpx2.DecodingError
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"], row["stream"]) == ("partial", 200, True)
    assert row["notes"] == (
        "the caller's read ended in DecodingError; "
        "no usage from the provider: input from costkit's count, output estimated from what arrived"
    )
    estimated_row(row, count_prompt(request), 0)


# 4. A failure of costkit's own while reading a stream ----------------------------------------------

USAGE = {"prompt_tokens": 40, "completion_tokens": 2}


def _fails_on_done(original: Any) -> Any:
    def scan_events(self: ResponseReader, data: bytes) -> bytes:
        if b"[DONE]" in self._tail + data:
            raise RuntimeError("costkit bug under test")
        return original(self, data)

    return scan_events


def raw_stream(base_url: str, ledger: costkit.Ledger, body: dict[str, Any]) -> bytes:
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{base_url}/chat/completions", json=body) as response:
        return b"".join(response.iter_raw())


@pytest.mark.parametrize("caller_asked", [False, True])
def test_a_failure_of_costkits_own_mid_stream_forwards_every_byte_once(
    scripted, ledger, monkeypatch, caller_asked
):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    pieces = (content, usage[:-2], usage[-2:] + event(b"[DONE]"))  # the usage event held for its blank line
    scripted.render = lambda _request: sse(pieces)
    monkeypatch.setattr(ResponseReader, "_scan_events", _fails_on_done(ResponseReader._scan_events))
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "stream": True}
    if caller_asked:
        body["stream_options"] = {"include_usage": True}
    got = raw_stream(scripted.base_url, ledger, body)
    if caller_asked:
        assert got == b"".join(pieces)
    else:  # costkit hid "usage":null where it still read; after its failure, the rest goes as it came
        assert got == content.replace(b',"usage":null', b"") + usage + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"], row["stream"]) == ("partial", 200, True)
    assert row["response_id"] == "chatcmpl-paths"
    estimated_row(row, count_prompt(body), count_text("Hi."))


def test_a_failure_of_costkits_own_after_the_usage_keeps_the_usage_and_a_partial_row(
    scripted, ledger, monkeypatch
):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    scripted.render = lambda _request: sse((content, usage, event(b"[DONE]")))
    monkeypatch.setattr(ResponseReader, "_scan_events", _fails_on_done(ResponseReader._scan_events))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    got = raw_stream(scripted.base_url, ledger, body)
    assert got == content.replace(b',"usage":null', b"") + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("partial", "provider")  # costkit did not see it end
    assert (row["input_tokens"], row["cached_input_tokens"], row["output_tokens"]) == (40, 0, 2)
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def _fails_on_usage(original: Any) -> Any:
    def inspect(self: ResponseReader, payload: bytes) -> bool:
        if b'"usage":{' in payload:
            raise RuntimeError("costkit bug under test")
        return original(self, payload)

    return inspect


def test_a_failure_of_costkits_own_while_reading_an_event_loses_no_byte_of_the_next(
    scripted, ledger, monkeypatch
):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    # the usage event and the start of [DONE] in one write: costkit fails reading the first
    scripted.render = lambda _request: sse((content, usage + b"data: [DO", b"NE]\n\n"))
    monkeypatch.setattr(ResponseReader, "_inspect", _fails_on_usage(ResponseReader._inspect))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    got = raw_stream(scripted.base_url, ledger, body)
    assert got == content.replace(b',"usage":null', b"") + usage + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["response_id"]) == ("partial", "chatcmpl-paths")
    estimated_row(row, count_prompt(body), count_text("Hi."))


def gzip_pieces(*parts: bytes) -> tuple[bytes, ...]:
    """One gzip stream, flushed after each part: each network piece decodes to exactly its part."""
    packer = zlib.compressobj(wbits=31)
    pieces = [packer.compress(part) + packer.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    pieces[-1] += packer.flush()
    return tuple(pieces)


@pytest.mark.parametrize("caller_asked", [False, True])
def test_a_failure_of_costkits_own_in_a_compressed_stream_forwards_every_byte_once(
    scripted, ledger, monkeypatch, caller_asked
):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream",
        pieces=gzip_pieces(content, usage + b"data: [DO", b"NE]\n\n"),
        chunked=True,
        extra_headers=(("Content-Encoding", "gzip"),),
    )
    monkeypatch.setattr(ResponseReader, "_scan_events", _fails_on_done(ResponseReader._scan_events))
    body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES, "stream": True}
    if caller_asked:
        body["stream_options"] = {"include_usage": True}
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{scripted.base_url}/chat/completions", json=body) as response:
        # costkit decodes the stream for a caller that did not ask for usage, to take the usage out
        assert response.headers.get("content-encoding") == ("gzip" if caller_asked else None)
        got = b"".join(response.iter_bytes())
    if caller_asked:
        assert got == content + usage + event(b"[DONE]")
    else:  # the usage chunk was read (and hidden) before costkit failed on the last piece
        assert got == content.replace(b',"usage":null', b"") + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "partial",
        "provider",
        40,
        2,
    )
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def test_after_a_failure_of_costkits_own_it_still_decodes_the_rest_for_the_caller_to_the_end(
    scripted, ledger, monkeypatch
):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    packer = zlib.compressobj(wbits=31)
    parts = (content, usage + b"data: [DO", b"NE]\n\n", b": keep-alive\n\n")
    pieces = [packer.compress(part) + packer.flush(zlib.Z_SYNC_FLUSH) for part in parts]
    trailer = bytearray(packer.flush())
    trailer[-8] ^= 0xFF  # a corrupt CRC-32 at the very end: the caller's httpx would raise there
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream",
        pieces=(*pieces, bytes(trailer)),
        chunked=True,
        extra_headers=(("Content-Encoding", "gzip"),),
    )
    monkeypatch.setattr(ResponseReader, "_scan_events", _fails_on_done(ResponseReader._scan_events))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    got = []
    url = f"{scripted.base_url}/chat/completions"
    with client.stream("POST", url, json=body) as response, pytest.raises(httpx2.DecodingError):
        for part in response.iter_bytes():
            got.append(part)
    assert b"".join(got) == content.replace(b',"usage":null', b"") + event(b"[DONE]") + b": keep-alive\n\n"
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "partial",
        "provider",
        40,
        2,
    )


# 5. The provider's error text on an error row --------------------------------------------------------

LONG = "Your request was rejected: " + "too long " * 80


@pytest.mark.parametrize(
    ("status", "content_type", "answer", "error"),
    [
        (
            429,
            "application/json",
            {"error": {"message": "Rate limit reached", "type": "x"}},
            "Rate limit reached",
        ),
        (503, "application/json", {"error": "upstream overloaded"}, "upstream overloaded"),
        (500, "application/json", {"error": {"message": 500, "code": 500}}, None),
        (500, "application/json", {"error": ["overloaded"]}, None),
        (502, "text/html", b"<html>Bad gateway</html>", None),
        (400, "text/plain", b"Bad Request", None),  # no "not JSON" note: an error body is the provider's
        (400, "application/json", b'["bad request"]', None),
        (400, "text/event-stream", {"error": {"message": "not shown"}}, None),
        (400, "application/json", {"error": {"message": LONG}}, LONG),
    ],
)
def test_an_http_error_row_keeps_the_providers_message(scripted, ledger, status, content_type, answer, error):
    raw = answer if isinstance(answer, bytes) else json.dumps(answer).encode()
    scripted.render = lambda _request: Answer(status=status, content_type=content_type, pieces=(raw,))
    body = {"model": MODEL, "messages": MESSAGES}
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    response = client.post(f"{scripted.base_url}/chat/completions", json=body)
    assert (response.status_code, response.content) == (status, raw)
    (row,) = rows(ledger)
    expected = f"HTTP {status}" if error is None else f"HTTP {status}: {error}"
    assert row["error"] == expected[:500]
    assert (row["status"], row["http_status"], row["notes"]) == ("error", status, None)
    prompt = count_prompt(body)
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (prompt, 0, "estimated")
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)


# 6. What a request carries onto its row ----------------------------------------------------------------

NO_USAGE = {key: value for key, value in REPLY.items() if key != "usage"}


def post(base_url: str, ledger: costkit.Ledger, content: bytes, headers: Any = (), **options: Any) -> Any:
    client = costkit.wrap(httpx2.Client(), ledger=ledger, **options)
    return client.post(f"{base_url}/chat/completions", content=content, headers=list(headers))


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "request body is not JSON: Expecting property name enclosed in double quotes"),
        (b'["a", "list"]', "request body is not a JSON object"),
    ],
)
def test_a_request_body_costkit_cannot_read_is_sent_as_is_and_its_row_says_why(
    scripted, ledger, content, problem
):
    sent: list[Any] = []
    scripted.render = lambda request: sent.append(request) or Answer(pieces=(json.dumps(NO_USAGE).encode(),))
    response = post(scripted.base_url, ledger, content, [("Content-Type", "application/json")])
    assert response.json() == NO_USAGE and sent == [None]  # the upstream got the bytes (not JSON to it)
    (row,) = rows(ledger)
    assert (row["status"], row["model"], row["stream"]) == ("ok", "unknown", False)
    assert (row["input_tokens"], row["output_tokens"], row["estimated_input_tokens"]) == (
        0,
        count_text("Hi."),
        None,
    )
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)
    assert f"unpriced: input tokens unknown ({problem}" in row["notes"]


def test_a_request_that_never_got_an_answer_and_could_not_be_counted_records_no_input(ledger):
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    body = {"model": "gpt-4.1", "messages": MESSAGES, "stream": True, "max_tokens": "many"}
    with pytest.raises(httpx2.ConnectError) as caught:
        client.post("http://127.0.0.1:9/v1/chat/completions", content=b"{not json")
    with pytest.raises(httpx2.ConnectError):
        client.post("http://127.0.0.1:9/v1/chat/completions", json=body)
    unreadable, streamed = rows(ledger)
    assert (unreadable["status"], unreadable["http_status"], unreadable["stream"]) == ("error", None, False)
    assert unreadable["error"] == f"ConnectError: {caught.value}"
    assert (unreadable["input_tokens"], unreadable["estimated_input_tokens"]) == (0, None)
    # a bad max_tokens leaves no verdict, but the messages are still counted, and it was a stream
    prompt = count_prompt({"model": "gpt-4.1", "messages": MESSAGES, "stream": True})
    assert (streamed["status"], streamed["stream"], streamed["model"]) == ("error", True, "gpt-4.1")
    assert (streamed["input_tokens"], streamed["estimated_input_tokens"]) == (prompt, prompt)
    assert (streamed["cost_nanousd"], streamed["usage_source"]) == (0, "estimated")


@pytest.mark.parametrize(
    ("model", "recorded"),
    [("m" * 300, "m" * 200), (42, "unknown"), ("", "unknown"), ("openai/gpt-4.1-2025-04-14", "gpt-4.1")],
)
def test_the_model_a_row_records(scripted, ledger, model, recorded):
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    body = {"model": model, "messages": MESSAGES}
    post(scripted.base_url, ledger, json.dumps(body).encode())
    (row,) = rows(ledger)
    assert row["model"] == recorded
    assert (row["input_tokens"], row["output_tokens"]) == (40, 2)  # the provider's usage, priced or not


def test_tags_from_every_tags_header_are_kept_and_a_latin1_value_is_read(scripted, ledger):
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    headers = [("X-Costkit-Tags", b"team=search"), ("x-costkit-tags", b"feature=caf\xe9, user=42")]
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode(), headers)
    (row,) = rows(ledger)
    assert row["tags"] == {"team": "search", "feature": "café", "user": "42"}
    assert row["notes"] is None


def test_a_stream_body_costkit_cannot_rewrite_is_sent_as_the_caller_wrote_it(scripted, ledger):
    # A lone surrogate (valid JSON escape, not encodable as UTF-8) and a stream_options that does not
    # ask for usage: the field cannot be rewritten into the body, so the caller's bytes go as they are.
    content = b'{"model":"gpt-4.1","messages":[{"role":"user","content":"a\\ud800b"}],"stream":true,'
    content += b'"stream_options":{"include_usage":false}}'
    pieces = (event(chunk([delta({"content": "Hi."})], False)), event(b"[DONE]"))
    scripted.render = lambda _request: sse(pieces)
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{scripted.base_url}/chat/completions", content=content) as response:
        assert b"".join(response.iter_raw()) == b"".join(pieces)
    sent = scripted.received[-1]
    assert sent.body == content
    assert sent.headers.get("accept-encoding") != "identity"  # costkit asked for nothing
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("ok", "estimated")


def test_a_bad_tag_of_the_transport_and_one_of_the_header_are_both_noted(scripted, ledger):
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    content = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
    headers = [("X-Costkit-Tags", b"team=search, nokey")]
    post(scripted.base_url, ledger, content, headers, tags={"feature": "x" * 201})
    (row,) = rows(ledger)
    assert row["tags"] == {"team": "search"}
    notes = row["notes"].split("; ")
    assert len(notes) == 2, notes
    assert notes[0] == "tag 'feature' from Transport(tags=) dropped: the value is longer than 200 characters"
    assert notes[1].startswith("X-Costkit-Tags item 2 of 2 dropped")


def test_with_the_preflight_off_an_oversized_request_is_sent_and_charged(scripted, ledger):
    sent: list[Any] = []
    scripted.render = lambda request: sent.append(request) or Answer(pieces=(json.dumps(REPLY).encode(),))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "costkit " * 1_100_000}],
        "max_tokens": 10,
    }
    client = costkit.wrap(httpx2.Client(), ledger=ledger, preflight=False)
    response = client.post(f"{scripted.base_url}/chat/completions", json=body)
    assert response.status_code == 200 and len(sent) == 1
    (row,) = rows(ledger)
    assert (row["status"], row["input_tokens"], row["output_tokens"]) == ("ok", 40, 2)
    assert row["estimated_input_tokens"] > 1_047_576
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def test_without_store_text_no_prompt_or_completion_text_is_kept(scripted, ledger):
    scripted.render = lambda _request: sse(
        (event(chunk([delta({"content": "Hi."})], True)), event(chunk([], True, USAGE)), event(b"[DONE]"))
    )
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    raw_stream(scripted.base_url, ledger, body)
    (row,) = rows(ledger)
    assert (row["status"], row["prompt_text"], row["completion_text"]) == ("ok", None, None)

    class Recorder:  # anything with record(row) may take the rows; one without store_text gets no text
        def __init__(self) -> None:
            self.rows: list[Any] = []

        def record(self, row: Any) -> None:
            self.rows.append(row)

    recorder = Recorder()
    client = costkit.wrap(httpx2.Client(), ledger=recorder)
    with client.stream("POST", f"{scripted.base_url}/chat/completions", json=body) as response:
        response.read()
    (own,) = recorder.rows
    assert (own.status, own.output_tokens, own.prompt_text, own.completion_text) == ("ok", 2, None, None)


def test_latency_is_whole_microseconds_of_the_calls_clock(scripted, ledger, monkeypatch):
    # The clock no real server can set: the call reads it once at its start and once at its end.
    readings = iter([1000.0])
    monkeypatch.setattr(accounting, "time", SimpleNamespace(perf_counter=lambda: next(readings, 1003.25)))
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    (row,) = rows(ledger)
    assert row["latency_us"] == 3_250_000


def test_stored_text_keeps_the_callers_characters(scripted, tmp_path):
    reply = {**REPLY, "choices": [{"index": 0, "message": {"role": "assistant", "content": "Grüezi \x00."}}]}
    scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    with costkit.Ledger(f"sqlite:///{tmp_path / 'text.sqlite'}", store_text=True) as book:
        post(scripted.base_url, book, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
        (row,) = rows(book)
    assert row["prompt_text"] == (
        '[{"role": "system", "content": "You are terse."}, '
        '{"role": "user", "content": "What is the weather in Zürich, and the time there?"}]'
    )
    assert row["completion_text"] == "Grüezi ."


# 7. A stream is known by its Content-Type, however it is written ---------------------------------------


@pytest.mark.parametrize("content_type", ["Text/Event-Stream ; charset=UTF-8", "text/event-stream"])
def test_a_stream_is_known_by_its_content_type_in_any_case_and_spacing(scripted, ledger, content_type):
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    scripted.render = lambda _request: Answer(
        content_type=content_type, pieces=(content, usage, event(b"[DONE]")), chunked=True
    )
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert raw_stream(scripted.base_url, ledger, body) == content.replace(b',"usage":null', b"") + event(
        b"[DONE]"
    )
    (row,) = rows(ledger)
    assert (row["status"], row["stream"], row["usage_source"], row["notes"]) == ("ok", True, "provider", None)
    assert (row["input_tokens"], row["output_tokens"], row["cost_nanousd"]) == (
        40,
        2,
        40 * INPUT + 2 * OUTPUT,
    )


# 8. The bytes sent when costkit asks for usage -----------------------------------------------------------


@pytest.mark.parametrize(
    ("caller_sent", "costkit_sent"),
    [
        (  # the caller's bytes as they were (spacing, non-ASCII, a last empty object), the field appended
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "Zürich?"}], '
            '"stream": true, "metadata": {}}  \n',
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "Zürich?"}], '
            '"stream": true, "metadata": {},"stream_options":{"include_usage":true}}',
        ),
        (  # stream_options there without include_usage: rewritten, compact, the text still UTF-8
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "Zürich?"}], '
            '"stream": true, "stream_options": {"include_obfuscation": false}}',
            '{"model":"gpt-4.1","messages":[{"role":"user","content":"Zürich?"}],'
            '"stream":true,"stream_options":{"include_obfuscation":false,"include_usage":true}}',
        ),
        (
            '{"model": "gpt-4.1", "messages": [{"role": "user", "content": "Zürich?"}], '
            '"stream": true, "stream_options": null}',
            '{"model":"gpt-4.1","messages":[{"role":"user","content":"Zürich?"}],'
            '"stream":true,"stream_options":{"include_usage":true}}',
        ),
        (  # the caller asked already: its bytes go as they were
            '{"model": "gpt-4.1", "messages": [], "stream": true, "stream_options": {"include_usage": true}}',
            '{"model": "gpt-4.1", "messages": [], "stream": true, "stream_options": {"include_usage": true}}',
        ),
    ],
    ids=["appended", "rewritten", "null", "asked"],
)
def test_the_body_sent_when_costkit_asks_for_usage(scripted, ledger, caller_sent, costkit_sent):
    sent: list[Any] = []
    scripted.render = lambda request: sent.append(request) or sse((event(b"[DONE]"),))
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream(
        "POST", f"{scripted.base_url}/chat/completions", content=caller_sent.encode("utf-8")
    ) as response:
        assert response.read() == b"data: [DONE]\n\n"
    assert len(sent) == 1
    assert scripted.received[-1].body == costkit_sent.encode("utf-8")


# 9. What a row may hold: bounded, without NUL, redacted -------------------------------------------------


def test_a_long_response_id_and_a_model_with_nul_are_stored_bounded_and_clean(scripted, ledger):
    reply = {**REPLY, "id": "chatcmpl-\x00" + "i" * 300}
    scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    post(scripted.base_url, ledger, json.dumps({"model": "gpt-\x004.1", "messages": MESSAGES}).encode())
    content = event(chunk([delta({"content": "Hi."})], False, response_id="chatcmpl-\x00" + "s" * 300))
    scripted.render = lambda _request: sse((content, event(b"[DONE]")))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    post(scripted.base_url, ledger, json.dumps(body).encode())
    plain, streamed = rows(ledger)
    assert plain["response_id"] == "chatcmpl-" + "i" * 191
    assert plain["model"] == "gpt-4.1"
    assert streamed["response_id"] == "chatcmpl-" + "s" * 191


def test_notes_are_bounded(scripted, ledger):
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    headers = [("X-Costkit-Tags", ",".join(["oops"] * 200))]
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode(), headers)
    (row,) = rows(ledger)
    assert row["notes"].startswith("X-Costkit-Tags item 1 of 200 dropped: not key=value; ")
    assert len(row["notes"]) == 2000
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def test_a_credential_echoed_into_the_usage_is_redacted_from_the_notes(scripted, ledger):
    reply = {**REPLY, "usage": {"prompt_tokens": PLAIN_KEY, "completion_tokens": 2}}
    scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    headers = [("Authorization", f"Bearer {PLAIN_KEY}")]
    body = {"model": MODEL, "messages": MESSAGES}
    post(scripted.base_url, ledger, json.dumps(body).encode(), headers)
    (row,) = rows(ledger)
    assert row["notes"] == "usage.prompt_tokens '[redacted]' is not a token count; input from costkit's count"
    prompt = count_prompt(body)
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (prompt, 2, "estimated")
    assert row["cost_nanousd"] == prompt * INPUT + 2 * OUTPUT


def test_a_request_that_cannot_be_counted_says_why_it_is_unpriced(scripted, ledger):
    scripted.render = lambda _request: Answer(pieces=(json.dumps(NO_USAGE).encode(),))
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": "Hello"}).encode())
    (row,) = rows(ledger)
    assert (row["status"], row["input_tokens"], row["estimated_input_tokens"]) == ("ok", 0, None)
    assert row["notes"].endswith("unpriced: input tokens unknown (messages: must be a list)")
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)


def test_with_the_preflight_off_a_request_that_cannot_be_counted_still_says_why(scripted, ledger):
    # No pre-flight verdict, yet the request is still counted for its row, and why it cannot be is kept.
    scripted.render = lambda _request: Answer(pieces=(json.dumps(NO_USAGE).encode(),))
    body = json.dumps({"model": MODEL, "messages": "Hello"}).encode()
    post(scripted.base_url, ledger, body, preflight=False)
    (row,) = rows(ledger)
    assert (row["status"], row["input_tokens"], row["estimated_input_tokens"]) == ("ok", 0, None)
    assert row["notes"].endswith("unpriced: input tokens unknown (messages: must be a list)")
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)


UNPRICED_AT_START = "unknown price for 'gpt-4.1 at 2025-04-13 at host 127.0.0.1'"


def test_a_call_is_priced_at_the_prices_in_effect_when_it_started(scripted, ledger, monkeypatch):
    """gpt-4.1's first price took effect on 2025-04-14: a call that started the evening before is
    unpriced, though it settles now (the clock is the one part no real server can set)."""

    class Eve(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Eve:
            return cls(2025, 4, 13, 23, 59, 59, tzinfo=tz)

    worst_cases: list[str] = []

    class Watch:
        def before_send(self, call: Any) -> None:
            try:
                worst_cases.append(str(call.verdict.max_cost_nanousd))
            except costkit.CostkitError as exc:
                worst_cases.append(str(exc))

        def settled(self, call: Any, row: Any) -> None:
            pass

    monkeypatch.setattr(accounting, "datetime", Eve)
    scripted.render = lambda _request: Answer(pieces=(json.dumps(REPLY).encode(),))
    post(
        scripted.base_url,
        ledger,
        json.dumps({"model": MODEL, "messages": MESSAGES}).encode(),
        hooks=[Watch()],
    )
    assert len(worst_cases) == 1 and worst_cases[0].startswith(UNPRICED_AT_START)
    (row,) = rows(ledger)
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (40, 2, "provider")
    assert (row["cost_nanousd"], row["price_id"]) == (0, None)
    assert row["notes"].startswith(f"unpriced: {UNPRICED_AT_START}")


# 10. The side copy of a plain answer, at its bound --------------------------------------------------------


@pytest.mark.parametrize("over", [0, 1])
def test_a_plain_answer_in_pieces_is_read_up_to_its_bound_and_no_further(scripted, ledger, monkeypatch, over):
    raw = json.dumps(REPLY).encode()
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", len(raw) - over)
    half = len(raw) // 2
    scripted.render = lambda _request: Answer(pieces=(raw[:half], raw[half:]), chunked=True)
    response = post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    assert response.content == raw
    (row,) = rows(ledger)
    if over:  # one byte past the bound: not read, estimated
        assert (row["status"], row["notes"]) == (
            "partial",
            "no usage from the provider: input from costkit's count, output estimated from what arrived; "
            f"response body over {len(raw) - 1} bytes: not read; "
            f"only the first {len(raw) - 1} bytes of the response were kept for the estimate",
        )
        assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (PROMPT, 0, "estimated")
    else:  # exactly at the bound: read whole
        assert (row["status"], row["notes"], row["response_id"]) == ("ok", None, "chatcmpl-mutation")
        assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (40, 2, "provider")


@pytest.mark.parametrize("over", [0, 1])
def test_a_stream_is_kept_for_its_estimate_up_to_its_bound_and_no_further(
    scripted, ledger, monkeypatch, over
):
    # No usage (the provider ignored costkit's ask): the output is estimated from the side copy.
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", len(first + content) - over)
    scripted.render = lambda _request: sse((first, content, event(b"[DONE]")))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert raw_stream(scripted.base_url, ledger, body) == (first + content).replace(
        b',"usage":null', b""
    ) + event(b"[DONE]")
    (row,) = rows(ledger)
    # [DONE] never fits: the copy is cut either way; the second chunk is kept only at the bound.
    output = 0 if over else count_text("Hi.")
    note = (
        "no usage from the provider: input from costkit's count, output estimated from what arrived; "
        f"only the first {len(first + content) - over} bytes of the response were kept for the estimate"
    )
    assert (row["status"], row["usage_source"], row["notes"]) == ("ok", "estimated", note)
    assert (row["input_tokens"], row["output_tokens"]) == (PROMPT, output)
    assert row["cost_nanousd"] == PROMPT * INPUT + output * OUTPUT


@pytest.mark.parametrize("over", [0, 1])
def test_a_first_event_at_the_side_copys_bound_is_kept_for_the_estimate(scripted, ledger, monkeypatch, over):
    first = event(chunk([delta({"role": "assistant", "content": "Hi."})], True))  # read before any id
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", len(first) - over)
    scripted.render = lambda _request: sse((first, event(b"[DONE]")))
    raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    (row,) = rows(ledger)
    output = 0 if over else count_text("Hi.")
    assert (row["status"], row["usage_source"], row["output_tokens"]) == ("ok", "estimated", output)
    assert row["cost_nanousd"] == PROMPT * INPUT + output * OUTPUT


def test_without_usage_a_done_sharing_a_read_with_the_last_chunk_still_completes_the_stream(scripted, ledger):
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    scripted.render = lambda _request: sse((first, content + event(b"[DONE]")))
    got = raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert got == (first + content).replace(b',"usage":null', b"") + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"]) == ("ok", "estimated")
    assert row["output_tokens"] == count_text("Hi.")


def test_a_last_event_without_its_blank_line_is_forwarded_and_read_with_all_before_it(scripted, ledger):
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    last = event(chunk([delta({"content": " Bye."})], True))[:-2]  # the body ends without "\n\n"
    scripted.render = lambda _request: sse((first, content, last))
    got = raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert got == (first + content + last).replace(b',"usage":null', b"")
    (row,) = rows(ledger)
    # Neither [DONE] nor usage: partial, estimated from every chunk, the last one included.
    assert (row["status"], row["usage_source"]) == ("partial", "estimated")
    assert row["output_tokens"] == count_text("Hi. Bye.")


def test_a_last_event_without_its_blank_line_leaves_the_check_after_the_body_its_whole_stream(
    scripted, ledger
):
    # The caller asked for usage, so costkit holds nothing back; the body ends in "data: [DONE]".
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    broken = b'data: {"id":"chatcmpl-paths","choices":[},"usage":null}\n\n'  # passes the byte checks
    pieces = (first, broken, event(chunk([], True, USAGE)), b"data: [DONE]")
    scripted.render = lambda _request: sse(pieces)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    assert raw_stream(scripted.base_url, ledger, body) == b"".join(pieces)
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["output_tokens"]) == ("partial", "provider", 2)


def test_a_cut_stream_that_held_an_error_event_has_that_error_on_its_row(scripted, ledger):
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    error = event({"error": {"message": "The model overloaded mid-stream."}})
    # the error event rides in one read after an ordinary chunk (past the byte checks); then the
    # connection is closed: neither [DONE] nor usage
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream", pieces=(first, content + error), chunked=True, cut=True
    )
    with pytest.raises(httpx2.RemoteProtocolError):
        raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    (row,) = rows(ledger)
    assert (row["status"], row["error"]) == ("partial", "The model overloaded mid-stream.")


def test_json_with_spaces_around_it_in_a_data_line_is_an_ordinary_chunk(scripted, ledger):
    # "data:  {...} " is valid: the SDK parses the payload as JSON, spaces and all.
    padded = b"data:  " + json.dumps(chunk([delta({"content": "Hi."})], True)).encode() + b" \n\n"
    usage = event(chunk([], True, USAGE))
    scripted.render = lambda _request: sse((padded, usage, event(b"[DONE]")))
    got = raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    assert got == padded + event(b"[DONE]")  # (only the compact ',"usage":null' is taken out)
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["output_tokens"]) == ("ok", "provider", 2)


def test_a_caller_that_asked_for_usage_gets_every_byte_as_sent(scripted, ledger):
    pieces = (
        event(chunk([delta({"role": "assistant", "content": ""})], True)),
        event(chunk([delta({"content": "Hi."})], True)),
        event(chunk([], True, USAGE)),
        event(b"[DONE]"),
    )
    scripted.render = lambda _request: sse(pieces)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    assert raw_stream(scripted.base_url, ledger, body) == b"".join(pieces)  # "usage":null kept
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "ok",
        "provider",
        40,
        2,
    )


def test_a_reader_settles_once_as_its_closer_says():
    settled: list[ResponseReader] = []
    reader = ResponseReader(200, "text/event-stream", "", False, 0.0, settled.append)
    reader.close(exhausted=True)  # read to its end, though no end was fed here
    reader.close(exhausted=False, interrupted="again")  # every later close changes nothing
    assert settled == [reader]
    assert (reader.exhausted, reader.interrupted) == (True, None)


def test_only_the_callers_close_during_an_exception_is_an_interrupted_read():
    for by_caller, interrupted in ((False, None), (True, "the caller's read ended in ValueError")):
        reader = ResponseReader(200, "text/event-stream", "", False, 0.0, lambda _reader: None)
        try:
            raise ValueError("the caller's code failed")
        except ValueError:
            if by_caller:
                reader.close(by_caller=True)
            else:
                reader.close()  # costkit's own close (at exit, after a failure of its own)
        assert (reader.exhausted, reader.interrupted) == (False, interrupted)


def test_time_to_first_token_is_whole_microseconds_of_the_readers_clock(monkeypatch):
    # The one figure no real server can set exactly: the clock, read when the first event arrives.
    monkeypatch.setattr(responses, "time", SimpleNamespace(perf_counter=lambda: 1003.25))
    reader = ResponseReader(200, "text/event-stream", "", False, 1000.0, lambda _reader: None)
    reader.feed(event(chunk([delta({"content": "Hi."})], False)))
    assert reader.ttft_us == 3_250_000


def test_an_answer_without_a_content_type_is_read_as_a_plain_answer(scripted, ledger):
    raw = json.dumps(REPLY).encode()
    scripted.render = lambda _request: Answer(content_type="", pieces=(raw,))
    response = post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    assert "content-type" not in response.headers and response.content == raw
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "ok",
        "provider",
        40,
        2,
    )
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def test_codings_costkit_cannot_decode_are_named_as_the_header_lists_them(scripted, ledger):
    pieces = (event(chunk([delta({"content": "Hi."})], True)), event(b"[DONE]"))
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream",
        pieces=pieces,
        chunked=True,
        extra_headers=(("Content-Encoding", "gzip, x-unknown"),),
    )
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert raw_stream(scripted.base_url, ledger, body) == b"".join(pieces)  # untouched, as labelled
    (row,) = rows(ledger)
    assert row["status"] == "partial"
    assert "response encoded as 'gzip, x-unknown', which costkit cannot decode" in row["notes"]


def test_a_plain_answer_in_a_coding_costkit_cannot_decode_is_left_unread_and_said_so_once(
    scripted, ledger, caplog
):
    raw = json.dumps(REPLY).encode()  # labelled, not encoded: costkit must not try to read it at all
    scripted.render = lambda _request: Answer(
        pieces=(raw,), extra_headers=(("Content-Encoding", "x-unknown"),)
    )
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    body = {"model": MODEL, "messages": MESSAGES}
    with client.stream("POST", f"{scripted.base_url}/chat/completions", json=body) as response:
        assert b"".join(response.iter_raw()) == raw
    (row,) = rows(ledger)
    # No failure of costkit's for this request. (This test holds no budget: a budget lease thread that
    # an earlier test left retrying against a database that is down may log meanwhile; not ours.)
    assert not [
        r for r in caplog.records if r.name.startswith("costkit") and r.threadName != "costkit-budget-leases"
    ]
    assert (row["status"], row["usage_source"], row["input_tokens"]) == ("partial", "estimated", PROMPT)
    assert row["notes"] == (
        "no usage from the provider: input from costkit's count, output estimated from what arrived; "
        "response encoded as 'x-unknown', which costkit cannot decode: forwarded untouched, not read"
    )


def test_an_error_answer_sent_as_a_stream_reaches_the_caller_untouched(scripted, ledger):
    # costkit takes out of a stream only what it asked for, and only from a successful answer.
    pieces = (event(chunk([delta({"content": "Hi."})], True)), event(chunk([], True, USAGE)))
    scripted.render = lambda _request: Answer(
        status=400, content_type="text/event-stream", pieces=pieces, chunked=True
    )
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    assert raw_stream(scripted.base_url, ledger, body) == b"".join(pieces)
    (row,) = rows(ledger)
    assert (row["status"], row["http_status"], row["error"]) == ("error", 400, "HTTP 400")


def test_an_error_answer_is_read_once(scripted, ledger):
    answer = {"error": {"message": "Rate limit reached"}, "x_metrics": "junk"}
    scripted.render = lambda _request: Answer(status=429, pieces=(json.dumps(answer).encode(),))
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    (row,) = rows(ledger)
    assert (row["error"], row["notes"]) == (
        "HTTP 429: Rate limit reached",
        "x_metrics dropped: not an object",
    )


# 11. An error without a message inside a 200 answer --------------------------------------------------------


@pytest.mark.parametrize("shared", [False, True], ids=["own write", "shared write"])
def test_an_error_event_without_a_message_still_makes_the_stream_partial(scripted, ledger, shared):
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    error = event({"error": {"code": 503}})
    # shared: the error event rides in one network read after an ordinary chunk, past the byte checks
    pieces = (
        (first, content + error, event(b"[DONE]")) if shared else (first, content, error, event(b"[DONE]"))
    )
    scripted.render = lambda _request: sse(pieces)
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    got = raw_stream(scripted.base_url, ledger, body)
    assert got == b"".join(pieces).replace(b',"usage":null', b"")
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["http_status"]) == ("partial", "error event in the stream", 200)
    estimated_row(row, count_prompt(body), count_text("Hi."))


def test_a_read_of_many_ordinary_events_is_forwarded_without_parsing_each(scripted, ledger, monkeypatch):
    # A fast network hands over hundreds of events a read (the proxy reads 64 KiB at a time), cut
    # anywhere. When every "usage" in them is null they are passed on whole; the usage event and
    # [DONE] are read.
    parsed: list[bytes] = []
    original = ResponseReader._read_events

    def spy(self: ResponseReader, segment: bytes) -> bytes:
        parsed.append(segment)
        return original(self, segment)

    monkeypatch.setattr(ResponseReader, "_read_events", spy)
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    many = b"".join(event(chunk([delta({"content": f" w{i}"})], True)) for i in range(50))
    usage = event(chunk([], True, {"prompt_tokens": 40, "completion_tokens": 50}))
    # Cut inside the last event: the read's whole events are judged apart from the part held back.
    scripted.render = lambda _request: sse((first, many[:-7], many[-7:], usage + event(b"[DONE]")))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    got = raw_stream(scripted.base_url, ledger, body)
    # The caller did not ask for usage: it gets neither the usage event nor a "usage":null.
    assert got == (first + many).replace(b',"usage":null', b"") + event(b"[DONE]")
    assert parsed == [first, usage + event(b"[DONE]")]
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["output_tokens"]) == ("ok", "provider", 50)
    assert row["cost_nanousd"] == 40 * INPUT + 50 * OUTPUT


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (b'{"choices": [}', None),  # not JSON
        (b"42", None),  # JSON, not an object
        (b'{"choices": []}\x0c', None),  # a form feed after it: not JSON whitespace, json.loads fails
        (json.dumps({"error": {"message": "The model overloaded."}}).encode(), "The model overloaded."),
    ],
)
def test_a_bad_event_past_the_side_copy_bound_still_makes_the_stream_partial(
    scripted, ledger, monkeypatch, bad, error
):
    # The check after the body reads the side copy; an event past its bound is judged as it passes.
    first = event(chunk([delta({"role": "assistant", "content": ""})], True))
    content = event(chunk([delta({"content": "Hi."})], True))
    usage = event(chunk([], True, USAGE))
    monkeypatch.setattr(responses, "MAX_SIDE_COPY", len(first + content))
    scripted.render = lambda _request: sse((first, content, event(bad), usage, event(b"[DONE]")))
    body = {"model": MODEL, "messages": MESSAGES, "stream": True}
    got = raw_stream(scripted.base_url, ledger, body)
    # The caller gets every event but the usage it did not ask for, the bad one included.
    assert got == (first + content).replace(b',"usage":null', b"") + event(bad) + event(b"[DONE]")
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["usage_source"]) == ("partial", error, "provider")
    assert (row["input_tokens"], row["output_tokens"]) == (40, 2)
    assert row["cost_nanousd"] == 40 * INPUT + 2 * OUTPUT


def test_a_rows_response_id_is_the_first_id_the_stream_gives(scripted, ledger):
    nameless = chunk([delta({"role": "assistant", "content": ""})], True)
    del nameless["id"]  # a first chunk without an id: the id comes from the next one
    content = event(chunk([delta({"content": "Hi."})], True, response_id="chatcmpl-first"))
    usage = event(chunk([], True, USAGE, response_id="chatcmpl-later"))
    scripted.render = lambda _request: sse((event(nameless), content, usage, event(b"[DONE]")))
    raw_stream(scripted.base_url, ledger, {"model": MODEL, "messages": MESSAGES, "stream": True})
    (row,) = rows(ledger)
    assert (row["status"], row["response_id"], row["output_tokens"]) == ("ok", "chatcmpl-first", 2)


def test_an_error_object_without_a_message_in_a_200_answer_makes_it_partial(scripted, ledger):
    scripted.render = lambda _request: Answer(pieces=(json.dumps({"error": {"code": 503}}).encode(),))
    body = {"model": MODEL, "messages": MESSAGES}
    post(scripted.base_url, ledger, json.dumps(body).encode())
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["http_status"]) == (
        "partial",
        "error object in a 200 answer",
        200,
    )
    estimated_row(row, count_prompt(body), 0)


# 12. A request refused for the context window, with the caller's limits ---------------------------------


@pytest.mark.parametrize(("extra", "reserve"), [({"max_tokens": 100}, 100), ({}, 30)])
def test_the_context_refusal_uses_the_callers_limit_and_reserve_and_is_the_rows_error(
    scripted, ledger, extra, reserve
):
    sent: list[Any] = []
    scripted.render = lambda request: sent.append(request) or Answer(pieces=(json.dumps(REPLY).encode(),))
    body = {"model": MODEL, "messages": MESSAGES, **extra}
    client = costkit.wrap(httpx2.Client(), ledger=ledger, context_limit=50, default_output_reserve=30)
    with pytest.raises(costkit.ContextWindowExceeded) as refused:
        client.post(f"{scripted.base_url}/chat/completions", json=body)
    assert sent == []
    over = PROMPT + reserve - 50
    message = (
        f"request needs {PROMPT} input + {reserve} output tokens, "
        f"over the 50-token context window by {over}; nothing was sent"
    )
    assert str(refused.value) == message
    assert (
        refused.value.tokens,
        refused.value.limit,
        refused.value.overflow,
        refused.value.output_reserve,
    ) == (
        PROMPT,
        50,
        over,
        reserve,
    )
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["input_tokens"], row["cost_nanousd"]) == (
        "blocked",
        message,
        PROMPT,
        0,
    )


# 13. A 200 answer that is not a JSON object ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "note"),
    [
        (b"<html>Service busy</html>", "response body is not JSON"),
        (b'["Hi."]', "response body is not a JSON object"),
    ],
)
def test_a_200_answer_that_is_not_a_json_object_is_partial_and_says_so(scripted, ledger, raw, note):
    scripted.render = lambda _request: Answer(pieces=(raw,))
    body = {"model": MODEL, "messages": MESSAGES}
    assert post(scripted.base_url, ledger, json.dumps(body).encode()).content == raw
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["response_id"]) == ("partial", None, None)
    assert row["notes"] == (
        f"no usage from the provider: input from costkit's count, output estimated from what arrived; {note}"
    )
    estimated_row(row, count_prompt(body), 0)


# 14. Timings ----------------------------------------------------------------------------------------------


def test_latency_and_time_to_first_token_are_measured_in_microseconds(scripted, ledger):
    def slow(_request: Any) -> Answer:
        time.sleep(0.2)  # before the status line: the first token cannot come sooner
        return sse((event(chunk([delta({"content": "Hi."})], False)), event(b"[DONE]")))

    scripted.render = slow
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    raw_stream(scripted.base_url, ledger, body)
    elapsed_us = (time.perf_counter() - started) * 1_000_000
    (row,) = rows(ledger)
    assert 200_000 <= row["ttft_us"] <= row["latency_us"] <= elapsed_us
    assert (row["finished_at"] - row["started_at"]).total_seconds() >= 0.2


def test_a_stream_whose_gzip_trailer_is_corrupt_is_partial_though_it_was_read_to_done(scripted, ledger):
    content = event(chunk([delta({"content": "Hi."})], True))
    whole = content + event(chunk([], True, USAGE)) + event(b"[DONE]")
    packer = zlib.compressobj(wbits=31)
    data = packer.compress(whole) + packer.flush(zlib.Z_SYNC_FLUSH)
    trailer = bytearray(packer.flush())
    trailer[-8] ^= 0xFF  # the CRC-32 of the body
    scripted.render = lambda _request: Answer(
        content_type="text/event-stream",
        pieces=(data, bytes(trailer)),
        chunked=True,
        extra_headers=(("Content-Encoding", "gzip"),),
    )
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}}
    client = costkit.wrap(httpx2.Client(), ledger=ledger)
    with client.stream("POST", f"{scripted.base_url}/chat/completions", json=body) as response:
        got = []
        with pytest.raises(httpx2.DecodingError):  # caught here: the caller closes the stream itself
            for part in response.iter_bytes():
                got.append(part)
    assert b"".join(got) == whole
    (row,) = rows(ledger)
    assert (row["status"], row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
        "partial",
        "provider",
        40,
        2,
    )
    assert row["notes"] == (
        "cannot decode gzip body: Error -3 while decompressing data: incorrect data check: "
        "the rest was forwarded untouched, not read"
    )


def test_a_plain_answer_read_in_many_network_reads_is_read_whole(scripted, ledger):
    # 400 kB of logprobs: more than one read of the client's socket, cut between JSON tokens
    logprobs = {"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": []}] * 6000}
    reply = {**REPLY, "choices": [{**REPLY["choices"][0], "logprobs": logprobs}]}
    raw = json.dumps(reply).encode()
    scripted.render = lambda _request: Answer(
        pieces=split_at(raw, list(range(0, len(raw), 50_000))), chunked=True
    )
    response = post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    assert response.content == raw
    (row,) = rows(ledger)
    assert (row["status"], row["response_id"], row["notes"]) == ("ok", "chatcmpl-mutation", None)
    assert (row["input_tokens"], row["output_tokens"], row["usage_source"]) == (40, 2, "provider")


@pytest.mark.parametrize(
    "extra",
    [{"error": {"message": "a gateway's leftover"}}, {"choices": None}],
    ids=["error beside choices", "no choices, no error"],
)
def test_a_200_answer_is_an_error_only_for_an_error_object_without_choices(scripted, ledger, extra):
    reply = {**REPLY, **extra}
    if extra.get("choices", 0) is None:
        del reply["choices"]
    scripted.render = lambda _request: Answer(pieces=(json.dumps(reply).encode(),))
    post(scripted.base_url, ledger, json.dumps({"model": MODEL, "messages": MESSAGES}).encode())
    (row,) = rows(ledger)
    assert (row["status"], row["error"], row["notes"]) == ("ok", None, None)
    assert (row["input_tokens"], row["output_tokens"], row["cost_nanousd"]) == (
        40,
        2,
        40 * INPUT + 2 * OUTPUT,
    )
