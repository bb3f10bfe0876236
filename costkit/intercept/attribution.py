"""Tags that attribute spend (team, user, feature, job…) to ledger rows.

Three sources, most specific last: the transport's own ``tags=``, the
``costkit.tags(...)`` context (on contextvars, so each thread and each asyncio
task sees its own), and a request's ``X-Costkit-Tags: team=search,user=42``
header, which the interceptor removes before the request goes upstream (on every
endpoint). Every source goes through ``costkit.ledger.row.clean_tags``: valid tags
are kept, a bad one is dropped and said so on the row's notes; nothing raises.
``costkit.tags()`` and ``Transport(tags=)`` also log one warning for what they drop.
The header's value never reaches a log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any

from costkit.ledger.row import MAX_TAG_LENGTH, clean_tags

__all__ = ["MAX_TAG_LENGTH", "TAGS_HEADER", "current_tag_notes", "current_tags", "parse_tags_header", "tags"]

TAGS_HEADER = "x-costkit-tags"
HEADER_SOURCE = "X-Costkit-Tags"

log = logging.getLogger("costkit")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_current: ContextVar[tuple[Mapping[str, str], tuple[str, ...]]] = ContextVar(
    "costkit_tags", default=(_EMPTY, ())
)


def checked_tags(values: Mapping[Any, Any], source: str) -> tuple[dict[str, str], list[str]]:
    """``clean_tags`` plus one logged warning naming what was dropped (never the values)."""
    kept, notes = clean_tags(values, source)
    if notes:
        log.warning("costkit: %s", "; ".join(notes))
    return kept, notes


@contextmanager
def tags(**values: object) -> Iterator[dict[str, str]]:
    """Attribute every request made inside the block: ``with costkit.tags(team="search"):``.

    Nested blocks add to (and may override) the outer ones. Numbers and booleans are stored
    as text. A bad tag (over ``MAX_TAG_LENGTH`` characters, a NUL, a value that is not text)
    is dropped with one logged warning and a note on each row made in the block; it never raises.
    """
    kept, notes = checked_tags(values, "costkit.tags()")
    outer, outer_notes = _current.get()
    merged = {**outer, **kept}
    token = _current.set((MappingProxyType(merged), outer_notes + tuple(notes)))
    try:
        yield dict(merged)
    finally:
        _current.reset(token)


def current_tags() -> Mapping[str, str]:
    """The tags of the innermost ``costkit.tags`` block in this thread or task."""
    return _current.get()[0]


def current_tag_notes() -> tuple[str, ...]:
    """What the enclosing ``costkit.tags`` blocks dropped, for the rows made inside them."""
    return _current.get()[1]


def parse_tags_header(value: str) -> tuple[dict[str, str], list[str]]:
    """``"team=search, user=42"`` -> ``({"team": "search", "user": "42"}, notes)``.

    Items without ``=`` or with an empty key are dropped (the notes name their position,
    not their text); the rest go through ``clean_tags``. Empty items (``a=1,,b=2``) are skipped.
    """
    pairs: dict[str, str] = {}
    notes: list[str] = []
    items = value.split(",")
    for position, item in enumerate(items, 1):
        item = item.strip()
        if not item:
            continue
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            problem = "not key=value" if not sep else "empty key"
            notes.append(f"{HEADER_SOURCE} item {position} of {len(items)} dropped: {problem}")
            continue
        pairs[key.strip()] = val.strip()
    kept, problems = clean_tags(pairs, HEADER_SOURCE)
    return kept, notes + problems
