"""One ledger row: what costkit knows about one chat-completions request.

This is the contract between the interceptor (which fills rows) and the ledger
(which stores them). Money is integer nano-USD; times are timezone-aware UTC.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

Status = Literal["ok", "error", "partial", "blocked"]
UsageSource = Literal["provider", "estimated"]

STATUSES: tuple[str, ...] = ("ok", "error", "partial", "blocked")
USAGE_SOURCES: tuple[str, ...] = ("provider", "estimated")


def new_request_id() -> str:
    """A fresh, unique request id (32 hex characters)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(slots=True)
class Row:
    """One request. ``request_id`` is unique in the ledger: recording it twice stores it once."""

    model: str
    status: Status
    request_id: str = field(default_factory=new_request_id)
    response_id: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    finished_at: datetime | None = None
    endpoint_host: str = ""
    http_status: int | None = None
    stream: bool = False
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    usage_source: UsageSource = "estimated"
    estimated_input_tokens: int | None = None
    cost_nanousd: int = 0
    price_id: str | None = None
    latency_us: int | None = None
    ttft_us: int | None = None
    x_metrics: dict[str, Any] | None = None
    tags: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    prompt_text: str | None = None
    completion_text: str | None = None
