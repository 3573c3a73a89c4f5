"""The connections of a `PostgresStore`: psycopg's pool, and the one connection each
thread keeps between uses (taking one from the pool and handing it back cost about a
fifth of a one-row write's CPU here, much of it in the pool's lock that every thread
shares). Anything that goes wrong with the database (it is down, restarting,
unreachable) raises `StoreError`, which the app answers with 503; the pool reconnects
by itself."""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ..base import StoreError

#: how long a request waits for a database connection before it is answered 503
POOL_TIMEOUT = 1.0
#: a pooled connection idle longer than this is tested (one round trip) before use;
#: one used more recently is trusted, and should the database have gone away
#: meanwhile, that request answers 503 and the whole pool is tested in the background
CHECK_AFTER_IDLE = 2.0
#: how long a thread keeps the connection it used last (`_connection`) before handing it
#: back to the pool (which replaces connections past their lifetime)
KEEP_FOR = 600.0
#: how long start-up waits for the database
CONNECT_TIMEOUT = 10.0


class KeptConnection:
    """The connection a thread keeps between uses (`Connections.connection`)."""

    __slots__ = ("__weakref__", "busy", "conn", "failures", "finalizer", "kept_at", "used_at")

    def __init__(self, failures: int):
        self.conn: psycopg.Connection
        self.finalizer: weakref.finalize
        self.failures = failures  # the store's failure count when last known good
        self.busy = False
        self.kept_at = self.used_at = time.monotonic()


class Connections:
    """The pool and the kept connections; `connection()` is what every statement uses."""

    def __init__(self, url: str, max_connections: int = 10):
        self.location = _redact(url)
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
        # the connection each thread keeps between uses (see `connection`), at most
        # `_keep_at_most` at once so that the pool always has some for everyone else
        self._kept = threading.local()
        self._kept_all: weakref.WeakSet[KeptConnection] = weakref.WeakSet()
        self._kept_lock = threading.Lock()
        self._keep_at_most = max(0, max(2, max_connections) - 2)
        # connection failures so far: a kept connection from before the last one is
        # tested before use (the database may have restarted meanwhile)
        self._failures = 0
        #: when the last one happened (monotonic): a connection back in the pool from
        #: before it is tested at checkout
        self._failed_at = -1.0
        self._pool_check = threading.Lock()
        try:
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except PoolTimeout:
            self._pool.close()
            raise StoreError(f"cannot connect to the database at {self.location}") from None

    def give_back_this_threads(self) -> None:
        """Stop keeping this thread's connection: the thread that starts the server (or
        a command) rarely comes back."""
        kept = getattr(self._kept, "connection", None)
        if kept is not None:
            self._give_back(kept)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
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
            self._failed_at = time.monotonic()
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
        idled long enough for the database to have gone away meanwhile, or that came
        back to the pool before the last failure (kept by a thread while the database
        restarted, it may be dead without knowing it)."""
        returned_at = self._returned_at.get(conn, 0.0)
        if time.monotonic() - returned_at > CHECK_AFTER_IDLE or returned_at <= self._failed_at:
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

    def close(self) -> None:
        with self._kept_lock:
            kept = list(self._kept_all)
            self._kept_all.clear()
        for each in kept:
            each.finalizer.detach()
            each.conn.close()
        self._pool.close()


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname', '')}"
