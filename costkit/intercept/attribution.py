"""Tags that attribute spend (team, user, feature, job…) to ledger rows.

Three sources, most specific last: the transport's own ``tags=``, the
``costkit.tags(...)`` context (on contextvars, so each thread and each asyncio
task sees its own), and a request's ``X-Costkit-Tags: team=search,user=42``
header, which the interceptor removes before the request goes upstream.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType

from costkit.errors import CostkitError

TAGS_HEADER = "x-costkit-tags"
MAX_TAG_LENGTH = 200

_current: ContextVar[Mapping[str, str]] = ContextVar("costkit_tags", default=MappingProxyType({}))


class InvalidTags(CostkitError, ValueError):
    """Tags that are not short ``key=value`` strings."""


def _checked(tags: Mapping[str, object]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tags.items():
        if not isinstance(key, str) or not key or len(key) > MAX_TAG_LENGTH:
            raise InvalidTags(
                f"tag keys must be non-empty strings of at most {MAX_TAG_LENGTH} characters: {key!r}"
            )
        text = value if isinstance(value, str) else str(value)
        if len(text) > MAX_TAG_LENGTH:
            raise InvalidTags(f"tag {key!r} is longer than {MAX_TAG_LENGTH} characters")
        out[key] = text
    return out


@contextmanager
def tags(**values: object) -> Iterator[dict[str, str]]:
    """Attribute every request made inside the block: ``with costkit.tags(team="search"):``.

    Nested blocks add to (and may override) the outer ones. Values are stored as text.
    """
    merged = {**_current.get(), **_checked(values)}
    token = _current.set(merged)
    try:
        yield merged
    finally:
        _current.reset(token)


def current_tags() -> Mapping[str, str]:
    """The tags of the innermost ``costkit.tags`` block in this thread or task."""
    return _current.get()


def parse_tags_header(value: str) -> dict[str, str]:
    """``"team=search, user=42"`` -> ``{"team": "search", "user": "42"}``."""
    out: dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise InvalidTags(f"X-Costkit-Tags items must be key=value, not {item!r}")
        out[key.strip()] = val.strip()
    return _checked(out)
