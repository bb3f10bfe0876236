"""The fast check after a stream (``plain_events``) says yes only where the exact reading finds
nothing wrong, and says yes to the ordinary streams it exists for.

The exact reading is ``output.stream_chunks``, which parses every event as the openai SDK would: a
None is a malformed event, an object with a non-null ``error`` is an error event. The generated
bodies mix ordinary chunks with what can go wrong in a stream: bad JSON, cut events, bytes that
are not UTF-8, control characters, escapes, comments, event names, multi-line data, ``\\r\\n``,
error events and keys that spell ``error`` with escapes.
"""

from __future__ import annotations

import json

from hypothesis import example, given
from hypothesis import strategies as st

from costkit.intercept.output import stream_chunks
from costkit.intercept.plainstream import plain_events

CHUNK = (
    '{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1760000000,"model":"gpt-4.1",'
    '"choices":[{"index":0,"delta":{"content":%s},"finish_reason":null}],"usage":null}'
)


def exact_reading_passes(body: bytes) -> bool:
    """What ``ResponseReader._check_events`` concludes the slow way: no malformed event, no error."""
    return all(chunk is not None and chunk.get("error") is None for chunk in stream_chunks(body))


def event(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def chunk(text: str) -> bytes:
    return (CHUNK % json.dumps(text, ensure_ascii=False)).encode()


texts = st.text(max_size=12)
payloads = st.one_of(
    texts.map(chunk),
    texts.map(lambda t: (CHUNK % json.dumps(t)).encode()),  # \u escapes for everything non-ASCII
    st.sampled_from(
        [
            b'{"choices": [}',
            b'{"choices":[]',
            b'{"a":1,}',
            b'{"a":01}',
            b'{"a":NaN}',
            b'{"a":1e999}',
            b'{"a":"\\ud800"}',
            b'{"a":"\x01"}',
            b'{"a":"\xff\xfe"}',
            b'{"a":"\xed\xa0\x80"}',
            b'{"a":1} {"b":2}',
            b"[1,2]",
            b'"text"',
            b"{}",
            b'{"error":null}',
            b'{"error":{"message":"overloaded"}}',
            b'{"error":"boom"}',
            b'{"\\u0065rror":{"message":"escaped key"}}',
            b'{"\\u0065rror":null}',
            b'{"error":null,"error":{"message":"last wins"}}',
            b'{"error":{"message":"x"},"error":null}',
            b"[DONE]",
        ]
    ),
    st.binary(max_size=20).map(lambda b: b"{" + b + b"}"),
)
plain_events_strategy = payloads.map(event)
odd_pieces = st.sampled_from(
    [
        b": keep-alive\n\n",
        b"event: error\ndata: {}\n\n",
        b'data: {"a":\ndata: 1}\n\n',
        b'data:{"a":1}\n\n',
        b'data: {"a":1}\r\n\r\n',
        b"\n\n",
        b"data: \n\n",
        b"id: 7\n\n",
    ]
)
bodies = st.lists(st.one_of(plain_events_strategy, plain_events_strategy, odd_pieces), max_size=8).map(
    b"".join
)


@given(body=bodies, done=st.booleans(), cut=st.integers(min_value=0, max_value=40))
@example(body=event(b'{"choices": [}'), done=True, cut=0)
@example(body=b"data: \n\n", done=False, cut=0)
@example(body=b"data: \n\n" + event(b'{"a":1}\n{"b":2}'), done=False, cut=0)
@example(body=event(b'{"\\u0065rror":{"message":"escaped key"}}'), done=False, cut=0)
@example(body=event(b'{"a":"\xff"}'), done=False, cut=0)
@example(body=event(chunk("x")) + event(b'{"error":null,"error":{"m":1}}'), done=False, cut=0)
def test_a_yes_is_never_wrong(body: bytes, done: bool, cut: int) -> None:
    if done:
        body += b"data: [DONE]\n\n"
    for candidate in (body, body[: len(body) - cut] if cut else body):
        if plain_events(candidate):
            assert exact_reading_passes(candidate), candidate


@given(st.lists(texts, min_size=1, max_size=30), st.booleans())
def test_ordinary_streams_are_proved_plain(texts_: list[str], done: bool) -> None:
    body = b"".join(event(chunk(t)) for t in texts_) + (b"data: [DONE]\n\n" if done else b"")
    assert exact_reading_passes(body)
    assert plain_events(body)
    assert plain_events(bytearray(body))  # the reader keeps its side copy in a bytearray


def test_each_kind_of_trouble_goes_to_the_exact_reading() -> None:
    good = event(chunk("hello")) + event(chunk(" world"))
    assert plain_events(good)
    for bad in (
        event(b'{"choices": [}'),  # the malformed line of issue 8
        event(b'{"error":{"message":"overloaded"}}'),
        event(b'{"\\u0065rror":{"message":"escaped key"}}'),
        event(b'{"a":"\xff"}'),
        event(b"[1]"),
        b": keep-alive\n\n",
        event(chunk("x")).replace(b"\n\n", b"\r\n\r\n"),
        event(chunk("x"))[:-1],  # not whole events
    ):
        assert not plain_events(good + bad), bad
    assert not plain_events(b"")
