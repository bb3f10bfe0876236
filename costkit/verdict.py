"""The pre-flight verdict: will a request fit the context window, and what can it cost at most?

The verdict is cheap: every o200k token is at least one UTF-8 byte, so when the
body's bytes plus overheads plus the output reserve fit, the request fits and no
BPE runs. The exact count runs only when the bound is not decisive or when
``input_tokens``, ``headroom`` or the cost is asked for (then once, and cached).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from functools import cached_property
from typing import Any

from costkit.counting.images import ImageSizes
from costkit.counting.models import Model
from costkit.counting.requests import RequestCount, count_request, input_upper_bound
from costkit.errors import InvalidRequest
from costkit.pricing import Cost, PriceBook, cost

# What the provider generates when a request names no max_tokens (its documented default).
DEFAULT_OUTPUT_RESERVE = 4096


def output_reserve(body: dict[str, Any], default: int = DEFAULT_OUTPUT_RESERVE) -> int:
    """Output tokens a request may use: ``max_completion_tokens``, else ``max_tokens``, else ``default``."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if type(value) is not int or value < 1:
            raise InvalidRequest(key, f"must be a positive integer, not {value!r}")
        return value
    return default


@dataclass(eq=False)
class Preflight:
    """The pre-flight verdict for one request. Exact figures are computed on first access."""

    body: dict[str, Any] = field(repr=False)
    model: Model
    output_reserve: int
    context_limit: int
    upper_bound: int
    image_sizes: ImageSizes | None = field(default=None, repr=False)
    price_book: PriceBook | None = field(default=None, repr=False)
    at: date | datetime | None = field(default=None, repr=False)
    host: str | None = field(default=None, repr=False)
    """The endpoint host the request goes to: its own price entries apply (see ``PriceBook``)."""

    @cached_property
    def count(self) -> RequestCount:
        """The exact count (runs the BPE on first access; later messages hit the cache)."""
        return count_request(self.body, image_sizes=self.image_sizes)

    @property
    def exact(self) -> bool:
        """Whether the exact count has been computed."""
        return "count" in self.__dict__

    @property
    def input_tokens(self) -> int:
        return self.count.input_tokens

    @property
    def fits(self) -> bool:
        """input + output reserve <= context limit; decided from the byte bound when it can be."""
        if self.upper_bound + self.output_reserve <= self.context_limit:
            return True
        return self.input_tokens + self.output_reserve <= self.context_limit

    @property
    def headroom(self) -> int:
        """Tokens left in the window after input and reserve (negative: the overflow)."""
        return self.context_limit - self.input_tokens - self.output_reserve

    @property
    def overflow(self) -> int:
        return max(0, -self.headroom)

    @property
    def reserve_exceeds_max_output(self) -> bool:
        """The reserve asks for more than the model can ever produce (32,768 for gpt-4.1)."""
        return self.output_reserve > self.model.max_output_tokens

    @cached_property
    def max_cost(self) -> Cost:
        """Worst case: every input token uncached, and the whole output reserve generated."""
        return cost(
            self.model.id,
            self.input_tokens,
            0,
            self.output_reserve,
            self.at,
            price_book=self.price_book,
            host=self.host,
        )

    @property
    def max_cost_nanousd(self) -> int:
        return self.max_cost.nanousd

    @property
    def max_cost_usd(self) -> Decimal:
        return self.max_cost.usd


def preflight(
    body: dict[str, Any],
    context_limit: int | None = None,
    *,
    default_output_reserve: int = DEFAULT_OUTPUT_RESERVE,
    exact: bool = False,
    image_sizes: ImageSizes | None = None,
    price_book: PriceBook | None = None,
    at: date | datetime | None = None,
    host: str | None = None,
) -> Preflight:
    """The pre-flight verdict for a chat-completions ``body``.

    ``context_limit`` defaults to the model's window (1,047,576 for gpt-4.1); a
    smaller one applies a policy. ``default_output_reserve`` is the output a
    request without ``max_tokens`` may use (the provider's default, 4096).
    ``exact=True`` counts the input right away instead of on first need. ``price_book``,
    ``at`` and ``host`` (the endpoint host) choose the price of the worst case.
    Raises ``InvalidRequest`` / ``UnknownModel`` for a malformed body.
    """
    model, bound = input_upper_bound(body, image_sizes=image_sizes)
    limit = model.context_window if context_limit is None else context_limit
    if type(limit) is not int or limit < 1:
        raise InvalidRequest("context_limit", f"must be a positive integer, not {limit!r}")
    if type(default_output_reserve) is not int or default_output_reserve < 1:
        raise InvalidRequest("default_output_reserve", "must be a positive integer")
    verdict = Preflight(
        body=body,
        model=model,
        output_reserve=output_reserve(body, default_output_reserve),
        context_limit=limit,
        upper_bound=bound,
        image_sizes=image_sizes,
        price_book=price_book,
        at=at,
        host=host,
    )
    if exact:
        _ = verdict.count
    return verdict
