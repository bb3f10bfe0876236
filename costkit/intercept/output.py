"""What a response delivered, for the output estimate: its text and its tool calls.

``stream_chunks`` parses the SSE events that passed (each a JSON object, or None where
it was not one), ``stream_output`` joins their deltas per choice and per tool call,
``message_output`` reads a plain answer's messages. They take whatever the upstream
sent and never raise on odd shapes: what is not text is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_JSON = json.JSONDecoder()
_JSON_SPACE = " \t\n\r"


def _index(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def stream_chunks(body: bytes | bytearray) -> Iterator[dict[str, Any] | None]:
    """The JSON object of each data payload in an SSE body's whole events, or None for a payload
    that is not one (``[DONE]`` and events without data are skipped). The body is read as UTF-8
    text, as the openai SDK reads it: one that is not UTF-8 starts with a None.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        text = body.decode("utf-8", "replace")
        yield None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    read_object, find, size = _JSON.raw_decode, text.find, len(text)
    at = 0
    while at < size:
        stop = find("\n\n", at)
        if stop < 0:
            stop = size
        begin, at = at, stop + 2
        try:
            if text.startswith("data: {", begin) and find("\n", begin, stop) < 0:
                # the usual event, one line of JSON: read in place; the object must end the event
                chunk, end = read_object(text, begin + 6)
                if end != stop and (end > stop or text[end:stop].strip(_JSON_SPACE)):
                    chunk = None
            else:
                payload = _data_of(text[begin:stop])
                if payload is None or payload == "[DONE]":
                    continue
                chunk = json.loads(payload)
        except (ValueError, RecursionError):
            chunk = None
        yield chunk if isinstance(chunk, dict) else None


def _data_of(event: str) -> str | None:
    """The ``data`` payload of one event (its data lines joined by newlines), or None: the text
    twin of ``sse._data_of``, for events other than one ``data: {...}`` line."""
    lines = [
        line[6:] if line.startswith("data: ") else line[5:]
        for line in event.split("\n")
        if line.startswith("data:")
    ]
    return "\n".join(lines) if lines else None


def stream_output(body: bytes | bytearray) -> tuple[str, list[str]]:
    """(completion text, tool-call names and arguments) of an SSE body's whole events."""
    text: list[str] = []
    calls: dict[tuple[int, int], list[str]] = {}  # (choice, tool call) -> fragments
    for chunk in stream_chunks(body):
        choices = chunk.get("choices") if chunk is not None else None
        for choice in choices if isinstance(choices, list) else ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                _collect_delta(delta, _index(choice.get("index")), text, calls)
    return "".join(text), ["".join(parts) for parts in calls.values()]


def message_output(body: object) -> tuple[str, list[str]]:
    """(completion text, tool-call names and arguments) of a plain chat-completions answer."""
    text: list[str] = []
    tools: list[str] = []
    choices = body.get("choices") if isinstance(body, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict):
            _collect(message, text, tools)
    return "".join(text), tools


def _collect(message: dict[str, Any], text: list[str], tools: list[str]) -> None:
    content = message.get("content")
    if isinstance(content, str):
        text.append(content)
    refusal = message.get("refusal")
    if isinstance(refusal, str):
        text.append(refusal)
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            tools.append(
                "".join(function[k] for k in ("name", "arguments") if isinstance(function.get(k), str))
            )


def _collect_delta(
    delta: dict[str, Any], choice: int, text: list[str], calls: dict[tuple[int, int], list[str]]
) -> None:
    """A streamed delta: text goes to ``text``; tool-call fragments join their call's parts."""
    for key in ("content", "refusal"):
        if isinstance(delta.get(key), str):
            text.append(delta[key])
    tool_calls = delta.get("tool_calls")
    for call in tool_calls if isinstance(tool_calls, list) else ():
        if not isinstance(call, dict):
            continue
        parts = calls.setdefault((choice, _index(call.get("index"))), [])
        function = call.get("function")
        if isinstance(function, dict):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    parts.append(function[key])
