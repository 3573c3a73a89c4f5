"""Storage: the interfaces (base.py: `Store` for the records, `SharedState` for the
short-lived state), the errors and collection names, and the backends, one module each:
the JSON files with their journal (`jsonfile.py`, the default), memory (`memory.py`,
for in-process tests) and PostgreSQL (`postgres/`, for several instances). The file
and memory stores keep their short-lived state in process (`local.py`).

`open_store` is the one place a backend is chosen, by the scheme of its URL
(`OAUTH_STORE`): a new backend is its module plus one line in `BACKENDS` (and one in
the store contract test, tests/unit/test_store_interface.py)."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path

from .base import (
    COLLECTIONS,
    CorruptStoreError,
    ExpiryRule,
    JSONValue,
    SharedState,
    StaleRead,
    Store,
    StoreError,
)
from .jsonfile import PersistentStore

#: URL scheme -> "module:class" of its backend (imported only when chosen: psycopg is
#: needed for PostgreSQL alone). The class's `open(url, data_dir, expiry,
#: max_connections)` makes the store.
BACKENDS: dict[str, str] = {
    "file": "jsonfile:PersistentStore",
    "memory": "memory:MemoryStore",
    "postgresql": "postgres:PostgresStore",
    "postgres": "postgres:PostgresStore",
}


def scheme(url: str) -> str:
    """The backend a store URL names: `file`, `memory` (or `memory://`), `postgresql://…`."""
    return url.partition(":")[0].lower()


def open_store(
    url: str, data_dir: str | Path, expiry: Mapping[str, ExpiryRule] | None = None, max_connections: int = 10
) -> Store:
    """The store `url` names (see `BACKENDS`): `data_dir` is the file store's folder,
    `expiry` when each collection's records expire, `max_connections` what a database
    backend may open at most. ValueError for a scheme no backend has."""
    try:
        module_name, class_name = BACKENDS[scheme(url)].split(":")
    except KeyError:
        raise ValueError(f"no store backend for {scheme(url)!r}") from None
    backend = getattr(importlib.import_module(f".{module_name}", __name__), class_name)
    store: Store = backend.open(url, Path(data_dir), dict(expiry or {}), max_connections)
    return store


__all__ = [
    "BACKENDS",
    "COLLECTIONS",
    "CorruptStoreError",
    "JSONValue",
    "PersistentStore",
    "SharedState",
    "StaleRead",
    "Store",
    "StoreError",
    "open_store",
    "scheme",
]
