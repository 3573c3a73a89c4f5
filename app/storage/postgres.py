"""`PostgresStore`: the store interface on PostgreSQL (psycopg 3 and its pool), for
deployments that run several instances against one database (`OAUTH_STORE=postgresql://…`).

Every record is one row of `records` (collection, key, the record as `jsonb`, and when
it expires, computed from the record at each write by the collection's expiry rule),
so expiry is a `WHERE` clause and `purge-expired` one `DELETE`. Each write of one
record is one statement (one round trip, no `BEGIN`/`COMMIT`). A read-modify-write
(`change`) is optimistic: the record is read with its row version (`xmin`, the
transaction that wrote it), changed here, and written back only if that version is
still the row's (compare-and-set); should another writer have come first, the row is
held (`SELECT … FOR UPDATE`) and changed in a transaction. So instances never lose
each other's updates, and in the common case nobody holds a row across a round trip.
`find` on the refresh-token hashes of grants made before refresh tokens named their
grant goes through a GIN index on a column generated from them, and `revision` is a
digest of the collection's keys and row versions.

A refresh reads its client and grant, then rewrites the grant: two round trips. An
instance usually served the last refresh of that grant too, and so knows both rows as
they are (`KnownRows`): `read_ahead(…, assume_known=True)` then makes no read, and the
rewrite's compare-and-set checks both row versions in its one statement. Whatever a
block decides on an assumed row that another instance changed meanwhile is never
written: any other write, and the block's end, check the rows first (`StaleRead`).

`lock()` (the operator's restore, merged under every collection) is an exclusive
advisory lock per collection; every write takes the shared one within its statement.

The schema is created and migrated at start-up under an advisory lock, so instances
that start at once against an empty database do it once: versioned, each step applied
in its own transaction and recorded in `schema_migrations`.

Anything that goes wrong with the database (it is down, restarting, unreachable)
raises `StoreError`, which the app answers with 503; the pool reconnects by itself.
"""

from __future__ import annotations

import contextlib
import functools
import json
import threading
import time
import weakref
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from .base import (
    COLLECTIONS,
    ExpiryRule,
    Record,
    StaleRead,
    StoreError,
    WriteObserver,
    ignore_write,
    is_expired,
    storable_key,
)

T = TypeVar("T")

