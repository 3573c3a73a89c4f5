"""The store's interface: what repositories, the key manager and the admin service may
ask of a backend, and nothing more. The file store (`jsonfile.PersistentStore`) is the
default; a backend for PostgreSQL or memory implements the same methods. The errors
and the collection names live here too, so that no backend imports another.

Records are plain dicts reached one at a time; a backend keeps the mechanics (locks,
journals, transactions, indexes), the repositories keep the policy (rotation's grace
rules, what expires when)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

Record = dict[str, Any]
#: a short-lived value (`SharedState`): what `json.dumps` takes, since a database keeps
#: it as JSON (an in-process backend keeps the object itself, uncopied: so a value is
#: never changed once put, and one got is read, not changed)
JSONValue = Any
#: what PostgreSQL's text cannot hold: a key with it is never stored (`storable_key`)
NUL = "\x00"
T = TypeVar("T")
#: When a record of a collection expires (a Unix time), or None when it does not:
#: a time rather than a predicate, so that a database can index and purge by it.
ExpiryRule = Callable[[Record], float | None]
#: Told (collection, seconds) after each write, once it is durable: the operator's
#: metrics (app/observability.py) set it; a backend knows nothing of them.
WriteObserver = Callable[[str, float], None]


#: collection name -> file name (the file store's, and what operators back up and read)
COLLECTIONS: dict[str, str] = {
    "clients": "clients.json",
    "grants": "refresh_tokens.json",
    "users": "users.json",
    "signing_keys": "signing_keys.json",
    # the person's upstream tokens, sealed, by grant id (app/upstream_tokens.py)
    "upstream_tokens": "upstream_tokens.json",
}


class StoreError(Exception):
    """The store cannot be used; the message says which file and why."""


class StaleRead(StoreError):
    """Raised out of `read_ahead(…, assume_known=True)`: a record the block assumed had
    changed elsewhere, and nothing was written; run the block again (it then reads).
    Uncaught, it is answered like any StoreError (503)."""


class CorruptStoreError(StoreError):
    """A store file exists but is not a valid store document."""


def ignore_write(collection: str, seconds: float) -> None:
    """The default `WriteObserver`."""


def storable_key(key: str) -> str:
    """`key`, or ValueError when no backend can store it: it holds NUL (PostgreSQL's
    text cannot, and every backend agrees). Such a key is never stored, so a read of
    one answers as for an absent record (a client id `a%00b` is simply unknown)."""
    if NUL in key:
        raise ValueError("a store key cannot contain NUL")
    return key


def is_expired(rule: ExpiryRule | None, record: Record, now: float) -> bool:
    expires_at = rule(record) if rule else None
    return expires_at is not None and expires_at <= now


def indexed_values(record: Record, field: str) -> list[str]:
    """What `find` matches in a record's `field`: the string it holds, or the keys of
    the object it holds (a grant's refresh-token hashes)."""
    held = record.get(field)
    return [v for v in (held if isinstance(held, dict) else [held]) if isinstance(v, str)]


def unused_client_network(record: Record) -> str | None:
    """The network a client registered from (`registered_from`), while it never
    completed an authorization (`last_used_at` unset): what the per-address cap counts."""
    return record.get("registered_from") if record.get("last_used_at") is None else None


def evictable_since(record: Record) -> float | None:
    """When a client that never completed an authorization was registered: such a
    client may be evicted, oldest first, to make room at the cap (None for any other,
    and for the operator's resource servers)."""
    if record.get("last_used_at") is not None or record.get("resource_server") is True:
        return None
    return float(record.get("created_at") or 0)


class SharedState(Protocol):
    """Short-lived state that every instance serving one store must see alike:
    authorization codes, pending authorizations, throttle windows, fetched metadata
    documents, upstream login state, the networks known for a login. Each entry is a
    `JSONValue` under (`kind`, `key`) until its expiry time (a Unix time); an expired
    entry reads as absent. PostgreSQL cannot hold a key with NUL: there a read of one
    answers None and a write raises ValueError (`storable_key`); in process it is a
    key like any other.

    In process for the file and memory stores (app/storage/local.py: one process
    serves them), in the database for PostgreSQL (app/storage/postgres/shared.py).
    A store holds its own as `Store.shared`."""

    #: True when only this process sees it (a read costs no round trip): what a
    #: caller may check freely; False for a database that every instance shares
    in_process: bool

    def bound(self, kind: str, max_items: int) -> None:
        """In process, keep at most `max_items` entries of `kind`, the least recently
        used dropped first (anyone on the internet can make new keys: an address, a
        user name). A shared database ignores it: its entries expire and are swept."""

    def get(self, kind: str, key: str) -> JSONValue:
        """The live value, or None."""

    def put(self, kind: str, key: str, value: JSONValue, expires_at: float) -> None:
        """Store `value` (not None) until `expires_at`, replacing any."""

    def pop(self, kind: str, key: str) -> JSONValue:
        """Delete the entry; its value if it was live, else None."""

    def update(self, kind: str, key: str, update: Callable[[JSONValue], tuple[JSONValue, float, T]]) -> T:
        """Read-modify-write of one entry, atomic across instances: `update` gets the
        live value (None when absent) and returns (the new value, or None to delete
        the entry; its expiry time; the result returned). `update` may run more than
        once (on the newer value, when another instance came first): it must be a
        function of the value alone."""

    def locked(self, kind: str, key: str) -> AbstractContextManager[list[JSONValue]]:
        """Hold the entry against every other `locked` of it, in every instance, until
        the block ends: yields `[value]` (`[None]` when absent). A value put in the
        list replaces the entry's (same expiry) when the block ends without an
        exception; an absent entry stays absent."""

    def append_within(self, kind: str, key: str, at: float, window: float, limit: int) -> bool:
        """A sliding window's check-and-record, one step on every instance at once: the
        entry is the window's event times (a list, oldest first); those `window` or
        more before `at` are dropped, then `at` is appended unless `limit` are left.
        Whether it was appended (the entry then expires at `at + window`)."""

    def delete_where(self, kind: str, field: str, value: str) -> None:
        """Delete every entry of `kind` whose value (an object) has `field` == `value`."""

    def purge(self, dry_run: bool = False) -> int:
        """Delete the expired entries (the operator's `purge-expired`); how many."""


class Store(Protocol):
    """The records: clients, grants, users, signing keys (`COLLECTIONS`)."""

    #: where the state lives, for the operator's messages (a folder, a database)
    location: str
    observe_write: WriteObserver
    #: whether this handle wrote anything yet (a CLI command that wrote nothing leaves
    #: the files as they were: it does not compact at exit)
    wrote: bool
    #: the short-lived state that goes with these records (`SharedState`)
    shared: SharedState

    # -- one record at a time (the hot paths) --------------------------------------
    # A key (or a `find` value) holding NUL is never stored: reads answer as for an
    # absent record, writes raise ValueError (`storable_key`).
    def get(self, collection: str, key: str) -> Record | None:
        """The live record (None when absent or expired). Treat it as read-only."""

    def find(self, collection: str, field: str, value: str) -> Record | None:
        """The live record whose `field` (a string, or the keys of an object) holds
        `value`, through an index (the refresh-token hashes of grants)."""

    def read_ahead(self, wanted: list[tuple[str, str]], assume_known: bool = False) -> AbstractContextManager[None]:
        """Within the block, this thread's first `get` of each (collection, key) in
        `wanted` may be answered by one read of them all, made on entry (a backend
        whose every read is a round trip makes one instead of several). A write to a
        collection here drops what was read ahead of it.

        `assume_known`: those first gets may instead be answered, with no read at all,
        by the records as this process last read or wrote them. Nothing is then
        decided on a stale one: before anything is written in the block (a `change`
        of one checks them in its own write), and when the block ends, the backend
        checks that they were still current, and raises `StaleRead` if one was not,
        having written nothing. The caller runs the block again, and it then reads."""

    def put(self, collection: str, key: str, record: Record) -> None:
        """Store `record` under `key`, durably before returning."""

    def add(self, collection: str, key: str, record: Record) -> bool:
        """Store `record` unless a live one exists under `key`; whether it was stored."""

    def change(self, collection: str, key: str, change: Callable[[Record], T]) -> T | None:
        """Atomically (across processes) apply `change` to a copy of the record and
        store it; what `change` returned, or None when there is no such record.

        A `get` or `find` of the same record by this thread just before is the read a
        backend may reuse (PostgreSQL compares-and-sets over the row version that read
        saw, and so makes no second read): get the record just before you change it,
        with no other read of the store between. `change` may run more than once (on
        the newer record, when another writer came first): it must be a function of
        the record alone."""

    def put_counted(
        self, collection: str, key: str, record: Record, kind: str, event_key: str, at: float, window: float, limit: int
    ) -> bool:
        """`put`, counted as an event at `at` of the sliding window (`kind`,
        `event_key`) in `shared` (as `SharedState.append_within` counts it), in one
        step: the record is stored only if the window admitted the event, and the
        event stays only if the record was stored. Whether it was stored."""

    def delete(self, collection: str, key: str) -> Record | None:
        """Delete and return the record (None when there was none)."""

    def delete_where(self, collection: str, doomed: Callable[[Record], bool]) -> list[Record]:
        """Delete, atomically, every record `doomed` selects; the records deleted."""

    # -- whole collections (listings, limits, derived caches) --------------------------
    def scan(self, collection: str) -> dict[str, Record]:
        """Every live record. Treat them as read-only."""

    def count(self, collection: str) -> int:
        """How many records (cheap; may count expired ones not yet removed)."""

    def revision(self, collection: str) -> object:
        """A value that changes whenever the collection does, in any process."""

    # -- the registration caps (clients that never completed an authorization) ---------------
    def unused_clients_from(self, network: str) -> int:
        """How many live clients registered from `network` never completed an
        authorization (`unused_client_network`)."""

    def evict_oldest_unused_client(self) -> Record | None:
        """Delete, atomically, the client registered first among those that never
        completed an authorization (`evictable_since`), checked as it is deleted: a
        client used meanwhile is never deleted. The client deleted, or None."""

    # -- health and the operator's side ---------------------------------------------------
    def check(self) -> None:
        """Raise StoreError unless every collection can be read."""

    def check_writable(self) -> None:
        """Raise StoreError unless the store can be written now."""

    def sweep(self) -> list[Any]:
        """Remove what a crash left behind (at start-up); what was removed."""

    def lock(self, *collections: str) -> AbstractContextManager[None]:
        """Hold the named collections (all when none) against every writer."""

    def purge(
        self, collection: str, extra: Callable[[Record], bool] | None = None, dry_run: bool = False
    ) -> list[Record]:
        """Remove expired records (and those `extra` selects); the records removed."""

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """Every collection as of one instant (backups)."""

    def replace_all(self, collections: dict[str, dict[str, Record]]) -> None:
        """Replace the named collections' contents, all or nothing (restore)."""

    def compact(self, *collections: str) -> None:
        """Bring the backend's durable form up to date (at start-up and a clean stop)."""

    def start_upkeep(self) -> None:
        """Start what a running server's backend does in the background (the file
        store: compact its journals into the JSON files within seconds of a change)."""

    def stop_upkeep(self) -> None:
        """Stop it (at a clean stop)."""

    def close(self) -> None:
        """Let go of what the handle holds (files, connections); it is not used after."""
