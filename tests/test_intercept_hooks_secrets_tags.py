"""A hook's bug never switches accounting off; secrets echoed back are never stored; one tag rule.

Real SQLite ledger files, the official openai SDK, the fake upstream on 127.0.0.1.
"""

from __future__ import annotations

import logging

import httpx
import openai
import pytest

import costkit
from costkit import Ledger
from tests.fakeupstream import count_text
from tests.test_intercept import (
    BODY_MESSAGES,
    assert_row_from_provider,
    create,
    expected_prompt,
    ledger,
    rows,
    sdk,
    upstream,
)

__all__ = ["ledger", "upstream"]

INPUT, OUTPUT = 2000, 8000  # nano-USD per token, gpt-4.1


@pytest.fixture(autouse=True)
def fresh_log_once():
    """Failures are logged once per process: each test here starts from none logged."""
    from costkit.intercept import options

    options._logged.clear()


# Hooks -----------------------------------------------------------------------------------


class Buggy:
    def __init__(self, where: str) -> None:
        self.where = where
        self.seen: list[str] = []

    def before_send(self, call) -> None:
        if self.where == "before_send":
            raise ValueError(f"budget lookup failed for {call.headers[0]!r}")

    def settled(self, call, row) -> None:
        self.seen.append(row.status)
        if self.where == "settled":
            raise KeyError("team")


def test_a_hook_raising_in_before_send_is_logged_and_the_request_still_accounted(upstream, ledger, caplog):
    caplog.set_level(logging.DEBUG, logger="costkit")
    upstream.reset()
    hook = Buggy("before_send")
    client = sdk(upstream, ledger, hooks=[hook])
    replies = [create(client, "json", stream=False) for _ in range(2)]
    assert len(upstream.requests) == 2  # sent
    found = rows(ledger)
    assert [r["status"] for r in found] == ["ok", "ok"]
    for row, reply, sent in zip(found, replies, upstream.requests, strict=True):
        prompt, completion = reply.usage.prompt_tokens, reply.usage.completion_tokens
        assert (row["usage_source"], row["input_tokens"], row["output_tokens"]) == (
            "provider",
            prompt,
            completion,
        )
        assert prompt != expected_prompt(stream=False)  # the provider's count, not costkit's
        assert row["cost_nanousd"] == prompt * INPUT + completion * OUTPUT
        assert_row_from_provider(row, sent, count_text(reply.choices[0].message.content))
        assert "hook Buggy.before_send failed (ValueError)" in row["notes"]
    errors = [
        r for r in caplog.records if r.levelno >= logging.ERROR and "Buggy.before_send" in r.getMessage()
    ]
    assert len(errors) == 1  # once per hook and error type
    assert hook.seen == ["ok", "ok"]


def test_a_hook_raising_in_settled_does_not_lose_the_row(upstream, ledger, caplog):
    caplog.set_level(logging.ERROR, logger="costkit")
    hook = Buggy("settled")
    client = sdk(upstream, ledger, hooks=[hook])
    create(client, "json", stream=False)
    list(create(client, "sse", stream=True))
    found = rows(ledger)
    assert [r["status"] for r in found] == ["ok", "ok"]
    assert_row_from_provider(found[0], upstream.requests[-2])
    assert_row_from_provider(found[1], upstream.requests[-1])
    assert sum("Buggy.settled" in r.getMessage() for r in caplog.records) == 1


# Secrets -----------------------------------------------------------------------------------

KEY = "sk-proj-Zx9LIVEkeyABC123def456GHI789jkl"


def files_hold(directory, secret: str) -> list[str]:
    return [str(f) for f in directory.rglob("*") if f.is_file() and secret.encode() in f.read_bytes()]