#: (version, statements): append a step to change the schema; never edit a released one.
MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """CREATE TABLE records (
                collection text NOT NULL,
                key text NOT NULL,
                record jsonb NOT NULL,
                expires_at double precision,
                PRIMARY KEY (collection, key)
            )""",
            "CREATE INDEX records_expiry ON records (collection, expires_at) WHERE expires_at IS NOT NULL",
            """CREATE INDEX records_refresh_token_hashes ON records
                USING gin ((record -> 'refresh_token_hashes')) WHERE collection = 'grants'""",
            """CREATE TABLE revisions (
                collection text PRIMARY KEY,
                revision bigint NOT NULL DEFAULT 0
            )""",
        ],
    ),
    (
        2,
        [
            # Short-lived state shared by every instance: authorization codes, pending
            # logins (app/oauth2/codes.py, app/pending.py).
            """CREATE TABLE ephemeral (
                kind text NOT NULL,
                key text NOT NULL,
                value jsonb NOT NULL,
                expires_at double precision NOT NULL,
                PRIMARY KEY (kind, key)
            )""",
            "CREATE INDEX ephemeral_expiry ON ephemeral (expires_at)",
        ],
    ),
    (
        3,
        [
            # A rotation rewrites the grant, so every hash it keeps (up to 21) enters
            # the GIN index again: its pending list makes that cheap, but every lookup
            # scans the whole list, 4 MB by default. 64 kB (the least) measured best.
            "ALTER INDEX records_refresh_token_hashes SET (gin_pending_list_limit = 64)",
            # `revisions` is no longer written (see `revision`); kept for instances of
            # the previous version during a rolling upgrade.
        ],
    ),
    (
        4,
        [
            # Refresh tokens now name their grant and are found by its key; only grants
            # made before keep `refresh_token_hashes` and are searched by hash. The GIN
            # index moves to a column of its own, filled for those grants alone: an
            # index on `record` forbids HOT updates (a new row version in place, no
            # index touched), and every rotation rewrites `record`. For the same reason
            # `expires_at` loses its index (`purge` reads the collection instead), pages
            # keep room for the new version, and a record stays in its row up to 8 kB
            # (a grant with its 21 hashes passes the 2 kB default, and was moved to the
            # TOAST table, and its index, afresh at every rotation).
            """ALTER TABLE records ADD COLUMN refresh_token_hashes jsonb
                GENERATED ALWAYS AS (record -> 'refresh_token_hashes') STORED""",
            "DROP INDEX records_refresh_token_hashes",
            """CREATE INDEX records_searched_refresh_token_hashes ON records
                USING gin (refresh_token_hashes) WITH (gin_pending_list_limit = 64)
                WHERE refresh_token_hashes IS NOT NULL""",
            "DROP INDEX records_expiry",
            "ALTER TABLE records SET (fillfactor = 80, toast_tuple_target = 8160)",
        ],
    ),
    (
        5,
        [
            # The registration caps (app/storage/base.py: `unused_client_network`,
            # `evictable_since`), each a generated column with a partial index, as for
            # `refresh_token_hashes`: an index on `record` would forbid HOT updates.
            # Both stay NULL for every other row, and for a client once it is used.
            """ALTER TABLE records ADD COLUMN unused_client_network text GENERATED ALWAYS AS (
                CASE WHEN collection = 'clients' AND coalesce(record -> 'last_used_at', 'null') = 'null'
                THEN record ->> 'registered_from' END) STORED""",
            """ALTER TABLE records ADD COLUMN evictable_since double precision GENERATED ALWAYS AS (
                CASE WHEN collection = 'clients' AND coalesce(record -> 'last_used_at', 'null') = 'null'
                AND record -> 'resource_server' IS DISTINCT FROM 'true'
                THEN coalesce((record ->> 'created_at')::float8, 0) END) STORED""",
            """CREATE INDEX records_unused_client_network ON records (unused_client_network)
                WHERE unused_client_network IS NOT NULL""",
            "CREATE INDEX records_evictable_since ON records (evictable_since) WHERE evictable_since IS NOT NULL",
        ],
    ),
]
#: advisory lock ids: migrations, and one per collection (see `lock`)
MIGRATION_LOCK = 0x6D63706F  # "mcpo"
#: how long a request waits for a database connection before it is answered 503
POOL_TIMEOUT = 1.0
#: a pooled connection idle longer than this is tested (one round trip) before use;
#: one used more recently is trusted, and should the database have gone away
#: meanwhile, that request answers 503 and the whole pool is tested in the background
CHECK_AFTER_IDLE = 2.0
#: how long a thread keeps the connection it used last (`_connection`) before handing it
#: back to the pool (which replaces connections past their lifetime)
KEEP_FOR = 600.0
#: how long this process trusts a collection's revision read from the database (its
#: own writes are seen at once): a key rotated by another instance is used for
#: signing here within this time, and a token it signed is verified at once
#: (app/keys.py reloads for an unknown key id)
REVISION_TTL = 1.0
#: how long start-up waits for the database
CONNECT_TIMEOUT = 10.0
#: `ephemeral_append_within`: the times still within the window (an entry that is not a
#: list, such as an expired placeholder, holds none), then the append unless `limit` of
#: them are left
RECENT = """(SELECT {what} FROM jsonb_array_elements(
    CASE WHEN jsonb_typeof(e.value) = 'array' THEN e.value ELSE '[]'::jsonb END
) WITH ORDINALITY AS events(at, n) WHERE %(at)s - events.at::float8 < %(window)s)"""
APPEND_WITHIN = (
    "INSERT INTO ephemeral AS e (kind, key, value, expires_at) "
    "VALUES (%(kind)s, %(key)s, jsonb_build_array(%(at)s::float8), %(at)s::float8 + %(window)s) "
    "ON CONFLICT (kind, key) DO UPDATE SET value = "
    + RECENT.format(what="coalesce(jsonb_agg(events.at ORDER BY events.n), '[]'::jsonb)")
    + " || jsonb_build_array(%(at)s::float8), expires_at = %(at)s::float8 + %(window)s "
    "WHERE " + RECENT.format(what="count(*)") + " < %(limit)s RETURNING 1"
)
#: a record stored only if a sliding window (APPEND_WITHIN) admits it, in one statement:
#: a registration and its address's rate (`put_within`); with the collection's shared
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
#: expired short-lived entries are deleted at most this often (seconds) by an instance
EPHEMERAL_SWEEP = 10.0
#: and only once expired this long (seconds): an instance whose clock is behind still
#: reads them as live, and readers check the expiry themselves
EPHEMERAL_GRACE = 60.0
#: optimistic tries of `ephemeral_update` before it holds the row in a transaction
EPHEMERAL_TRIES = 3
#: rows an instance remembers as it last read or wrote them (`KnownRows`), the least
#: recently used forgotten first: a grant with its refresh-token hashes is about 2 kB
KNOWN_ROWS = 4096
#: once this many assumptions in a row were stale (instances that take turns with
#: the same grants: a round-robin balancer), assume only every `STALE_RETRY`-th time
STALE_STREAK = 3
STALE_RETRY = 16
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


