"""A bounded, thread-safe LRU map from a message's content to its token count.

A conversation re-sends its whole history every turn; with this cache only the
new messages are encoded. Bounded both in entries and in the size of the keys
it holds; keys of large messages are replaced by a 16-byte digest.
"""

from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

# Per-entry bookkeeping charged on top of the characters a key holds.
_ENTRY_OVERHEAD = 128


class CountCache(Generic[V]):
    """LRU cache; ``weight`` is roughly the characters a key keeps alive."""

    def __init__(self, max_entries: int = 65_536, max_weight: int = 16 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_weight = max_weight
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._weight = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> V | None:
        found = self._data.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        with contextlib.suppress(KeyError):  # evicted by another thread meanwhile: value still right
            self._data.move_to_end(key)
        return found[0]

    def put(self, key: Hashable, value: V, weight: int) -> None:
        weight += _ENTRY_OVERHEAD
        if weight > self.max_weight:
            return
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._weight -= old[1]
            self._data[key] = (value, weight)
            self._weight += weight
            while self._weight > self.max_weight or len(self._data) > self.max_entries:
                _, (_, evicted) = self._data.popitem(last=False)
                self._weight -= evicted

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._weight = 0
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    @property
    def weight(self) -> int:
        return self._weight
