"""`LocalState`: the `SharedState` (base.py) of the file and memory stores, in this
process's memory: one process serves those stores, so no other instance needs to see it.

Bounded: anyone on the internet can make a new entry (an /authorize request, a login
attempt from a new address), so each kind holds at most its bound (`bound`), the entry
used least recently dropped first: a flood of new keys pushes out only other flood
keys and idle ones, never what is in use. Expired entries at the front (the least
recently used) go as new ones come, so what is no longer live does not wait for the
bound either.

Values are kept as they are, neither copied nor converted: a call costs one lock of
its kind and a dict operation, as the in-memory maps it replaces did."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from .base import JSONValue, Record

if TYPE_CHECKING:
    from .base import Store

T = TypeVar("T")

#: entries of a kind whose bound was never stated
DEFAULT_MAX_ITEMS = 10_000


class _Held:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class _Kind:
    """One kind's entries: key -> (expires_at, value), least recently used first."""

    __slots__ = ("held", "items", "lock", "max_items")

    def __init__(self, max_items: int) -> None:
        self.items: OrderedDict[str, tuple[float, JSONValue]] = OrderedDict()
        self.lock = threading.Lock()
        self.max_items = max_items
        #: key -> its lock while someone holds or waits for it (`LocalState.locked`)
        self.held: dict[str, _Held] = {}

    def live(self, key: str, now: float) -> JSONValue:
        """The live value (used: moved to the back), or None. Hold `lock`."""
        entry = self.items.get(key)
        if entry is None:
            return None
        if entry[0] <= now:
            del self.items[key]
            return None
        self.items.move_to_end(key)
        return entry[1]

    def store(self, key: str, value: JSONValue, expires_at: float, now: float) -> None:
        """Hold `lock`."""
        items = self.items
        items[key] = (expires_at, value)
        items.move_to_end(key)
        while len(items) > self.max_items:
            items.popitem(last=False)
        while True:  # the expired at the front go too (each once: no growing cost)
            first = next(iter(items))
            if first == key or items[first][0] > now:
                break
            del items[first]


class LocalState:
    """`SharedState` in this process (see the module's docstring)."""

    in_process = True

    def __init__(self, max_items: int = DEFAULT_MAX_ITEMS) -> None:
        self._default = max_items
        self._kinds: dict[str, _Kind] = {}
        self._lock = threading.Lock()

    def _kind(self, kind: str) -> _Kind:
        found = self._kinds.get(kind)
        if found is None:
            with self._lock:
                found = self._kinds.setdefault(kind, _Kind(self._default))
        return found

    def bound(self, kind: str, max_items: int) -> None:
        self._kind(kind).max_items = max_items

    def size(self, kind: str) -> int:
        """How many entries of `kind` are held, live or not yet dropped (tests)."""
        return len(self._kind(kind).items)

    def get(self, kind: str, key: str) -> JSONValue:
        entries = self._kind(kind)
        with entries.lock:
            return entries.live(key, time.time())

    def put(self, kind: str, key: str, value: JSONValue, expires_at: float) -> None:
        entries = self._kind(kind)
        with entries.lock:
            entries.store(key, value, expires_at, time.time())

    def pop(self, kind: str, key: str) -> JSONValue:
        entries = self._kind(kind)
        with entries.lock:
            entry = entries.items.pop(key, None)
        return entry[1] if entry is not None and entry[0] > time.time() else None

    def update(self, kind: str, key: str, update: Callable[[JSONValue], tuple[JSONValue, float, T]]) -> T:
        entries = self._kind(kind)
        with entries.lock:
            now = time.time()
            value, expires_at, result = update(entries.live(key, now))
            if value is None:
                entries.items.pop(key, None)
            else:
                entries.store(key, value, expires_at, now)
            return result

    @contextmanager
    def locked(self, kind: str, key: str) -> Iterator[list[JSONValue]]:
        entries = self._kind(kind)
        with entries.lock:
            held = entries.held.get(key)
            if held is None:
                held = entries.held[key] = _Held()
            held.users += 1
        try:
            with held.lock:
                with entries.lock:
                    value = entries.live(key, time.time())
                holder = [value]
                yield holder
                if value is not None:
                    with entries.lock:
                        entry = entries.items.get(key)
                        if entry is not None:  # not deleted meanwhile (`delete_where`)
                            entries.items[key] = (entry[0], holder[0])
        finally:
            with entries.lock:
                held.users -= 1
                if not held.users:
                    del entries.held[key]

    def append_within(self, kind: str, key: str, at: float, window: float, limit: int) -> bool:
        entries = self._kind(kind)
        with entries.lock:
            # The times within the window of `at`, whatever the entry's expiry (that of
            # its last time), as the database counts them: the times are in the order
            # they came, so those that left the window are at the front.
            entry = entries.items.get(key)
            events = entry[1] if entry is not None else ()
            first = 0
            while first < len(events) and at - events[first] >= window:
                first += 1
            if len(events) - first >= limit:
                return False
            entries.store(key, [*events[first:], at], at + window, time.time())  # a new list: readers hold the old
            return True

    def delete_where(self, kind: str, field: str, value: str) -> None:
        entries = self._kind(kind)
        with entries.lock:
            doomed = [k for k, (_, v) in entries.items.items() if isinstance(v, dict) and v.get(field) == value]
            for key in doomed:
                del entries.items[key]

    def purge(self, dry_run: bool = False) -> int:
        now = time.time()
        removed = 0
        for entries in list(self._kinds.values()):
            with entries.lock:
                expired = [k for k, (until, _) in entries.items.items() if until <= now]
                if not dry_run:
                    for key in expired:
                        del entries.items[key]
            removed += len(expired)
        return removed


def put_counted(
    store: Store,
    collection: str,
    key: str,
    record: Record,
    kind: str,
    event_key: str,
    at: float,
    window: float,
    limit: int,
) -> bool:
    """`Store.put_counted` for a store whose `shared` is in process: the window's
    check-and-record, then the write, and the event taken back if the write fails."""
    state = store.shared
    if not state.append_within(kind, event_key, at, window, limit):
        return False
    try:
        store.put(collection, key, record)
    except BaseException:

        def undo(events: JSONValue) -> tuple[JSONValue, float, None]:
            kept = list(events or [])
            with contextlib.suppress(ValueError):
                kept.remove(at)
            return (kept or None), (kept[-1] + window if kept else 0.0), None

        state.update(kind, event_key, undo)
        raise
    return True
