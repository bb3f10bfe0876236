"""The exceptions costkit raises. Every one is a ``CostkitError``."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal


class CostkitError(Exception):
    """Base class of every error costkit raises on purpose."""


class InvalidRequest(CostkitError, ValueError):
    """A chat-completions body is malformed; ``where`` names the offending field."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}" if where else problem)


class UnknownModel(CostkitError, LookupError):
    """A model that is not in the catalogue (or has no price): never priced at a silent $0."""

    def __init__(self, model: object, known: Iterable[str], what: str = "model") -> None:
        self.model = model
        self.known = tuple(sorted(known))
        super().__init__(f"unknown {what} {model!r}; known: {', '.join(self.known)}")


class InvalidUsage(CostkitError, ValueError):
    """Token counts that cannot be priced (negative, or more cached than input)."""


class PriceBookError(CostkitError, ValueError):
    """A price file or price entry is invalid."""


class TokenizerError(CostkitError, RuntimeError):
    """The shipped vocabulary is missing or does not match tiktoken's published sha256."""


class RequestRefused(CostkitError):
    """A declared pre-flight refusal: raised before any byte of the request leaves."""


class ContextWindowExceeded(RequestRefused):
    """The request's input plus its output reserve does not fit the context window."""

    def __init__(self, tokens: int, limit: int, overflow: int, output_reserve: int = 0) -> None:
        self.tokens = tokens
        self.limit = limit
        self.overflow = overflow
        self.output_reserve = output_reserve
        super().__init__(
            f"request needs {tokens:,} input + {output_reserve:,} output tokens, over the "
            f"{limit:,}-token context window by {overflow:,}; nothing was sent"
        )


class ConfigError(CostkitError, ValueError):
    """A costkit configuration file (``costkit.toml``, ``[tool.costkit]``) that cannot be used.

    The message is one line naming the file, the budget and the field.
    """


class BudgetExceeded(RequestRefused):
    """The request's worst case does not fit what remains of a hard budget; nothing was sent.

    ``limit_usd``, ``spent_usd`` (settled spend in the budget's current period),
    ``reserved_usd`` (held by requests in flight) and ``request_usd`` (this request's
    worst case) are exact ``Decimal`` dollars.
    """

    def __init__(
        self,
        budget: str,
        limit_usd: Decimal,
        spent_usd: Decimal,
        reserved_usd: Decimal,
        request_usd: Decimal,
    ) -> None:
        self.budget = budget
        self.limit_usd = limit_usd
        self.spent_usd = spent_usd
        self.reserved_usd = reserved_usd
        self.request_usd = request_usd
        left = limit_usd - spent_usd - reserved_usd
        super().__init__(
            f"budget {budget!r} would be exceeded: ${spent_usd} spent and ${reserved_usd} reserved of its "
            f"${limit_usd} leave ${left}, less than this request's worst case of ${request_usd}; "
            "nothing was sent"
        )


class BudgetUnavailable(RequestRefused):
    """A hard budget could not be checked (its database does not answer): refused, nothing was sent.

    ``on_unavailable="allow"`` lets such requests through instead, with a warning.
    """

    def __init__(self, budgets: Iterable[str], reason: str) -> None:
        self.budgets = tuple(budgets)
        self.budget = self.budgets[0] if self.budgets else ""
        self.reason = reason
        names = ", ".join(repr(b) for b in self.budgets)
        super().__init__(f"budget {names} cannot be checked ({reason}); nothing was sent")


class BudgetUnpriced(RequestRefused):
    """A request under a hard budget whose worst case cannot be priced (unknown model, no price,
    a body that cannot be counted): refused rather than waved through at $0; nothing was sent."""

    def __init__(self, budget: str, reason: str) -> None:
        self.budget = budget
        self.reason = reason
        super().__init__(f"budget {budget!r}: the request's cost cannot be bounded ({reason}); nothing sent")
