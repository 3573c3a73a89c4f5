"""Storage: the interface (`Store`, in base.py) and its backends: the JSON file store
with its journal (`PersistentStore`, the default), memory (`memory.py`, for tests) and
PostgreSQL (`postgres.py`, for several instances)."""

from typing import Any

from .base import Store
from .store import COLLECTIONS, CorruptStoreError, PersistentStore, StoreError


def shared_state(store: Any) -> Any:
    """The store itself when it also keeps the short-lived state every instance must
    share (codes, pending logins): PostgreSQL. None for the file and memory stores,
    whose instance keeps that state in memory."""
    return store if hasattr(store, "ephemeral_locked") else None


__all__ = ["COLLECTIONS", "CorruptStoreError", "PersistentStore", "Store", "StoreError", "shared_state"]
