"""`PostgresStore`: the records (clients, grants, users, signing keys), one row each of
`records`. See the package's docstring for how it works; its connections, the rows it
remembers, the schema and the short-lived state are each a module of their own."""

from __future__ import annotations

import functools
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..base import (
    COLLECTIONS,
    NUL,
    ExpiryRule,
    Record,
    StaleRead,
    StoreError,
    WriteObserver,
    ignore_write,
    is_expired,
    storable_key,
)
from . import schema
from .connections import Connections
from .known import KnownRow, KnownRows
from .shared import APPEND_WITHIN, PostgresSharedState

T = TypeVar("T")

#: how long this process trusts a collection's revision read from the database (its
#: own writes are seen at once): a key rotated by another instance is used for
#: signing here within this time, and a token it signed is verified at once
#: (app/keys.py reloads for an unknown key id)
REVISION_TTL = 1.0
#: a record stored only if a sliding window (APPEND_WITHIN) admits it, in one statement:
#: a registration and its address's rate (`put_counted`); with the collection's shared
#: lock (as `GUARD`, named parameters), or without when this thread holds it
# (composed of this module's constants; every value is a parameter)
_PUT_WITHIN = (
    "WITH {guard}hit AS (" + APPEND_WITHIN + ") "  # noqa: S608
    "INSERT INTO records (collection, key, record, expires_at) "
    "SELECT %(collection)s, %(record_key)s, %(record)s, %(expires_at)s FROM hit{from_guard} "
    "ON CONFLICT (collection, key) DO UPDATE SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at "
    "RETURNING 1"
)
PUT_WITHIN = {
    True: _PUT_WITHIN.format(guard="guard AS (SELECT pg_advisory_xact_lock_shared(%(lock)s)), ", from_guard=", guard"),
    False: _PUT_WITHIN.format(guard="", from_guard=""),
}
#: a write of one record takes its collection's shared advisory lock in the statement
#: itself (`guard`), unless this thread holds the collection with `lock()`; a
#: statement's lock is held until it commits. The statement sees the rows as of its
#: start, before it waited for the lock: fine for an upsert (a conflict is judged on
#: the newest row) and a compare-and-set (a restored row is a newer version), not for
#: a delete, which takes the lock in a statement of its own (`_writing`).
GUARD = "WITH guard AS (SELECT pg_advisory_xact_lock_shared(%s)) "
UPSERT = (
    "INSERT INTO records (collection, key, record, expires_at) SELECT %s, %s, %s, %s{from_guard} "
    "ON CONFLICT (collection, key) DO UPDATE SET record = EXCLUDED.record, expires_at = EXCLUDED.expires_at"
)


def _collection_lock(collection: str) -> int:
    return zlib.crc32(f"mcp-oauth:{collection}".encode())


#: fields of a record that `find` reads from a column of their own (generated from the
#: record, and indexed: see migration 4)
SEARCHED_COLUMNS = frozenset({"refresh_token_hashes"})


@functools.cache
def _read_ahead_query(count: int) -> sql.Composed:
    """`read_ahead`'s statement for `count` records, parameters `(collection, key) *
    count, now`. Plain text parameters: psycopg dumps them for a fraction of what two
    arrays cost."""
    return sql.SQL(
        "SELECT collection, key, record::text, xmin::text, expires_at FROM records "
        "WHERE (collection, key) IN ({}) AND (expires_at IS NULL OR expires_at > %s)"
    ).format(sql.SQL(", ").join([sql.SQL("(%s, %s)")] * count))


@functools.cache
def _still_current_query(count: int) -> sql.Composed:
    """How many of `count` rows are live and still the version assumed; parameters
    `(collection, key, version) * count, now`."""
    return sql.SQL("SELECT count(*) FROM records WHERE ({}) AND (expires_at IS NULL OR expires_at > %s)").format(
        sql.SQL(" OR ").join([sql.SQL("(collection = %s AND key = %s AND xmin = %s::xid)")] * count)
    )


#: `change`'s compare-and-set, parameters `(record, expires_at, collection, key,
#: version, now)`; `{from_guard}`: see `_guarded`
CHANGE = (
    "UPDATE records SET record = %s, expires_at = %s{from_guard} WHERE collection = %s AND key = %s "
    "AND xmin = %s::xid AND (expires_at IS NULL OR expires_at > %s)"
)
#: ... and another row still live and the version assumed: `(collection, key, version, now)`
STILL_CURRENT = (
    " AND EXISTS (SELECT 1 FROM records r WHERE r.collection = %s AND r.key = %s AND r.xmin = %s::xid "
    "AND (r.expires_at IS NULL OR r.expires_at > %s))"
)


