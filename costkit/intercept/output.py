"""What a response delivered, for the output estimate: its text and its tool calls.

``stream_output`` reads the SSE events that passed (deltas joined per choice and per
tool call), ``message_output`` a plain answer's messages. Both take whatever the
upstream sent and never raise on odd shapes: what is not text is skipped.
"""

from __future__ import annotations

import json
from typing import Any

from costkit.intercept.sse import DONE, SSEScanner


def _index(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _chunks(body: bytes) -> list[dict[str, Any]]:
    out = []
    for _raw, payload in SSEScanner().feed(body):
        if payload is None or payload == DONE:
            continue
        try:
            chunk = json.loads(payload)
        except (ValueError, RecursionError):
            continue
        if isinstance(chunk, dict):
            out.append(chunk)
    return out


def stream_output(body: bytes) -> tuple[str, list[str]]:
    """(completion text, tool-call names and arguments) of an SSE body's whole events."""
    text: list[str] = []
    calls: dict[tuple[int, int], list[str]] = {}  # (choice, tool call) -> fragments
    for chunk in _chunks(body):
        choices = chunk.get("choices")
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
