"""Storage adapters. The only one is the JSON file store, `PersistentStore`."""

from .store import COLLECTIONS, CorruptStoreError, PersistentStore, StoreError

__all__ = ["COLLECTIONS", "CorruptStoreError", "PersistentStore", "StoreError"]
