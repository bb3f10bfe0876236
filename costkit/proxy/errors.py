"""The proxy's own answers, shaped as OpenAI's errors so every client's error handling applies.

``{"error": {"message", "type", "param", "code"}}`` with the status OpenAI uses for the same
kind of failure: 400 for the context window, 429 for a budget, 401 for a key, 502/504 when
the upstream cannot be reached. The ``code`` values starting with ``costkit_`` are costkit's.
"""

from __future__ import annotations

import json

from costkit.errors import (
    BudgetExceeded,
    BudgetUnavailable,
    BudgetUnpriced,
    ContextWindowExceeded,
    RequestRefused,
)

JSON_HEADERS = [(b"content-type", b"application/json")]


def error_body(message: str, kind: str, code: str, param: str | None = None) -> bytes:
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, ensure_ascii=False
    ).encode()


def refusal_answer(refusal: RequestRefused) -> tuple[int, bytes]:
    """Status and body for a declared pre-flight refusal (already recorded as ``blocked``)."""
    message = str(refusal)
    if isinstance(refusal, ContextWindowExceeded):
        return 400, error_body(message, "invalid_request_error", "context_length_exceeded", "messages")
    if isinstance(refusal, BudgetExceeded):
        return 429, error_body(message, "insufficient_quota", "costkit_budget_exceeded")
    if isinstance(refusal, BudgetUnpriced):
        return 400, error_body(message, "invalid_request_error", "costkit_budget_unpriced", "model")
    if isinstance(refusal, BudgetUnavailable):
        return 503, error_body(message, "server_error", "costkit_budget_unavailable")
    return 400, error_body(message, "invalid_request_error", "costkit_refused")


UNAUTHORIZED = error_body(
    "costkit proxy: missing or unknown API key (send a local key as 'Authorization: Bearer <key>')",
    "invalid_request_error",
    "invalid_api_key",
)


def upstream_failure(timed_out: bool, detail: str) -> tuple[int, bytes]:
    """502 (or 504 after a timeout) when the upstream gave no answer; the row says ``error``."""
    if timed_out:
        return 504, error_body(f"costkit proxy: the upstream timed out ({detail})", "server_error", "timeout")
    return 502, error_body(
        f"costkit proxy: the upstream could not be reached ({detail})", "server_error", "upstream_unreachable"
    )