def test_a_key_echoed_by_the_upstream_is_never_stored_nor_logged(upstream, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    book = Ledger(f"sqlite:///{tmp_path / 'secrets.sqlite'}", store_text=True)
    plain = "plainsecret-without-shape"  # not key-shaped: redacted because it is the caller's own
    for key in (KEY, plain):
        client = costkit.wrap(
            openai.OpenAI(base_url=upstream.base_url, api_key=key, max_retries=0), ledger=book
        )
        with pytest.raises(openai.AuthenticationError) as caught:
            create(client, "json", {"X-Fake-Status": "401"}, stream=False)
        assert key in str(caught.value)  # the caller still sees exactly what the upstream said
    found = rows(book)
    book.close()
    assert [r["status"] for r in found] == ["error", "error"]
    for row in found:
        assert row["error"].startswith("HTTP 401: Incorrect API key provided: [redacted]. You can find")
    assert "platform.openai.com/account/api-keys" in found[0]["error"]  # ordinary text is kept
    for secret in (KEY, plain, "Zx9LIVEkey"):
        assert files_hold(tmp_path, secret) == []
        assert secret not in caplog.text


class Refusing(httpx.BaseTransport):
    def handle_request(self, request):
        raise httpx.ConnectError(
            f"proxy http://ops:hunter2-{KEY[-6:]}@proxy.internal:3128 refused {request.headers['x-api-key']}"
            f" after Bearer {KEY}",
            request=request,
        )


def test_connection_error_text_is_redacted_before_it_is_stored(ledger):
    client = costkit.wrap(httpx.Client(transport=Refusing()), ledger=ledger)
    secret = "tenant-key-0000-1111"
    with pytest.raises(httpx.ConnectError):
        client.post(
            "http://127.0.0.1:9/v1/chat/completions",
            json={"model": "gpt-4.1", "messages": BODY_MESSAGES},
            headers={"x-api-key": secret},
        )
    (row,) = rows(ledger)
    assert row["status"] == "error"
    assert row["error"] == (
        "ConnectError: proxy http://[redacted]@proxy.internal:3128 refused [redacted] after Bearer [redacted]"
    )


def test_a_hooks_exception_text_reaches_no_log_with_the_key(upstream, ledger, caplog):
    caplog.set_level(logging.DEBUG)
    client = costkit.wrap(
        openai.OpenAI(base_url=upstream.base_url, api_key="abc-own-credential-42", max_retries=0),
        ledger=ledger,
        hooks=[Leaky()],
    )
    create(client, "json", stream=False)
    assert rows(ledger)[0]["status"] == "ok"
    assert_row_from_provider(rows(ledger)[0], upstream.requests[-1])
    assert "Leaky.before_send" in caplog.text
    assert "abc-own-credential-42" not in caplog.text


class Witness:
    """Keeps what each hook call was handed: the call object, and in ``settled`` the row beside it."""

    def __init__(self) -> None:
        self.before: list[object] = []
        self.settled_with: list[tuple[object, object]] = []

    def before_send(self, call) -> None:
        self.before.append(call)

    def settled(self, call, row) -> None:
        self.settled_with.append((call, row))


def test_settled_is_handed_the_same_call_before_send_saw_with_its_row(upstream, ledger):
    """A hook pairs its two calls by the ``call`` object (its request id, tags, headers)."""
    witness = Witness()
    client = sdk(upstream, ledger, hooks=[witness])
    create(client, "json", stream=False)
    assert list(create(client, "sse", stream=True))
    recorded = rows(ledger)
    assert len(witness.before) == len(witness.settled_with) == len(recorded) == 2
    for seen, (call, row), stored in zip(witness.before, witness.settled_with, recorded, strict=True):
        assert call is seen
        assert call.request_id == row.request_id == stored["request_id"]
        assert row.status == stored["status"] == "ok"


class Leaky:
    def before_send(self, call) -> None:
        auth = dict(call.headers)[b"Authorization"].decode()
        raise RuntimeError(f"could not check {auth}")

    def settled(self, call, row) -> None:
        pass


# Tags --------------------------------------------------------------------------------------


def test_one_malformed_header_item_drops_only_itself_and_is_noted(upstream, ledger, caplog):
    caplog.set_level(logging.DEBUG)
    upstream.reset()
    header = "team=search, oops, =nokey, user=42,, big=" + "x" * 201 + ", feature=café"
    client = costkit.wrap(httpx.Client(), ledger=ledger)  # raw bytes: the SDK sends ASCII headers only
    body = {"model": "gpt-4.1", "messages": BODY_MESSAGES, "stream": False}
    headers = {"X-Costkit-Tags": header.encode(), "X-Fake-Scenario": "json"}
    client.post(f"{upstream.base_url}/chat/completions", json=body, headers=headers)
    (row,) = rows(ledger)
    assert row["tags"] == {"team": "search", "user": "42", "feature": "café"}
    notes = row["notes"]
    assert "X-Costkit-Tags item 2 of 7 dropped: not key=value" in notes
    assert "X-Costkit-Tags item 3 of 7 dropped: empty key" in notes
    assert "tag 'big' from X-Costkit-Tags dropped: the value is longer than 200 characters" in notes
    assert upstream.requests[-1].header("x-costkit-tags") is None
    assert "oops" not in caplog.text and "nokey" not in caplog.text  # the header never reaches a log
    assert_row_from_provider(row, upstream.requests[-1])


def test_bad_tags_in_costkit_tags_and_the_transport_are_dropped_with_one_warning(upstream, ledger, caplog):
    caplog.set_level(logging.WARNING, logger="costkit")
    client = sdk(upstream, ledger, tags={"team": "platform", "": "x", "owner": "y" * 300})
    with costkit.tags(job="nightly", shard=3, bad="a\x00b") as active:
        assert active == {"job": "nightly", "shard": "3"}
        create(client, "json", stream=False)
    (row,) = rows(ledger)
    assert row["tags"] == {"team": "platform", "job": "nightly", "shard": "3"}
    assert_row_from_provider(row, upstream.requests[-1])
    for expected in (
        "tag '' from Transport(tags=) dropped",
        "tag 'owner' from Transport(tags=) dropped",
        "tag 'bad' from costkit.tags() dropped: it holds a NUL character",
    ):
        assert expected in row["notes"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one for the transport, one for the block


def test_the_tags_header_is_removed_on_other_endpoints_too(upstream, ledger):
    upstream.reset()
    client = sdk(upstream, ledger)
    client.models.list(extra_headers={"X-Costkit-Tags": "team=search"})
    assert upstream.requests[-1].path == "/v1/models"
    assert upstream.requests[-1].header("x-costkit-tags") is None
    assert rows(ledger) == []


def test_key_shaped_strings_are_redacted_and_ordinary_text_is_not():
    from costkit.intercept.redact import redact

    assert redact(f"Incorrect API key provided: {KEY}.") == "Incorrect API key provided: sk-[redacted]."
    assert redact("Authorization: Bearer abc.DEF-123456789") == "Authorization: Bearer [redacted]"
    assert redact("key 0123456789abcdef0123456789abcdef0123 here") == "key [redacted] here"
    assert redact("token AbCdEfGhIjKlMnOpQrStUvWxYz0123456789ab") == "token [redacted]"
    for ordinary in (
        "Bearer authentication is required for openai/gpt-4.1-2025-04-14",
        "Rate limit reached for openai/gpt-4.1 on tokens per min (TPM): Limit 30000, Used 30000.",
        "see req_0123456789abcdef0123456789abcdef and chatcmpl-abc123",
        "/home/user/Projects2024/venv/lib/python3.11/site-packages/httpx/_client.py",
        "Pneumonoultramicroscopicsilicovolcanoconiosis is a word",
        "https://platform.openai.com/account/api-keys",
    ):
        assert redact(ordinary) == ordinary
