"""The provider's usage and metrics, read defensively, and the tokens a row is charged for.

Provider usage is the truth when it is usable: a token count is an integral number
(``2006``, ``2006.0`` or the digit string ``"2006"``) from 0 to ``MAX_USAGE_TOKENS``.
Anything else (a bool, a negative or fractional number, ``"abc"``, NaN, a count past
the bound) is unusable, and so is a required field that is missing. ``charged_tokens``
falls back to costkit's own estimate for each unusable field on its own (input from
costkit's count, cached 0, output from what arrived), says on the row what it did, and
calls the row ``provider`` only when every figure it charges came from the provider.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from costkit.ledger.row import UsageSource

MAX_USAGE_TOKENS = 1_000_000_000
"""No request counts a billion tokens (the context window is about a million): past it, a count is junk."""
METRIC_FIELDS = ("ttft_seconds", "tps", "total_time_seconds")
_DIGITS = re.compile(r"[0-9]{1,12}")


def read_count(value: object) -> int | None:
    """An integral token count (``2006``, ``2006.0``, ``"2006"``), or None when ``value`` is not one."""
    number: int
    if type(value) is int:
        number = value
    elif type(value) is float:
        if not value.is_integer():  # NaN and infinities are not integers either
            return None
        number = int(value)
    elif type(value) is str and _DIGITS.fullmatch(value):
        number = int(value)
    else:
        return None
    return number if 0 <= number <= MAX_USAGE_TOKENS else None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass(frozen=True, slots=True)
class Usage:
    """A provider usage object as read: a count is None when it was missing or unusable."""

    prompt_tokens: int | None
    cached_tokens: int | None
    completion_tokens: int | None
    problems: tuple[str, ...] = ()
    """One phrase per field that could not be used (``usage.completion_tokens is missing``)."""


def _count_field(usage: dict[str, Any], name: str, problems: list[str]) -> int | None:
    if name not in usage:
        problems.append(f"usage.{name} is missing")
        return None
    count = read_count(usage[name])
    if count is None:
        problems.append(f"usage.{name} {_shown(usage[name])} is not a token count")
    return count


def parse_usage(usage: object) -> Usage | None:
    """The usage a response carried; None when it carried none (absent or ``null``)."""
    if usage is None:
        return None
    if not isinstance(usage, dict):
        return Usage(None, None, None, (f"usage {_shown(usage)} is not an object",))
    problems: list[str] = []
    prompt = _count_field(usage, "prompt_tokens", problems)
    completion = _count_field(usage, "completion_tokens", problems)
    details = usage.get("prompt_tokens_details")
    cached: int | None = 0  # no details: nothing was served from the cache
    if isinstance(details, dict):
        raw = details.get("cached_tokens")
        if raw is not None:
            cached = read_count(raw)
            if cached is None:
                problems.append(
                    f"usage.prompt_tokens_details.cached_tokens {_shown(raw)} is not a token count"
                )
    elif details is not None:
        cached = None
        problems.append(f"usage.prompt_tokens_details {_shown(details)} is not an object")
    return Usage(prompt, cached, completion, tuple(problems))


@dataclass(slots=True)
class Charged:
    """The tokens a row is charged for, where they came from, and what was assumed."""

    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    usage_source: UsageSource
    input_known: bool
    """False when neither the provider nor costkit's count gave the input: the row cannot be priced."""
    notes: list[str] = field(default_factory=list)


def charged_tokens(
    usage: Usage | None, estimated_input: int | None, estimate_output: Callable[[], int]
) -> Charged:
    """Provider usage where usable, else costkit's estimate, field by field, with notes."""
    if usage is None:
        output = estimate_output()
        charged = Charged(estimated_input or 0, 0, output, "estimated", estimated_input is not None)
        charged.notes.append(
            "no usage from the provider: input from costkit's count"
            + ("" if estimated_input is not None else " (not available)")
            + ", output estimated from what arrived"
        )
        return charged
    notes = list(usage.problems)
    source: UsageSource = "provider" if not usage.problems else "estimated"
    if usage.prompt_tokens is not None:
        input_tokens, input_known = usage.prompt_tokens, True
    else:
        input_tokens, input_known = estimated_input or 0, estimated_input is not None
        notes.append("input from costkit's count" if input_known else "input unknown")
    if usage.completion_tokens is not None:
        output = usage.completion_tokens
    else:
        output = estimate_output()
        notes.append("output estimated from what arrived")
    cached = usage.cached_tokens
    if cached is None:
        cached = 0
        notes.append("cached tokens taken as 0")
    elif cached > input_tokens:
        notes.append(
            f"cached tokens ({cached}) exceed prompt tokens ({input_tokens}): charged as uncached input"
        )
        cached, source = 0, "estimated"
    return Charged(input_tokens, cached, output, source, input_known, notes)


def clean_metrics(raw: object) -> tuple[dict[str, float] | None, str | None]:
    """The known numeric ``x_metrics`` fields (finite, non-negative) and a note on what was dropped."""
    if raw is None:
        return None, None
    if not isinstance(raw, dict):
        return None, "x_metrics dropped: not an object"
    kept: dict[str, float] = {}
    for name in METRIC_FIELDS:
        value = raw.get(name)
        if type(value) in (int, float):
            try:
                number = float(value)  # type: ignore[arg-type]
            except OverflowError:
                continue
            if math.isfinite(number) and number >= 0:
                kept[name] = number
    dropped = len(raw) - len(kept)
    note = f"x_metrics: {dropped} field(s) dropped (only finite {', '.join(METRIC_FIELDS)} are kept)"
    return (kept or None), (note if dropped else None)
