"""`MemoryStore`: the store interface in one process's memory, for in-process tests and
for trying the server without a data folder (`open_store("memory://", …)`). Nothing
survives the process."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TypeVar

from .base import (
    COLLECTIONS,
    ExpiryRule,
    Record,
    SharedState,
    StoreError,
    WriteObserver,
    evictable_since,
    ignore_write,
    indexed_values,
    is_expired,
    storable_key,
    unused_client_network,
)
from .local import LocalState, put_counted

T = TypeVar("T")


class MemoryStore:
    def __init__(self, expiry: Mapping[str, ExpiryRule] | None = None):
        self._expiry = dict(expiry or {})
        self._items: dict[str, dict[str, Record]] = {name: {} for name in COLLECTIONS}
        self._versions = dict.fromkeys(COLLECTIONS, 0)
        self._lock = threading.RLock()
        self.location = "memory"
        self.observe_write: WriteObserver = ignore_write
        self.wrote = False
        self.shared: SharedState = LocalState()

    @classmethod
    def open(cls, url: str, data_dir: Path, expiry: Mapping[str, ExpiryRule], max_connections: int) -> MemoryStore:
        """For `open_store` (`memory://`): a new, empty store."""
        return cls(expiry)

    def _collection(self, collection: str) -> dict[str, Record]:
        try:
            return self._items[collection]
        except KeyError:
            raise StoreError(f"unknown collection {collection!r}") from None

    def _live(self, collection: str, record: Record | None) -> bool:
        return record is not None and not is_expired(self._expiry.get(collection), record, time.time())

    def _changed(self, collection: str) -> None:
        self._versions[collection] += 1
        self.wrote = True

    # -- one record at a time ------------------------------------------------------------

    def read_ahead(self, wanted: list[tuple[str, str]], assume_known: bool = False) -> AbstractContextManager[None]:
        return nullcontext()  # every read is from memory already

    def get(self, collection: str, key: str) -> Record | None:
        record = self._collection(collection).get(key)
        return record if self._live(collection, record) else None

    def find(self, collection: str, field: str, value: str) -> Record | None:
        with self._lock:
            for record in self._collection(collection).values():
                if value in indexed_values(record, field) and self._live(collection, record):
                    return record
        return None

    def put(self, collection: str, key: str, record: Record) -> None:
        with self._lock:
            self._collection(collection)[storable_key(key)] = copy.deepcopy(record)
            self._changed(collection)

    def add(self, collection: str, key: str, record: Record) -> bool:
        with self._lock:
            if self.get(collection, key) is not None:
                return False
            self.put(collection, key, record)
            return True

    def change(self, collection: str, key: str, change: Callable[[Record], T]) -> T | None:
        with self._lock:
            existing = self.get(collection, key)
            if existing is None:
                return None
            record = copy.deepcopy(existing)
            result = change(record)
            self._collection(collection)[key] = record
            self._changed(collection)
            return result

    def delete(self, collection: str, key: str) -> Record | None:
        with self._lock:
            record = self._collection(collection).pop(key, None)
            if record is not None:
                self._changed(collection)
            return record

    def delete_where(self, collection: str, doomed: Callable[[Record], bool]) -> list[Record]:
        with self._lock:
            items = self._collection(collection)
            keys = [k for k, v in items.items() if doomed(v)]
            if keys:
                self._changed(collection)
            return [items.pop(k) for k in keys]

    # -- whole collections ----------------------------------------------------------------

    def scan(self, collection: str) -> dict[str, Record]:
        with self._lock:
            return {k: v for k, v in self._collection(collection).items() if self._live(collection, v)}

    def count(self, collection: str) -> int:
        return len(self._collection(collection))

    def revision(self, collection: str) -> object:
        return self._versions[collection]

    def unused_clients_from(self, network: str) -> int:
        return len([r for r in self.scan("clients").values() if unused_client_network(r) == network])

    def evict_oldest_unused_client(self) -> Record | None:
        with self._lock:
            items = self._collection("clients")
            since = {key: at for key, record in items.items() if (at := evictable_since(record)) is not None}
            if not since:
                return None
            self._changed("clients")
            return items.pop(min(since, key=since.__getitem__))

    # -- health and the operator's side ---------------------------------------------------

    def check(self) -> None:
        """Memory can always be read."""

    def check_writable(self) -> None:
        """Memory can always be written."""

    def sweep(self) -> list[object]:
        """A crash leaves nothing in memory."""
        return []

    @contextmanager
    def lock(self, *collections: str) -> Iterator[None]:
        with self._lock:
            yield

    def purge(
        self, collection: str, extra: Callable[[Record], bool] | None = None, dry_run: bool = False
    ) -> list[Record]:
        with self._lock:
            items = self._collection(collection)
            keys = sorted(k for k, v in items.items() if not self._live(collection, v) or (extra and extra(v)))
            removed = [items[k] for k in keys]
            if not dry_run:
                self.delete_where(collection, lambda record: any(record is r for r in removed))
            return removed

    def snapshot(self) -> dict[str, dict[str, Record]]:
        with self._lock:
            return {name: copy.deepcopy(self.scan(name)) for name in COLLECTIONS}

    def replace_all(self, collections: Mapping[str, dict[str, Record]]) -> None:
        with self._lock:
            for name in collections:
                self._collection(name)  # an unknown name raises before anything changes
            for name, items in collections.items():
                self._items[name] = copy.deepcopy(dict(items))
                self._changed(name)

    def compact(self, *collections: str) -> None:
        """Nothing to bring up to date."""

    def start_upkeep(self) -> None:
        """Nothing runs in the background: there are no files to keep current."""

    def stop_upkeep(self) -> None:
        """Nothing to stop."""

    def close(self) -> None:
        """Nothing to let go of."""

    def put_counted(
        self, collection: str, key: str, record: Record, kind: str, event_key: str, at: float, window: float, limit: int
    ) -> bool:
        return put_counted(self, collection, key, record, kind, event_key, at, window, limit)
