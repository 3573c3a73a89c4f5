"""A bounded map whose entries expire: for state that must not grow without limit
when anyone on the internet can add to it (verified tokens, pending logins, fetched
documents).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """At most `max_items` entries, each until its own expiry time. When full, the
    entry used least recently goes first, so a flood of new keys pushes out only
    other flood keys and the idle ones, never what is in use."""

    def __init__(self, max_items: int):
        self.max_items = max_items
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K, now: float | None = None) -> V | None:
        now = time.time() if now is None else now
        with self._lock:
            entry = self._items.get(key)
            if entry is None:
                return None
            if entry[0] <= now:
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return entry[1]

    def put(self, key: K, value: V, expires_at: float) -> None:
        with self._lock:
            self._items[key] = (expires_at, value)
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._items.pop(key, None)
        return entry[1] if entry else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)
