"""Sliding-window counters. In memory, bounded: anyone on the internet can make a new
key (an address, a user name), so past `max_keys` the least recently used go (a key
whose last event left the window is gone already). In PostgreSQL when instances share
one (`SharedSlidingWindow`), so that spreading guesses over instances gains nothing."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from .cache import TTLCache

if TYPE_CHECKING:
    from .storage.base import Record, Store
    from .storage.postgres import PostgresStore


class LimitReached(Exception):
    """A write refused by a sliding window (`put_counted`): nothing was stored."""

    def __init__(self, key: str, wait: int):
        super().__init__(f"{key}: try again in {wait} s")
        self.key = key
        self.wait = wait


def wait_for(events: deque[float] | list[float], limit: int, window: float, now: float) -> int:
    """Seconds until one more event fits: `limit` events (oldest first) within `window`."""
    if limit <= 0 or len(events) < limit:
        return 0
    return max(1, int(events[-limit] + window - now + 0.999))


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
        return wait_for(events, self.limit, self.window, now)

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

    def wait_known_here(self, key: str, now: float | None = None) -> int:
        """The wait this process knows of without asking anyone (here: all of it), so
        that a flood past the limit is refused before its requests cost anything."""
        return self.retry_after(key, now)

    def put_counted(self, key: str, store: Store, collection: str, record_key: str, record: Record) -> None:
        """Store a record as one event of `key`, or raise LimitReached and store
        nothing: a limit on what is stored, not on what is asked."""
        at = time.time()
        wait = self.hit(key, at)
        if wait:
            raise LimitReached(key, wait)
        try:
            store.put(collection, record_key, record)
        except BaseException:
            self.undo(key, at)
            raise

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


class SharedSlidingWindow:
    """`SlidingWindow` in PostgreSQL: each key's event times in one row. A hit checks
    and records in one statement that holds the row; `add` and `undo` are a read and a
    compare-and-set (`PostgresStore.ephemeral_update`)."""

    def __init__(self, store: PostgresStore, kind: str, limit: int, window: float, max_keys: int = 50_000):
        self.store = store
        self.kind = f"throttle:{kind}"
        self.limit = limit
        self.window = window
        #: key -> until when a `put_counted` here was refused: the window stays full
        #: until then whatever other instances do (events leave it only with time)
        self._refused_until: TTLCache[str, float] = TTLCache(max_keys)

    def _recent(self, events: Any, now: float) -> list[float]:
        return [t for t in (events or []) if now - t < self.window]

    def _wait(self, events: list[float], now: float) -> int:
        return wait_for(events, self.limit, self.window, now)

    def _kept(self, events: list[float]) -> tuple[list[float] | None, float]:
        return (events or None), (events[-1] + self.window if events else 0.0)

    def retry_after(self, key: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return self._wait(self._recent(self.store.ephemeral_get(self.kind, key), now), now)

    def count(self, key: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return len(self._recent(self.store.ephemeral_get(self.kind, key), now))

    def hit(self, key: str, now: float | None = None) -> int:
        """As `SlidingWindow.hit`, in one statement when the event fits (every
        registration, every login attempt); a second read says how long to wait."""
        at = time.time() if now is None else now
        if self.limit <= 0:  # no limit: recorded, as in memory
            self.add(key, at)
            return 0
        if self.store.ephemeral_append_within(self.kind, key, at, self.window, self.limit):
            return 0
        return self._wait(self._recent(self.store.ephemeral_get(self.kind, key), at), at) or 1

    def put_counted(self, key: str, store: Store, collection: str, record_key: str, record: Record) -> None:
        """As `SlidingWindow.put_counted`, in one statement with the window's
        (`PostgresStore.put_within`): the record and its event are stored together
        or not at all, on every instance at once."""
        if store is not self.store:
            raise ValueError("a shared window counts writes to its own store")
        at = time.time()
        if self.limit <= 0:
            self.add(key, at)
            store.put(collection, record_key, record)
        elif not self.store.put_within(collection, record_key, record, self.kind, key, at, self.window, self.limit):
            wait = self._wait(self._recent(self.store.ephemeral_get(self.kind, key), at), at) or 1
            self._refused_until.put(key, at + wait, at + wait)
            raise LimitReached(key, wait)

    def wait_known_here(self, key: str, now: float | None = None) -> int:
        """As `SlidingWindow.wait_known_here`, without a statement: the wait left from
        the last refusal here (0 when there was none lately; the database decides)."""
        now = time.time() if now is None else now
        until = self._refused_until.get(key, now)
        return max(1, int(until - now + 0.999)) if until is not None else 0

    def add(self, key: str, now: float | None = None) -> None:
        at = time.time() if now is None else now

        def update(events: Any) -> tuple[Any, float, None]:
            recent = [*self._recent(events, at), at]
            return (*self._kept(recent), None)

        self.store.ephemeral_update(self.kind, key, update)

    def forget(self, key: str) -> None:
        self.store.ephemeral_pop(self.kind, key)

    def undo(self, key: str, at: float) -> None:
        def update(events: Any) -> tuple[Any, float, None]:
            recent = list(events or [])
            with contextlib.suppress(ValueError):
                recent.remove(at)
            return (*self._kept(recent), None)

        self.store.ephemeral_update(self.kind, key, update)


#: a sliding window, in memory or shared
Window = SlidingWindow | SharedSlidingWindow


def sliding_window(shared: PostgresStore | None, kind: str, limit: int, window: float) -> Window:
    """A sliding window in the shared database when there is one, else in memory."""
    return SharedSlidingWindow(shared, kind, limit, window) if shared is not None else SlidingWindow(limit, window)