#: what PostgreSQL's text cannot hold: a key with it is never stored (base.py)
NUL = "\x00"


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


#: a row as remembered: (row version, the record as JSON text, when it expires)
KnownRow = tuple[str, str, float | None]


class KeptConnection:
    """The connection a thread keeps between uses (`PostgresStore._connection`)."""

    __slots__ = ("__weakref__", "busy", "conn", "failures", "finalizer", "kept_at", "used_at")

    def __init__(self, failures: int):
        self.conn: psycopg.Connection
        self.finalizer: weakref.finalize
        self.failures = failures  # the store's failure count when last known good
        self.busy = False
        self.kept_at = self.used_at = time.monotonic()


class KnownRows:
    """The rows of refreshes as this instance last read or wrote them, for
    `read_ahead(…, assume_known=True)`. Other instances' writes never reach it: an
    assumed row is always checked against the database before it matters."""

    def __init__(self, size: int = KNOWN_ROWS) -> None:
        self._rows: OrderedDict[tuple[str, str], KnownRow] = OrderedDict()
        self._lock = threading.Lock()
        self._size = size
        # assumptions found stale in a row, and assumptions passed up since
        self._stale_streak = 0
        self._passed_up = 0

    def assumable(self, wanted: list[tuple[str, str]], now: float) -> dict[tuple[str, str], KnownRow] | None:
        """Every wanted row, if all are known and live and assuming still pays."""
        with self._lock:
            rows = {}
            for name in wanted:
                row = self._rows.get(name)
                if row is None or (row[2] is not None and row[2] <= now):
                    return None
                rows[name] = row
            if self._stale_streak >= STALE_STREAK:
                self._passed_up += 1
                if self._passed_up % STALE_RETRY:
                    return None
            for name in wanted:
                self._rows.move_to_end(name)
            return rows

    def outcome(self, stale: bool) -> None:
        """How an assumption turned out (see STALE_STREAK)."""
        with self._lock:
            self._stale_streak = self._stale_streak + 1 if stale else 0

    def remember(self, name: tuple[str, str], row: KnownRow, only_if_known: bool = False) -> None:
        with self._lock:
            if only_if_known and name not in self._rows:
                return
            self._rows[name] = row
            self._rows.move_to_end(name)
            while len(self._rows) > self._size:
                self._rows.popitem(last=False)

    def forget(self, *names: tuple[str, str]) -> None:
        with self._lock:
            for name in names:
                self._rows.pop(name, None)

    def forget_all(self) -> None:
        with self._lock:
            self._rows.clear()


