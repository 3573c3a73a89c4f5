"""Storage: the interface (`Store`, in base.py) and its backends: the JSON file store
with its journal (`jsonfile.py`: `PersistentStore`, the default), memory (`memory.py`, for tests) and
PostgreSQL (`postgres.py`, for several instances)."""

from collections.abc import Callable
from typing import Any

from ..cache import TTLCache
from .base import COLLECTIONS, CorruptStoreError, StaleRead, Store, StoreError
from .jsonfile import PersistentStore


def shared_state(store: Any) -> Any:
    """The store itself when it also keeps the short-lived state every instance must
    share (codes, pending logins): PostgreSQL. None for the file and memory stores,
    whose instance keeps that state in memory."""
    return store if hasattr(store, "ephemeral_locked") else None


def expiring_map(
    shared: Any,
    kind: str,
    max_items: int,
    encode: Callable[[Any], Any] = lambda value: value,
    decode: Callable[[Any], Any] = lambda value: value,
) -> Any:
    """A map whose entries expire: in the shared database when there is one (see
    `shared_state`), else a bounded `TTLCache` in this process. Both answer get, put
    (with an expiry time) and pop."""
    if shared is None:
        return TTLCache(max_items)
    from .postgres import SharedMap

    return SharedMap(shared, kind, encode, decode)


__all__ = [
    "COLLECTIONS",
    "CorruptStoreError",
    "PersistentStore",
    "StaleRead",
    "Store",
    "StoreError",
    "expiring_map",
    "shared_state",
]
