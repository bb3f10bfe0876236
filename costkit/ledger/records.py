"""Ledger rows in their three shapes: ``Row`` objects, insert parameters, and spool lines.

A *record* is a plain dict with one key per ``costkit_requests`` column plus ``tags``
(a ``dict[str, str]``). Rows become records on the writer thread (or, in durable
mode, on the caller's thread); spool lines are records as one JSON object each,
datetimes as ISO 8601 strings. Prompt and completion text are dropped here
unless the ledger stores text, so they never reach the spool either.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from costkit.ledger.row import STATUSES, USAGE_SOURCES, Row, clean_tags

SPOOL_FORMAT = 1
_STATUSES = frozenset(STATUSES)
_USAGE_SOURCES = frozenset(USAGE_SOURCES)
_COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "cost_nanousd")
_OPTIONAL_COUNTS = ("http_status", "estimated_input_tokens", "latency_us", "ttft_us")
_TIMES = ("started_at", "finished_at")
_LIMITS = dict.fromkeys(_COUNTS + _OPTIONAL_COUNTS, 2**31 - 1) | dict.fromkeys(
    ("cost_nanousd", "latency_us", "ttft_us"), 2**63 - 1
)
"""The largest value each integer column holds (PostgreSQL ``integer``/``bigint``; SQLite's int64)."""
_TEXTS = (
    "request_id",
    "response_id",
    "model",
    "endpoint_host",
    "price_id",
    "error",
    "notes",
    "prompt_text",
    "completion_text",
)
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
"""NUL (PostgreSQL text cannot hold it) and unpaired surrogates (no UTF-8 for them, so no spool line)."""

Record = dict[str, Any]
TagParams = dict[str, str]


def storable(text: str) -> str:
    """``text`` with NUL and unpaired surrogates as U+FFFD, so every backend and the spool take it."""
    return _UNSTORABLE.sub("\ufffd", text)


def tidy_row(row: Row) -> None:
    """Make what an upstream or a caller may send storable, and say so on the row (``row.notes``).

    Tags follow the one tag rule (``clean_tags``: bad tags are dropped with a note);
    NUL and unpaired surrogates in text become U+FFFD; ``x_metrics`` that is not plain
    JSON (NaN, objects JSON cannot hold) is dropped. Raises ``ValueError`` only when
    ``tags`` is not a mapping at all. The row's ``tags`` becomes a dict of its own,
    so a tags dict the caller shares with other rows is never changed.
    """
    if type(row.tags) is not dict and not isinstance(row.tags, Mapping):
        raise ValueError(f"row.tags must be a mapping of strings to strings, not {type(row.tags).__name__}")
    row.tags, notes = clean_tags(row.tags, "Row.tags")
    texts = (
        row.request_id,
        row.response_id,
        row.model,
        row.endpoint_host,
        row.price_id,
        row.error,
        row.notes,
        row.prompt_text,
        row.completion_text,
    )
    # One search over all of them in the common case (nothing to replace); field by field otherwise.
    if _UNSTORABLE.search("".join([t for t in texts if isinstance(t, str)])) is not None:
        for name in _TEXTS:
            value = getattr(row, name)
            if isinstance(value, str) and _UNSTORABLE.search(value):
                setattr(row, name, storable(value))
                notes.append(f"{name}: NUL or unpaired surrogate characters replaced by U+FFFD")
    if row.x_metrics is not None:
        problem = _json_problem(row.x_metrics)
        if problem is not None:
            row.x_metrics = None
            notes.append(f"x_metrics dropped: {problem}")
    for note in notes:
        row.add_note(note)


def _json_problem(value: object) -> str | None:
    if not isinstance(value, dict):
        return f"not a JSON object but {type(value).__name__}"
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        return str(error)[:100]
    if _UNSTORABLE.search(text):
        return "it holds NUL or unpaired surrogate characters"
    return None


def check_row(row: Row) -> None:
    """Raise ``ValueError`` if ``row`` breaks the ``Row`` contract, so it can never poison a batch.

    Checked: the request id, status and usage source, aware datetimes, integer
    (never float, never negative, within the column's range) counts and money, and
    string tags (``tidy_row`` has already dropped any other).
    """
    if not isinstance(row, Row):
        raise TypeError(f"Ledger.record takes a costkit Row, not {type(row).__name__}")
    if not isinstance(row.request_id, str) or not row.request_id:
        raise ValueError("row.request_id must be a non-empty string")
    if row.status not in _STATUSES:
        raise ValueError(f"row.status {row.status!r} is not one of {', '.join(STATUSES)}")
    if row.usage_source not in _USAGE_SOURCES:
        raise ValueError(f"row.usage_source {row.usage_source!r} is not one of {', '.join(USAGE_SOURCES)}")
    if not isinstance(row.model, str) or not isinstance(row.endpoint_host, str):
        raise ValueError("row.model and row.endpoint_host must be strings")
    started, finished = row.started_at, row.finished_at
    if not isinstance(started, datetime) or started.tzinfo is None:
        raise ValueError("row.started_at must be a timezone-aware datetime")
    if finished is not None and (not isinstance(finished, datetime) or finished.tzinfo is None):
        raise ValueError("row.finished_at must be a timezone-aware datetime or None")
    for name in _COUNTS:
        value = getattr(row, name)
        if type(value) is not int or not 0 <= value <= _LIMITS[name]:
            raise ValueError(f"row.{name} must be an int from 0 to {_LIMITS[name]}, not {value!r}")
    for name in _OPTIONAL_COUNTS:
        value = getattr(row, name)
        if value is not None and (type(value) is not int or not 0 <= value <= _LIMITS[name]):
            raise ValueError(f"row.{name} must be None or an int from 0 to {_LIMITS[name]}, not {value!r}")
    for key, value in row.tags.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise ValueError(f"row.tags must map non-empty strings to strings: {key!r}={value!r}")


def record_of(row: Row, store_text: bool) -> Record:
    """The record of a checked row; text fields are None unless ``store_text``."""
    return {
        "request_id": row.request_id,
        "response_id": row.response_id,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "model": row.model,
        "endpoint_host": row.endpoint_host,
        "status": row.status,
        "http_status": row.http_status,
        "stream": bool(row.stream),
        "input_tokens": row.input_tokens,
        "cached_input_tokens": row.cached_input_tokens,
        "output_tokens": row.output_tokens,
        "usage_source": row.usage_source,
        "estimated_input_tokens": row.estimated_input_tokens,
        "cost_nanousd": row.cost_nanousd,
        "price_id": row.price_id,
        "latency_us": row.latency_us,
        "ttft_us": row.ttft_us,
        "x_metrics": row.x_metrics,
        "error": row.error,
        "prompt_text": row.prompt_text if store_text else None,
        "completion_text": row.completion_text if store_text else None,
        "notes": row.notes,
        "tags": row.tags,
    }


def insert_params(records: list[Record]) -> tuple[list[Record], list[TagParams]]:
    """Parameters for the ``costkit_requests`` and ``costkit_request_tags`` inserts of a batch of records."""
    rows: list[Record] = []
    tags: list[TagParams] = []
    for record in records:
        params = dict(record)
        pairs = params.pop("tags")
        rows.append(params)
        if pairs:
            request_id = params["request_id"]
            tags.extend({"request_id": request_id, "key": k, "value": v} for k, v in pairs.items())
    return rows, tags


def spool_line(record: Record) -> bytes:
    """One spool line (JSON, newline-terminated) for a record."""
    data = dict(record)
    for name in _TIMES:
        if data[name] is not None:
            data[name] = data[name].isoformat()
    data["v"] = SPOOL_FORMAT
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def record_from_line(line: bytes) -> Record:
    """The record a spool line holds; raises ``ValueError`` for a torn or foreign line."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.pop("v", None) != SPOOL_FORMAT:
        raise ValueError("not a costkit spool record")
    for name in _TIMES:
        if data.get(name) is not None:
            data[name] = datetime.fromisoformat(data[name])
    row = Row(**data)
    tidy_row(row)  # lines an older costkit or another process wrote may hold what no database takes
    check_row(row)
    return record_of(row, store_text=True)
