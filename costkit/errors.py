"""The exceptions costkit raises. Every one is a ``CostkitError``."""

from __future__ import annotations

from collections.abc import Iterable


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