@functools.cache
def _change_query(assumed: int) -> str:
    """`CHANGE` requiring `assumed` other rows `STILL_CURRENT`, returning the new row version."""
    return CHANGE + STILL_CURRENT * assumed + " RETURNING xmin::text"


@functools.cache
def _find_query(collection: str, field: str) -> str:
    """`find`'s statement, parameters `(value, now)`. `->` then `?`: true when the field
    is that string, or an object with that key."""
    held = sql.Identifier(field) if field in SEARCHED_COLUMNS else sql.SQL("(record -> {})").format(sql.Literal(field))
    return (
        sql.SQL(
            "SELECT key, record::text, xmin::text FROM records WHERE collection = {collection} "
            "AND {held} ? %s AND (expires_at IS NULL OR expires_at > %s)"
        )
        .format(collection=sql.Literal(collection), held=held)
        .as_string(None)
    )


def _guarded(statement: str, guard: bool) -> str:
    """`statement` with or without `GUARD` (its `{from_guard}` names the lock's
    one-row table where the statement lists its tables)."""
    return (GUARD if guard else "") + statement.format(from_guard=" FROM guard" if guard else "")


class PostgresStore:
    """The records on PostgreSQL (see the package's docstring); `shared` holds the
    short-lived state every instance shares."""

    @classmethod
    def open(cls, url: str, data_dir: Path, expiry: Mapping[str, ExpiryRule], max_connections: int) -> PostgresStore:
        """For `open_store` (`postgresql://…`)."""
        return cls(url, expiry, max_connections)

    def __init__(self, url: str, expiry: Mapping[str, ExpiryRule] | None = None, max_connections: int = 10):
        self._expiry = dict(expiry or {})
        self.wrote = False
        self.observe_write: WriteObserver = ignore_write
        self._held = threading.local()  # collections this thread holds with lock()
        # the record this thread read last (get, find) as (collection, key, row version,
        # JSON text), so that a `change` right after needs no second read
        self._last_read = threading.local()
        # what this thread read ahead (`read_ahead`): (collection, key) -> (row version,
        # JSON text), or None for a record that was not there; and `assumed`, the row
        # versions it took from `_known_rows` and has not yet checked
        self._ahead = threading.local()
        self._known_rows = KnownRows()
        self._connections = Connections(url, max_connections)
        self.location = self._connections.location
        #: a connection for a statement or a transaction (`Connections.connection`)
        self._connection = self._connections.connection
        self._revisions: dict[str, tuple[float, object]] = {}
        #: the short-lived state every instance shares (base.py: `SharedState`)
        self.shared = PostgresSharedState(self._connection, self._check_assumed)
        self.migrate()
        self._connections.give_back_this_threads()

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _writing(self, *collections: str) -> Iterator[psycopg.Connection]:
        """A transaction that writes `collections` (several statements), holding their
        shared advisory locks unless this thread holds them exclusively."""
        self._check_assumed()
        started = time.perf_counter()
        with self._connection() as conn, conn.transaction():
            held = self._held_here()
            for name in collections:
                if name not in held:
                    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_collection_lock(name),))
            yield conn
        self._wrote(started, *collections)

    def _write(
        self, collection: str, statement: str, params: tuple[Any, ...], checks_assumed: bool = False
    ) -> list[tuple[Any, ...]]:
        """One statement that writes one record of `collection`, under the collection's
        shared lock (see `GUARD`); the rows it returned. Rows this block assumed are
        checked first, unless the statement does (`checks_assumed`)."""
        if not checks_assumed:
            self._check_assumed()
        started = time.perf_counter()
        guard = collection not in self._held_here()
        query = _guarded(statement, guard)
        with self._connection() as conn:
            cursor = conn.execute(query, (_collection_lock(collection), *params) if guard else params)
            rows = cursor.fetchall() if cursor.description else []
        self._wrote(started, collection)
        return rows

    def _wrote(self, started: float, *collections: str) -> None:
        self.wrote = True
        ahead: dict[tuple[str, str], Any] | None = getattr(self._ahead, "rows", None)
        if ahead:
            for wanted in [w for w in ahead if w[0] in collections]:
                del ahead[wanted]
        seconds = time.perf_counter() - started
        for name in collections:
            self._revisions.pop(name, None)
            self.observe_write(name, seconds)

    def _remember(self, collection: str, key: str, version: str, text: str) -> Record:
        self._last_read.row = (collection, key, version, text)
        return json.loads(text)

    # -- rows assumed as this instance last saw them (`read_ahead`, `KnownRows`) -----------

    def _take_assumed(self) -> dict[tuple[str, str], str]:
        """The row versions this block assumed and nothing has checked yet; from now on,
        none (whoever takes them checks them)."""
        assumed: dict[tuple[str, str], str] | None = getattr(self._ahead, "assumed", None)
        self._ahead.assumed = None
        return assumed or {}

    def _still_current(self, assumed: Mapping[tuple[str, str], str]) -> bool:
        """Whether every assumed row is live and still the version assumed (one read)."""
        params = [part for (collection, key), version in assumed.items() for part in (collection, key, version)]
        with self._connection() as conn:
            row = conn.execute(_still_current_query(len(assumed)), (*params, time.time())).fetchone()
        return row is not None and row[0] == len(assumed)

    def _stale(self, assumed: Mapping[tuple[str, str], str]) -> StaleRead:
        self._known_rows.forget(*assumed)
        self._known_rows.outcome(stale=True)
        return StaleRead("a record assumed as this instance last saw it has changed elsewhere")

    def _check_assumed(self) -> None:
        """Before a write: the rows this block assumed must still be current, or
        nothing is written (StaleRead)."""
        assumed = self._take_assumed()
        if assumed:
            if not self._still_current(assumed):
                raise self._stale(assumed)
            self._known_rows.outcome(stale=False)

    def _held_here(self) -> set[str]:
        held: set[str] | None = getattr(self._held, "names", None)
        if held is None:
            held = self._held.names = set()
        return held

    @staticmethod
    def _known(collection: str) -> None:
        if collection not in COLLECTIONS:
            raise StoreError(f"unknown collection {collection!r}")

    def _expires_at(self, collection: str, record: Record) -> float | None:
        rule = self._expiry.get(collection)
        return rule(record) if rule else None

    def _row(self, collection: str, key: str, record: Record) -> tuple[str, str, Jsonb, float | None]:
        return collection, key, Jsonb(record), self._expires_at(collection, record)

    def migrate(self) -> None:
        """Bring the schema to the newest version (schema.py)."""
        with self._connection() as conn:
            schema.migrate(conn)

    def schema_version(self) -> int:
        with self._connection() as conn:
            return schema.schema_version(conn)

    def close(self) -> None:
        self._connections.close()

    # -- one record at a time ------------------------------------------------------------

    @contextmanager
    def read_ahead(self, wanted: list[tuple[str, str]], assume_known: bool = False) -> Iterator[None]:
        """See the interface (base.py); the rows read are remembered (`KnownRows`), and
        with `assume_known` the rows remembered are used instead of a read."""
        for collection, _ in wanted:
            self._known(collection)
        wanted = [name for name in wanted if NUL not in name[1]]  # never stored: `get` answers None
        now = time.time()
        known = self._known_rows.assumable(wanted, now) if assume_known and wanted else None
        if known is None and len(wanted) < 2:  # saves no round trip
            yield
            return
        rows = known if known is not None else self._read(wanted, now)
        found = {name: (version, text) for name, (version, text, _) in rows.items()}
        outer = getattr(self._ahead, "rows", None), getattr(self._ahead, "assumed", None)
        self._ahead.rows = {w: found.get(w) for w in wanted}
        self._ahead.assumed = {name: version for name, (version, _) in found.items()} if known is not None else None
        try:
            yield
            self._check_assumed()  # nothing written checked them: whatever the block decided
        finally:
            self._ahead.rows, self._ahead.assumed = outer

    def _read(self, wanted: list[tuple[str, str]], now: float) -> dict[tuple[str, str], KnownRow]:
        """The live rows among `wanted`, in one statement; remembered (`KnownRows`)."""
        with self._connection() as conn:
            rows = conn.execute(_read_ahead_query(len(wanted)), (*(part for pair in wanted for part in pair), now))
            found = {(collection, key): (version, text, expires) for collection, key, text, version, expires in rows}
        for name, row in found.items():
            self._known_rows.remember(name, row)
        self._known_rows.forget(*(name for name in wanted if name not in found))
        return found

    def get(self, collection: str, key: str) -> Record | None:
        self._known(collection)
        if NUL in key:  # PostgreSQL's text cannot hold it, so no record has it (base.py)
            return None
        ahead: dict[tuple[str, str], tuple[str, str] | None] | None = getattr(self._ahead, "rows", None)
        if ahead and (collection, key) in ahead:
            row = ahead.pop((collection, key))
            return self._remember(collection, key, *row) if row else None
        with self._connection() as conn:
            live = conn.execute(
                "SELECT record::text, xmin::text, expires_at FROM records WHERE collection = %s AND key = %s "
                "AND (expires_at IS NULL OR expires_at > %s)",
                (collection, key, time.time()),
            ).fetchone()
        assumed = getattr(self._ahead, "assumed", None)
        if assumed and (collection, key) in assumed and (live is None or live[1] != assumed[collection, key]):
            # read again in a block that assumed it, and changed: what the block decided
            # on it so far stands on nothing
            raise self._stale(self._take_assumed())
        if live is None:
            self._known_rows.forget((collection, key))
            return None
        text, version, expires_at = live
        self._known_rows.remember((collection, key), (version, text, expires_at), only_if_known=True)
        return self._remember(collection, key, version, text)

    def find(self, collection: str, field: str, value: str) -> Record | None:
        self._known(collection)
        if NUL in value:
            return None
        # The collection is written into the statement, not passed: a prepared
        # statement's generic plan could not match a partial index to a parameter.
        # No `LIMIT 1`: with it the planner, guessing that 1 % of rows match `?`,
        # prefers to scan the table until the first match, which is every row for a
        # grant rewritten lately (at the heap's end): a refresh that grows with the store.
        with self._connection() as conn:
            row = conn.execute(_find_query(collection, field), (value, time.time())).fetchone()
        return self._remember(collection, row[0], row[2], row[1]) if row else None

    def put(self, collection: str, key: str, record: Record) -> None:
        self._known(collection)
        self._write(collection, UPSERT, self._row(collection, storable_key(key), record))
        self._known_rows.forget((collection, key))

    def add(self, collection: str, key: str, record: Record) -> bool:
        self._known(collection)
        # An expired record under the key does not count: it is replaced.
        rows = self._write(
            collection,
            UPSERT + " WHERE records.expires_at IS NOT NULL AND records.expires_at <= %s RETURNING 1",
            (*self._row(collection, storable_key(key), record), time.time()),
        )
        self._known_rows.forget((collection, key))
        return bool(rows)

    def change(self, collection: str, key: str, change: Callable[[Record], T]) -> T | None:
        """Optimistic first: compare-and-set over the row version read (by this
        thread's `get` or `find` just before, or read now), which also checks every
        other row this block assumed (`read_ahead`). Should another writer have come
        first, the row is held (`SELECT … FOR UPDATE`) and changed in a transaction,
        so that a contended record still makes progress. `change` may therefore run
        twice, on the newer record the second time: it must be a function of the
        record alone."""
        self._known(collection)
        if NUL in key:
            return None
        last = getattr(self._last_read, "row", None)
        if last is None or last[:2] != (collection, key):
            if self.get(collection, key) is None:
                return None
            last = self._last_read.row
        self._last_read.row = None
        _, _, version, text = last
        record = json.loads(text)
        result = change(record)
        assumed = self._take_assumed()
        others = [(name, v) for name, v in assumed.items() if name != (collection, key)]
        written = json.dumps(record)
        expires_at = self._expires_at(collection, record)
        now = time.time()
        rows = self._write(
            collection,
            _change_query(len(others)),
            (
                Jsonb(record, dumps=lambda _: written),
                expires_at,
                collection,
                key,
                version,
                now,
                *(part for (c, k), v in others for part in (c, k, v, now)),
            ),
            checks_assumed=True,
        )
        if rows:
            if assumed:
                self._known_rows.outcome(stale=False)
            self._known_rows.remember((collection, key), (rows[0][0], written, expires_at), only_if_known=True)
            return result
        self._known_rows.forget((collection, key))
        if assumed:
            # The record, or another one assumed, changed elsewhere: all are read again
            # (one statement). Another one: what was decided on it stands on nothing
            # (StaleRead). Only this one: change the newest, as when a read is overtaken.
            fresh = self._read([(collection, key), *(name for name, _ in others)], time.time())
            if any(fresh.get(name, ("",))[0] != version for name, version in others):
                raise self._stale(assumed)
            self._known_rows.outcome(stale=(collection, key) in assumed)
            newest = fresh.get((collection, key))
            if newest is None:
                return None
            self._last_read.row = (collection, key, newest[0], newest[1])
            return self.change(collection, key, change)
        with self._writing(collection) as conn:
            row = conn.execute(
                "SELECT record FROM records WHERE collection = %s AND key = %s "
                "AND (expires_at IS NULL OR expires_at > %s) FOR UPDATE",
                (collection, key, time.time()),
            ).fetchone()
            if row is None:
                return None
            record = row[0]
            result = change(record)
            conn.execute(
                "UPDATE records SET record = %s, expires_at = %s WHERE collection = %s AND key = %s",
                (Jsonb(record), self._expires_at(collection, record), collection, key),
            )
        return result

    def delete(self, collection: str, key: str) -> Record | None:
        self._known(collection)
        if NUL in key:
            return None
        self._known_rows.forget((collection, key))
        # Not one statement with the lock in it: a statement sees the rows as of its
        # start, so a delete that waited out a restore would miss the restored row.
        with self._writing(collection) as conn:
            row = conn.execute(
                "DELETE FROM records WHERE collection = %s AND key = %s RETURNING record, expires_at",
                (collection, key),
            ).fetchone()
        if row is None or (row[1] is not None and row[1] <= time.time()):
            return None
        return row[0]

    def delete_where(self, collection: str, doomed: Callable[[Record], bool]) -> list[Record]:
        self._known(collection)
        self._known_rows.forget_all()
        with self._writing(collection) as conn:
            rows = conn.execute(
                "SELECT key, record FROM records WHERE collection = %s "
                "AND (expires_at IS NULL OR expires_at > %s) FOR UPDATE",
                (collection, time.time()),
            ).fetchall()
            chosen = [(key, record) for key, record in rows if doomed(record)]
            if chosen:
                conn.execute(
                    "DELETE FROM records WHERE collection = %s AND key = ANY(%s)",
                    (collection, [key for key, _ in chosen]),
                )
        return [record for _, record in chosen]

    # -- whole collections -----------------------------------------------------------------

    def scan(self, collection: str) -> dict[str, Record]:
        self._known(collection)
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT key, record FROM records WHERE collection = %s "
                "AND (expires_at IS NULL OR expires_at > %s) ORDER BY key",
                (collection, time.time()),
            ).fetchall()
        return {key: record for key, record in rows}

    def count(self, collection: str) -> int:
        self._known(collection)
        with self._connection() as conn:
            row = conn.execute("SELECT count(*) FROM records WHERE collection = %s", (collection,)).fetchone()
        return int(row[0]) if row else 0

    def revision(self, collection: str) -> object:
        """A digest of every (key, row version) in the collection: any insert, update or
        delete changes it. Computed, not counted, so that writes share no hot row."""
        now = time.monotonic()
        cached = self._revisions.get(collection)
        if cached is not None and now - cached[0] < REVISION_TTL:
            return cached[1]
        with self._connection() as conn:
            row = conn.execute(
                "SELECT md5(string_agg(key || ' ' || xmin::text, ',' ORDER BY key)) FROM records WHERE collection = %s",
                (collection,),
            ).fetchone()
        revision = row[0] if row else None
        self._revisions[collection] = (now, revision)
        return revision

    # -- the registration caps ------------------------------------------------------------

    def unused_clients_from(self, network: str) -> int:
        """See the interface (base.py): through the index on `unused_client_network`."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT count(*) FROM records WHERE unused_client_network = %s "
                "AND (expires_at IS NULL OR expires_at > %s)",
                (network, time.time()),
            ).fetchone()
        return int(row[0]) if row else 0

    def evict_oldest_unused_client(self) -> Record | None:
        """See the interface (base.py): one statement. The row is locked as it is
        chosen and its `evictable_since` checked again on the version locked, so a
        client whose first code redemption (`last_used_at`) committed meanwhile is
        skipped, never deleted; one another eviction holds is skipped too."""
        with self._writing("clients") as conn:
            row = conn.execute(
                "DELETE FROM records WHERE collection = 'clients' AND key = ("
                "SELECT key FROM records WHERE evictable_since IS NOT NULL "
                "ORDER BY evictable_since LIMIT 1 FOR UPDATE SKIP LOCKED"
                ") AND evictable_since IS NOT NULL RETURNING key, record"
            ).fetchone()
        if row is None:
            return None
        self._known_rows.forget(("clients", row[0]))
        return row[1]

    # -- health and the operator's side ------------------------------------------------------

    def check(self) -> None:
        with self._connection() as conn:
            conn.execute("SELECT count(*) FROM records WHERE false")

    def check_writable(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_current_xact_id()")  # a write transaction: fails on a read-only server

    def sweep(self) -> list[Any]:
        """A transaction leaves nothing behind when an instance dies."""
        return []

    @contextmanager
    def lock(self, *collections: str) -> Iterator[None]:
        names = sorted(collections or COLLECTIONS)
        held = self._held_here()
        wanted = [n for n in names if n not in held]
        if not wanted:
            yield
            return
        with self._connection() as conn:
            for name in wanted:
                conn.execute("SELECT pg_advisory_lock(%s)", (_collection_lock(name),))
            held.update(wanted)
            try:
                yield
            finally:
                held.difference_update(wanted)
                for name in wanted:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (_collection_lock(name),))

    def purge(
        self, collection: str, extra: Callable[[Record], bool] | None = None, dry_run: bool = False
    ) -> list[Record]:
        self._known(collection)
        if not dry_run:
            self._known_rows.forget_all()
        now = time.time()
        if extra is None and not dry_run:
            with self._writing(collection) as conn:
                rows = conn.execute(
                    "DELETE FROM records WHERE collection = %s AND expires_at <= %s RETURNING record",
                    (collection, now),
                ).fetchall()
            return [row[0] for row in rows]
        with self._connection() as conn:
            rows = conn.execute("SELECT key, record FROM records WHERE collection = %s", (collection,)).fetchall()
        rule = self._expiry.get(collection)
        chosen = [(k, r) for k, r in rows if is_expired(rule, r, now) or (extra is not None and extra(r))]
        if chosen and not dry_run:
            with self._writing(collection) as conn:
                conn.execute(
                    "DELETE FROM records WHERE collection = %s AND key = ANY(%s)", (collection, [k for k, _ in chosen])
                )
        return [r for _, r in chosen]

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """Every collection as of one instant (one repeatable-read transaction)."""
        now = time.time()
        with self._connection() as conn:
            conn.autocommit = False
            try:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                rows = conn.execute(
                    "SELECT collection, key, record FROM records "
                    "WHERE (expires_at IS NULL OR expires_at > %s) ORDER BY collection, key",
                    (now,),
                ).fetchall()
            finally:
                conn.rollback()
                conn.autocommit = True
        result: dict[str, dict[str, Record]] = {name: {} for name in COLLECTIONS}
        for collection, key, record in rows:
            if collection in result:
                result[collection][key] = record
        return result

    def replace_all(self, collections: Mapping[str, dict[str, Record]]) -> None:
        """One transaction: every named collection replaced, or none."""
        for name in collections:
            self._known(name)
        self._known_rows.forget_all()
        with self._writing(*collections) as conn:
            for name, items in collections.items():
                conn.execute("DELETE FROM records WHERE collection = %s", (name,))
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO records (collection, key, record, expires_at) VALUES (%s, %s, %s, %s)",
                        [self._row(name, key, record) for key, record in items.items()],
                    )

    def compact(self, *collections: str) -> None:
        """Nothing to do: every write is in the database when it returns."""

    def start_upkeep(self) -> None:
        """Nothing runs in the background: there are no files to keep current."""

    def stop_upkeep(self) -> None:
        """Nothing to stop."""

    def put_counted(
        self, collection: str, key: str, record: Record, kind: str, event_key: str, at: float, window: float, limit: int
    ) -> bool:
        """See the interface (base.py): one statement (`PUT_WITHIN`), the window's
        row held while it decides."""
        self._known(collection)
        self._check_assumed()
        started = time.perf_counter()
        query = PUT_WITHIN[collection not in self._held_here()]
        _, _, jsonb, expires_at = self._row(collection, storable_key(key), record)
        params = {
            "kind": kind,
            "key": event_key,
            "at": at,
            "window": window,
            "limit": limit,
            "lock": _collection_lock(collection),
            "collection": collection,
            "record_key": key,
            "record": jsonb,
            "expires_at": expires_at,
        }
        with self._connection() as conn:
            stored = conn.execute(query, params).fetchone() is not None
            self.shared.sweep_if_due(conn)
        self._known_rows.forget((collection, key))
        if stored:
            self._wrote(started, collection)
        return stored