class PostgresStore:
    def __init__(self, url: str, expiry: Mapping[str, ExpiryRule] | None = None, max_connections: int = 10):
        self._expiry = dict(expiry or {})
        self.location = _redact(url)
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
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, max_connections),
            timeout=POOL_TIMEOUT,
            kwargs={"autocommit": True, "connect_timeout": 5},
            open=False,
            # (No `reset` callback: with one the pool hands every returned connection
            # to a worker thread, a thread switch per query.)
            check=self._check_if_idle,
            name="mcp-oauth",
        )
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()
        # the connection each thread keeps between uses (see `_connection`), at most
        # `_keep_at_most` at once so that the pool always has some for everyone else
        self._kept = threading.local()
        self._kept_all: weakref.WeakSet[KeptConnection] = weakref.WeakSet()
        self._kept_lock = threading.Lock()
        self._keep_at_most = max(0, max(2, max_connections) - 2)
        # connection failures so far: a kept connection from before the last one is
        # tested before use (the database may have restarted meanwhile)
        self._failures = 0
        self._pool_check = threading.Lock()
        self._ephemeral_swept = -EPHEMERAL_SWEEP  # monotonic time of the last sweep
        self._revisions: dict[str, tuple[float, object]] = {}
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot connect to the database at {self.location}") from None
        self.migrate()
        kept = getattr(self._kept, "connection", None)
        if kept is not None:  # the thread that starts the server (or a command) rarely comes back
            self._give_back(kept)

    # -- plumbing ------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A connection for a statement or a transaction. A thread keeps the one it
        used last for its next use: taking one from the pool and handing it back cost
        about a fifth of a one-row write's CPU here, much of it in the pool's lock
        that every thread shares. A use within another (a block holding a row or a
        lock) takes one from the pool, as does every use once the kept ones leave
        the pool only two."""
        try:
            kept = self._kept_connection()
            if kept is None:
                with self._pool.connection() as conn:
                    try:
                        yield conn
                    finally:
                        self._returned_at[conn] = time.monotonic()
                return
            kept.busy = True
            try:
                yield kept.conn
            except BaseException:
                if kept.conn.info.transaction_status != TransactionStatus.IDLE:
                    self._give_back(kept)  # (a failed connection): the pool replaces it
                raise
            finally:
                kept.busy = False
                kept.used_at = time.monotonic()
        except (psycopg.OperationalError, PoolTimeout, psycopg.InterfaceError) as exc:
            self._failures += 1
            self._check_pool_soon()
            raise StoreError(f"the database at {self.location} is unavailable ({type(exc).__name__})") from None

    def _kept_connection(self) -> KeptConnection | None:
        """This thread's kept connection, ready for use (tested first if it idled long
        enough, or if a connection failed since it was last used), or a new one from
        the pool; None when it is in use already or no more may be kept."""
        kept: KeptConnection | None = getattr(self._kept, "connection", None)
        if kept is not None:
            if kept.busy:
                return None
            now = time.monotonic()
            if now - kept.kept_at > KEEP_FOR:
                self._give_back(kept)
            elif kept.failures == self._failures and now - kept.used_at <= CHECK_AFTER_IDLE:
                return kept
            else:
                try:
                    ConnectionPool.check_connection(kept.conn)
                except psycopg.Error:
                    self._give_back(kept)
                else:
                    kept.failures = self._failures
                    return kept
        with self._kept_lock:
            if len(self._kept_all) >= self._keep_at_most:
                return None
            kept = KeptConnection(self._failures)
            self._kept_all.add(kept)
        try:
            kept.conn = self._pool.getconn()
        except BaseException:
            with self._kept_lock:
                self._kept_all.discard(kept)
            raise
        # Only the thread's local refers to `kept`: when the thread ends, it goes, and
        # its connection goes back to the pool.
        kept.finalizer = weakref.finalize(kept, self._return_kept, kept.conn)
        kept.finalizer.atexit = False  # at exit the process's connections close anyway
        self._kept.connection = kept
        return kept

    def _give_back(self, kept: KeptConnection) -> None:
        """Stop keeping `kept`: its connection goes back to the pool, which discards it
        if it is broken."""
        if getattr(self._kept, "connection", None) is kept:
            del self._kept.connection
        with self._kept_lock:
            self._kept_all.discard(kept)
        kept.finalizer.detach()
        self._return_kept(kept.conn)

    def _return_kept(self, conn: psycopg.Connection) -> None:
        with contextlib.suppress(Exception):  # a pool already closed closes it
            self._returned_at[conn] = time.monotonic()
            self._pool.putconn(conn)

    def _check_if_idle(self, conn: psycopg.Connection) -> None:
        """The pool's check at checkout: a round trip only for a connection that
        idled long enough for the database to have gone away meanwhile."""
        if time.monotonic() - self._returned_at.get(conn, 0.0) > CHECK_AFTER_IDLE:
            ConnectionPool.check_connection(conn)

    def _check_pool_soon(self) -> None:
        """After a failure, test every idle connection (in the background: with the
        database down, reconnecting waits), so that the pool holds no dead one once
        the database is back."""
        if self._pool_check.acquire(blocking=False):

            def check() -> None:
                try:
                    with contextlib.suppress(Exception):  # the next request reports the database
                        self._pool.check()
                finally:
                    self._pool_check.release()

            threading.Thread(target=check, name="mcp-oauth-pool-check", daemon=True).start()

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
        """Bring the schema to the newest version (idempotent; safe from several
        instances at once: the first takes the lock and migrates, the others wait and
        find nothing left to do)."""
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            for version, statements in MIGRATIONS:
                if version in done:
                    continue
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))

    def schema_version(self) -> int:
        with self._connection() as conn:
            row = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
        return int(row[0] or 0) if row else 0

    def close(self) -> None:
        with self._kept_lock:
            kept = list(self._kept_all)
            self._kept_all.clear()
        for each in kept:
            each.finalizer.detach()
            each.conn.close()
        self._pool.close()

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

    # -- short-lived shared state (codes, pending logins) ----------------------------------

    def ephemeral_get(self, kind: str, key: str) -> Any:
        if NUL in key:  # never stored (`storable_key`)
            return None
        with self._connection() as conn:
            row = conn.execute(
                "SELECT value FROM ephemeral WHERE kind = %s AND key = %s AND expires_at > %s",
                (kind, key, time.time()),
            ).fetchone()
        return row[0] if row else None

    def ephemeral_put(self, kind: str, key: str, value: Any, expires_at: float) -> None:
        storable_key(key)
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO ephemeral (kind, key, value, expires_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                (kind, key, Jsonb(value), expires_at),
            )
            self._sweep_ephemeral_if_due(conn)

    def _sweep_ephemeral_if_due(self, conn: psycopg.Connection) -> None:
        """Expired entries go as new ones come (a cheap indexed delete), at most every
        EPHEMERAL_SWEEP seconds from this instance: anyone can make new entries (a
        throttle's key is an address), so they must not outlive their use."""
        now = time.monotonic()
        if now - self._ephemeral_swept < EPHEMERAL_SWEEP:
            return
        self._ephemeral_swept = now
        conn.execute("DELETE FROM ephemeral WHERE expires_at <= %s", (time.time() - EPHEMERAL_GRACE,))

    def ephemeral_purge(self, dry_run: bool = False) -> int:
        """Remove the expired short-lived entries (the operator's `purge-expired`: the
        instances sweep them as they go, a database none of them uses keeps them);
        how many."""
        cutoff = time.time() - EPHEMERAL_GRACE
        with self._connection() as conn:
            if dry_run:
                row = conn.execute("SELECT count(*) FROM ephemeral WHERE expires_at <= %s", (cutoff,)).fetchone()
                return int(row[0]) if row else 0
            return conn.execute("DELETE FROM ephemeral WHERE expires_at <= %s", (cutoff,)).rowcount

    def ephemeral_pop(self, kind: str, key: str) -> Any:
        if NUL in key:
            return None
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            row = conn.execute(
                "DELETE FROM ephemeral WHERE kind = %s AND key = %s RETURNING value, expires_at", (kind, key)
            ).fetchone()
        return row[0] if row and row[1] > time.time() else None

    @contextmanager
    def ephemeral_locked(self, kind: str, key: str) -> Iterator[list[Any]]:
        """The value under `key`, held against every instance (`SELECT … FOR UPDATE`)
        until the block ends: yields `[value]` (None when absent); a value put back
        into the list is stored when the block ends without an exception."""
        if NUL in key:  # never stored: absent, and nothing to put back
            yield [None]
            return
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn, conn.transaction():
            row = conn.execute(
                "SELECT value FROM ephemeral WHERE kind = %s AND key = %s AND expires_at > %s FOR UPDATE",
                (kind, key, time.time()),
            ).fetchone()
            holder = [row[0] if row else None]
            yield holder
            if row is not None:
                conn.execute(
                    "UPDATE ephemeral SET value = %s WHERE kind = %s AND key = %s", (Jsonb(holder[0]), kind, key)
                )

    def ephemeral_update(self, kind: str, key: str, update: Callable[[Any], tuple[Any, float, T]]) -> T:
        """Read-modify-write of one entry, atomic across instances: `update` gets the
        live value (None when absent) and returns (the new value or None to remove it,
        its expiry time, the result). As `change`: optimistic first, a read then a
        write over the row version read (two statements; a failed login makes one);
        should another instance have come first, again, and then the row held in a
        transaction. `update` may run more than once: it must be a function of the
        value alone."""
        storable_key(key)
        self._check_assumed()  # a write: see `read_ahead`
        for _ in range(EPHEMERAL_TRIES):
            done, result = self._ephemeral_update_unless_overtaken(kind, key, update)
            if done:
                return result
        now = time.time()
        with self._connection() as conn, conn.transaction():
            # A row to lock even for a new key (an expired placeholder until updated).
            conn.execute(
                "INSERT INTO ephemeral (kind, key, value, expires_at) VALUES (%s, %s, 'null', 0) "
                "ON CONFLICT (kind, key) DO NOTHING",
                (kind, key),
            )
            row = conn.execute(
                "SELECT value, expires_at FROM ephemeral WHERE kind = %s AND key = %s FOR UPDATE", (kind, key)
            ).fetchone()
            current = row[0] if row and row[1] > now else None
            value, expires_at, result = update(current)
            if value is None:
                conn.execute("DELETE FROM ephemeral WHERE kind = %s AND key = %s", (kind, key))
            else:
                conn.execute(
                    "UPDATE ephemeral SET value = %s, expires_at = %s WHERE kind = %s AND key = %s",
                    (Jsonb(value), expires_at, kind, key),
                )
        return result

    def ephemeral_append_within(self, kind: str, key: str, at: float, window: float, limit: int) -> bool:
        """Append the time `at` to the list of times under `key` (a sliding window's
        events, oldest first), dropping those `window` or more before it, unless
        `limit` are left: whether it was appended. One statement, the row held while
        it decides, so callers on every instance at once never pass `limit`."""
        storable_key(key)
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            params = {"kind": kind, "key": key, "at": at, "window": window, "limit": limit}
            appended = conn.execute(APPEND_WITHIN, params).fetchone() is not None
            self._sweep_ephemeral_if_due(conn)
        return appended

    def put_within(
        self, collection: str, key: str, record: Record, kind: str, event_key: str, at: float, window: float, limit: int
    ) -> bool:
        """`put`, counted as an event of the sliding window under (`kind`, `event_key`)
        as `ephemeral_append_within` counts it, in the same statement: the record is
        stored only if the window admitted the event; whether it was."""
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
            self._sweep_ephemeral_if_due(conn)
        self._known_rows.forget((collection, key))
        if stored:
            self._wrote(started, collection)
        return stored

    def _ephemeral_update_unless_overtaken(
        self, kind: str, key: str, update: Callable[[Any], tuple[Any, float, T]]
    ) -> tuple[bool, T]:
        """One optimistic `ephemeral_update`: (whether it was written, the result)."""
        with self._connection() as conn:
            row = conn.execute(
                "SELECT value, expires_at, xmin::text FROM ephemeral WHERE kind = %s AND key = %s", (kind, key)
            ).fetchone()
            current = row[0] if row and row[1] > time.time() else None
            value, expires_at, result = update(current)
            if row is None and value is None:
                return True, result
            if row is None:
                written = conn.execute(
                    "INSERT INTO ephemeral (kind, key, value, expires_at) VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (kind, key) DO NOTHING RETURNING 1",
                    (kind, key, Jsonb(value), expires_at),
                ).fetchone()
            elif value is None:
                written = conn.execute(
                    "DELETE FROM ephemeral WHERE kind = %s AND key = %s AND xmin = %s::xid RETURNING 1",
                    (kind, key, row[2]),
                ).fetchone()
            else:
                written = conn.execute(
                    "UPDATE ephemeral SET value = %s, expires_at = %s WHERE kind = %s AND key = %s "
                    "AND xmin = %s::xid RETURNING 1",
                    (Jsonb(value), expires_at, kind, key, row[2]),
                ).fetchone()
        return written is not None, result

    def ephemeral_delete_where(self, kind: str, field: str, value: str) -> None:
        if NUL in value:
            return
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            conn.execute("DELETE FROM ephemeral WHERE kind = %s AND value ->> %s = %s", (kind, field, value))


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname', '')}"


class SharedMap:
    """`TTLCache`'s interface (get, put with an expiry time, pop) on the `ephemeral`
    table, for short-lived state every instance must see. Values are stored as JSON:
    `encode` and `decode` convert what is not."""

    def __init__(
        self,
        store: PostgresStore,
        kind: str,
        encode: Callable[[Any], Any] = lambda value: value,
        decode: Callable[[Any], Any] = lambda value: value,
    ) -> None:
        self.store = store
        self.kind = kind
        self.encode = encode
        self.decode = decode

    def get(self, key: str, now: float | None = None) -> Any:
        stored = self.store.ephemeral_get(self.kind, key)
        return None if stored is None else self.decode(stored)

    def put(self, key: str, value: Any, expires_at: float) -> None:
        self.store.ephemeral_put(self.kind, key, self.encode(value), expires_at)

    def pop(self, key: str) -> Any:
        stored = self.store.ephemeral_pop(self.kind, key)
        return None if stored is None else self.decode(stored)
