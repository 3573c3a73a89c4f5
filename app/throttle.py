"""Sliding-window counters over the store's short-lived state (`SharedState`): in this
process with the file store, bounded (anyone on the internet can make a new key, an
address or a user name, so past `max_keys` the least recently used go); in PostgreSQL
when instances share one, so that spreading guesses over instances gains nothing. The
window's events are one entry per key: their times, oldest first."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

from .cache import TTLCache
from .storage.base import JSONValue, SharedState
from .storage.local import LocalState

if TYPE_CHECKING:
    from .storage.base import Record, Store


class LimitReached(Exception):
    """A write refused by a sliding window (`put_counted`): nothing was stored."""

    def __init__(self, key: str, wait: int):
        super().__init__(f"{key}: try again in {wait} s")
        self.key = key
        self.wait = wait


def wait_for(events: list[float], limit: int, window: float, now: float) -> int:
    """Seconds until one more event fits: `limit` events (oldest first) within `window`."""
    if limit <= 0 or len(events) < limit:
        return 0
    return max(1, int(events[-limit] + window - now + 0.999))


class SlidingWindow:
    """At most `limit` events per key within `window` seconds, in `state` (a new
    in-process one when none is given) under the kind `throttle:<kind>`. A hit checks
    and records in one step (`SharedState.append_within`: one statement that holds
    the row, in PostgreSQL); `add` and `undo` are a read-modify-write (`update`)."""

    def __init__(
        self, limit: int, window: float, state: SharedState | None = None, kind: str = "window", max_keys: int = 50_000
    ):
        self.state: SharedState = state if state is not None else LocalState()
        self.kind = f"throttle:{kind}"
        self.limit = limit
        self.window = window
        self.state.bound(self.kind, max_keys)
        #: key -> until when a `put_counted` here was refused: the window stays full
        #: until then whatever other instances do (events leave it only with time)
        self._refused_until: TTLCache[str, float] = TTLCache(max_keys)

    def _recent(self, events: JSONValue, now: float) -> list[float]:
        return [t for t in (events or ()) if now - t < self.window]

    def _wait(self, events: list[float], now: float) -> int:
        return wait_for(events, self.limit, self.window, now)

    def _kept(self, events: list[float]) -> tuple[list[float] | None, float]:
        return (events or None), (events[-1] + self.window if events else 0.0)

    def retry_after(self, key: str, now: float | None = None) -> int:
        """Seconds until `key` may have another event (0 = now)."""
        now = time.time() if now is None else now
        return self._wait(self._recent(self.state.get(self.kind, key), now), now)

    def count(self, key: str, now: float | None = None) -> int:
        now = time.time() if now is None else now
        return len(self._recent(self.state.get(self.kind, key), now))

    def hit(self, key: str, now: float | None = None) -> int:
        """Record an event unless the limit is reached; returns the wait (0 = recorded).
        Check and record are one step, so concurrent callers (on every instance)
        cannot overshoot; a second read says how long to wait."""
        at = time.time() if now is None else now
        if self.limit <= 0:  # no limit: recorded all the same
            self.add(key, at)
            return 0
        if self.state.append_within(self.kind, key, at, self.window, self.limit):
            return 0
        return self._wait(self._recent(self.state.get(self.kind, key), at), at) or 1

    def put_counted(self, key: str, store: Store, collection: str, record_key: str, record: Record) -> None:
        """Store a record as one event of `key`, or raise LimitReached and store
        nothing: a limit on what is stored, not on what is asked. The record and its
        event are stored together or not at all (`Store.put_counted`; one statement
        in PostgreSQL), so the window must be in the store's own `shared`."""
        if store.shared is not self.state:
            raise ValueError("a window counts writes to the store whose shared state it is in")
        at = time.time()
        if self.limit <= 0:
            self.add(key, at)
            store.put(collection, record_key, record)
        elif not store.put_counted(collection, record_key, record, self.kind, key, at, self.window, self.limit):
            wait = self._wait(self._recent(self.state.get(self.kind, key), at), at) or 1
            self._refused_until.put(key, at + wait, at + wait)
            raise LimitReached(key, wait)

    def wait_known_here(self, key: str, now: float | None = None) -> int:
        """The wait this process knows of without asking anyone, so that a flood past
        the limit is refused before its requests cost anything: all of it when the
        state is in process (a read costs nothing), else the wait left from the last
        refusal here (0 when there was none lately; the database decides)."""
        now = time.time() if now is None else now
        if self.state.in_process:
            return self.retry_after(key, now)
        until = self._refused_until.get(key, now)
        return max(1, int(until - now + 0.999)) if until is not None else 0

    def add(self, key: str, now: float | None = None) -> None:
        """Record an event whatever the count."""
        at = time.time() if now is None else now

        def update(events: JSONValue) -> tuple[JSONValue, float, None]:
            recent = [*self._recent(events, at), at]
            return (*self._kept(recent), None)

        self.state.update(self.kind, key, update)

    def forget(self, key: str) -> None:
        self.state.pop(self.kind, key)

    def undo(self, key: str, at: float) -> None:
        """Take back one event recorded at `at` (an attempt that turned out fine)."""

        def update(events: JSONValue) -> tuple[JSONValue, float, None]:
            recent = list(events or [])
            with contextlib.suppress(ValueError):
                recent.remove(at)
            return (*self._kept(recent), None)

        self.state.update(self.kind, key, update)
