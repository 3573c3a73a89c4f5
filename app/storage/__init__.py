"""Storage: the interface (`Store`, in base.py) and its backends. The only backend so
far is the JSON file store with its journal, `PersistentStore`."""

from .base import Store
from .store import COLLECTIONS, CorruptStoreError, PersistentStore, StoreError

__all__ = ["COLLECTIONS", "CorruptStoreError", "PersistentStore", "Store", "StoreError"]
