"""Sliding-window counters in memory, bounded: anyone on the internet can make a new
key (an address, a user name), so past `max_keys` the stalest are forgotten."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque


class SlidingWindow:
    """At most `limit` events per key within `window` seconds."""

    def __init__(self, limit: int, window: float, max_keys: int = 50_000):
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and now - events[0] >= self.window:
            events.popleft()
        if not events:
            del self._events[key]
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
            self._events.pop(key, None)

    def undo(self, key: str, at: float) -> None:
        """Take back one event recorded at `at` (an attempt that turned out fine)."""
        with self._lock:
            events = self._events.get(key)
            if events is not None:
                with contextlib.suppress(ValueError):
                    events.remove(at)
                if not events:
                    del self._events[key]

    def _record(self, key: str, now: float) -> None:
        if key not in self._events and len(self._events) >= self.max_keys:
            for stale in [k for k, v in self._events.items() if not v or now - v[-1] >= self.window]:
                del self._events[stale]
            while len(self._events) >= self.max_keys:
                del self._events[next(iter(self._events))]  # oldest key first
        self._events.setdefault(key, deque()).append(now)

    def __len__(self) -> int:
        return len(self._events)
