"""A bounded LRU map from a message's content to its token count.

A conversation re-sends its whole history every turn; with this cache only the
new messages are encoded. The caller keys large messages by a 16-byte digest,
so the memory held is bounded by ``max_entries`` times the largest plain key.
Safe to share between threads: reads and writes are single dict operations,
and eviction runs under a lock.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from itertools import islice
from typing import Generic, TypeVar

V = TypeVar("V")


class CountCache(Generic[V]):
    """LRU cache on a plain dict, whose insertion order is the recency order."""

    __slots__ = ("_data", "_lock", "hits", "max_entries", "misses")

    def __init__(self, max_entries: int = 32_768) -> None:
        self.max_entries = max_entries
        self._data: dict[Hashable, V] = {}
        self._lock = threading.Lock()
        self.hits = 0  # statistics only: not exact under threads
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        """The value under ``key`` (now the most recent), or None. An unhashable key raises
        ``TypeError``, as a dict look-up would, even when the cache is empty."""
        data = self._data
        if not data:
            hash(key)  # an empty dict answers pop() without hashing; callers rely on the TypeError
        found = data.pop(key, None)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        data[key] = found  # most recently used goes last
        return found

    def put(self, key: Hashable, value: V) -> None:
        data = self._data
        data[key] = value
        if len(data) > self.max_entries:
            self._evict()

    def _evict(self) -> None:
        # Evict an eighth at a time so a full cache does not pay a lock per insert.
        with self._lock:
            data = self._data
            excess = len(data) - self.max_entries
            if excess <= 0:
                return
            for key in list(islice(data, excess + self.max_entries // 8)):
                data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)
