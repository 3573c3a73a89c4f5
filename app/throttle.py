"""Sliding-window counters in memory, bounded: anyone on the internet can make a new
key (an address, a user name), so past `max_keys` the least recently used go (a key
whose last event left the window is gone already)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque

from .cache import TTLCache


class SlidingWindow:
    """At most `limit` events per key within `window` seconds."""

    def __init__(self, limit: int, window: float, max_keys: int = 50_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        #: key -> its events' times, kept until the last one leaves the window
        self._events: TTLCache[str, deque[float]] = TTLCache(max_keys)
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key, now)
        if events is None:
            return deque()
        while events and now - events[0] >= self.window:
            events.popleft()
        return events

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until `key` may have another event (0 = now)."""
        now = time.time() if now is None else now
        with self._lock:
            return self._wait(self._recent(key, now), now)

    def _wait(self, events: deque[float], now: float) -> int:
        if self.limit <= 0 or len(events) < self.limit:
            return 0
        return max(1, int(events[-self.limit] + self.window - now + 0.999))

    def count(self, key: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            return len(self._recent(key, now))

    def hit(self, key: str, now: float | None = None) -> int:
        """Record an event unless the limit is reached; returns the wait (0 = recorded).
        Check and record are one step, so concurrent callers cannot overshoot."""
        now = time.time() if now is None else now
        with self._lock:
            wait = self._wait(self._recent(key, now), now)
            if wait:
                return wait
            self._record(key, now)
            return 0

    def add(self, key: str, now: float | None = None) -> None:
        """Record an event whatever the count."""
        now = time.time() if now is None else now
        with self._lock:
            self._record(key, now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._events.pop(key)

    def undo(self, key: str, at: float) -> None:
        """Take back one event recorded at `at` (an attempt that turned out fine)."""
        with self._lock:
            events = self._events.get(key, at)
            if events is not None:
                with contextlib.suppress(ValueError):
                    events.remove(at)
                if not events:
                    self._events.pop(key)

    def _record(self, key: str, now: float) -> None:
        events = self._recent(key, now)
        events.append(now)
        self._events.put(key, events, now + self.window)

    def __len__(self) -> int:
        return len(self._events)
