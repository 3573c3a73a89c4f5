"""Short-lived state every instance shares (the `SharedState` of app/storage/base.py):
authorization codes, pending logins, throttle windows, fetched documents, upstream
login state. Each entry is one row of `ephemeral` (kind, key, the value as `jsonb`,
when it expires). Expired entries are swept as new ones come, at most every
EPHEMERAL_SWEEP seconds from an instance, and only once expired EPHEMERAL_GRACE
seconds (readers check the expiry themselves)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import psycopg
from psycopg.types.json import Jsonb

from ..base import NUL, JSONValue, storable_key

T = TypeVar("T")

#: `append_within`: the times still within the window (an entry that is not a
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
#: expired short-lived entries are deleted at most this often (seconds) by an instance
EPHEMERAL_SWEEP = 10.0
#: and only once expired this long (seconds): an instance whose clock is behind still
#: reads them as live, and readers check the expiry themselves
EPHEMERAL_GRACE = 60.0
#: optimistic tries of `update` before it holds the row in a transaction
EPHEMERAL_TRIES = 3


class PostgresSharedState:
    """`SharedState` on the `ephemeral` table. Every write first checks the rows a
    `read_ahead(…, assume_known=True)` block of this thread assumed (`check_assumed`,
    the store's), as any write of the store does."""

    in_process = False

    def __init__(
        self,
        connection: Callable[[], contextlib.AbstractContextManager[psycopg.Connection]],
        check_assumed: Callable[[], None],
    ) -> None:
        self._connection = connection
        self._check_assumed = check_assumed
        self._swept = -EPHEMERAL_SWEEP  # monotonic time of the last sweep

    def bound(self, kind: str, max_items: int) -> None:
        """Nothing to bound: entries expire, and are swept as new ones come."""

    def get(self, kind: str, key: str) -> JSONValue:
        if NUL in key:  # never stored (`storable_key`)
            return None
        with self._connection() as conn:
            row = conn.execute(
                "SELECT value FROM ephemeral WHERE kind = %s AND key = %s AND expires_at > %s",
                (kind, key, time.time()),
            ).fetchone()
        return row[0] if row else None

    def put(self, kind: str, key: str, value: JSONValue, expires_at: float) -> None:
        storable_key(key)
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO ephemeral (kind, key, value, expires_at) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (kind, key) DO UPDATE SET value = EXCLUDED.value, expires_at = EXCLUDED.expires_at",
                (kind, key, Jsonb(value), expires_at),
            )
            self.sweep_if_due(conn)

    def sweep_if_due(self, conn: psycopg.Connection) -> None:
        """Expired entries go as new ones come (a cheap indexed delete), at most every
        EPHEMERAL_SWEEP seconds from this instance: anyone can make new entries (a
        throttle's key is an address), so they must not outlive their use."""
        now = time.monotonic()
        if now - self._swept < EPHEMERAL_SWEEP:
            return
        self._swept = now
        conn.execute("DELETE FROM ephemeral WHERE expires_at <= %s", (time.time() - EPHEMERAL_GRACE,))

    def purge(self, dry_run: bool = False) -> int:
        """Remove the expired short-lived entries (the operator's `purge-expired`: the
        instances sweep them as they go, a database none of them uses keeps them);
        how many."""
        cutoff = time.time() - EPHEMERAL_GRACE
        with self._connection() as conn:
            if dry_run:
                row = conn.execute("SELECT count(*) FROM ephemeral WHERE expires_at <= %s", (cutoff,)).fetchone()
                return int(row[0]) if row else 0
            return conn.execute("DELETE FROM ephemeral WHERE expires_at <= %s", (cutoff,)).rowcount

    def pop(self, kind: str, key: str) -> JSONValue:
        if NUL in key:
            return None
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            row = conn.execute(
                "DELETE FROM ephemeral WHERE kind = %s AND key = %s RETURNING value, expires_at", (kind, key)
            ).fetchone()
        return row[0] if row and row[1] > time.time() else None

    @contextmanager
    def locked(self, kind: str, key: str) -> Iterator[list[JSONValue]]:
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

    def update(self, kind: str, key: str, update: Callable[[JSONValue], tuple[JSONValue, float, T]]) -> T:
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
            done, result = self._update_unless_overtaken(kind, key, update)
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

    def append_within(self, kind: str, key: str, at: float, window: float, limit: int) -> bool:
        """Append the time `at` to the list of times under `key` (a sliding window's
        events, oldest first), dropping those `window` or more before it, unless
        `limit` are left: whether it was appended. One statement, the row held while
        it decides, so callers on every instance at once never pass `limit`."""
        storable_key(key)
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            params = {"kind": kind, "key": key, "at": at, "window": window, "limit": limit}
            appended = conn.execute(APPEND_WITHIN, params).fetchone() is not None
            self.sweep_if_due(conn)
        return appended

    def _update_unless_overtaken(
        self, kind: str, key: str, update: Callable[[JSONValue], tuple[JSONValue, float, T]]
    ) -> tuple[bool, T]:
        """One optimistic `update`: (whether it was written, the result)."""
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

    def delete_where(self, kind: str, field: str, value: str) -> None:
        if NUL in value:
            return
        self._check_assumed()  # a write: see `read_ahead`
        with self._connection() as conn:
            conn.execute("DELETE FROM ephemeral WHERE kind = %s AND value ->> %s = %s", (kind, field, value))
