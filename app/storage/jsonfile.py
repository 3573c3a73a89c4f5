"""`PersistentStore`: collections of JSON records kept in plain files, with writes whose
cost follows the size of the change, not of the store.

Each collection is two files:

- `X.json`, the snapshot: ``{"version": 1, "generation": g, "<collection>": {key: record}}``;
- `X.json.journal`, append-only: a header line ``{"generation": g}`` naming the snapshot
  it continues, then one line per write: ``{"put": key, "record": {...}}``,
  ``{"del": key}``, or ``{"batch": [...]}`` of those when one write changes several.

A write takes the collection's file lock (the server and the operator CLI are separate
processes) and appends its line to the journal; it then fsyncs before it returns, so it
is durable when acknowledged and costs the size of the change. The fsync is outside the
lock and shared: writers that appended while one fsync ran are covered by the next,
one for all (group commit). Readers never lock: they
keep the collection in memory and, on each access, `stat` both files and replay only
the journal bytes they have not seen, so another process's write is visible at once.
A line is complete only with its newline: a crash mid-append leaves a torn last line,
which readers ignore and the next writer cuts off.

When the journal grows larger than the snapshot, at a clean stop (`compact`), and in a
running server within seconds of a change (`start_upkeep`: once writes to the collection
pause for `UPKEEP_QUIET` seconds, and at most every `UPKEEP_EVERY` seconds under a
steady load, so that the JSON files are what the server knows, while a write still
costs only its journal line), the collection is compacted: the snapshot is rewritten with generation g + 1 (temporary
file, fsync, rename, fsync of the folder), then the journal is replaced by an empty one
for g + 1 the same way. A crash between the two renames leaves a journal of generation
g beside a snapshot of g + 1; everything in it is already in the snapshot, so readers
skip it and the next writer replaces it. So every file parses after a SIGKILL at any
instant, and every acknowledged write is kept.

Expired records (the predicate per collection comes from the caller) are invisible to
every read and are not written into a snapshot. A file that cannot be parsed raises
`CorruptStoreError` naming it, and is never overwritten.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from . import local
from .base import (
    COLLECTIONS,
    CorruptStoreError,
    ExpiryRule,
    Record,
    SharedState,
    StoreError,
    WriteObserver,
    evictable_since,
    ignore_write,
    indexed_values,
    is_expired,
    storable_key,
    unused_client_network,
)

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: the journal is compacted once it is larger than this and than the snapshot
MIN_COMPACTION_BYTES = 64 * 1024

#: `start_upkeep`: a collection whose journal holds changes is compacted once it has not
#: grown for UPKEEP_QUIET seconds, and at the latest UPKEEP_EVERY seconds after its first
#: pending change (or 20 times the last compaction's duration, if longer: a huge store
#: must not spend its time rewriting itself); checked every UPKEEP_TICK seconds.
UPKEEP_QUIET = 1.0
UPKEEP_EVERY = 3.0
UPKEEP_TICK = 0.25

#: seconds after which a temporary file is a crash's leftover (`sweep`)
LEFTOVER_AGE = 3600

T = TypeVar("T")
FileId = tuple[int, int] | None  # (device, inode); None = no file


@dataclass
class _State:
    """One collection as this process last saw it. Changes are applied in place under
    the collection's view lock (a copy per write would cost O(store)); a lookup is a
    single dict access, and whatever iterates copies under that lock (`scan`)."""

    snapshot: tuple[int, int, int] | None  # the snapshot's (inode, size, mtime_ns)
    generation: int
    snapshot_bytes: int
    journal: FileId
    journal_generation: int | None  # from the journal's header line
    offset: int  # journal bytes applied (whole lines only)
    entries: int  # changes in the journal
    items: dict[str, Record]
    #: field -> value -> key, built on first use and kept up to date (see `find`)
    indexes: dict[str, dict[str, str]] = field(default_factory=dict)
    #: the never-used clients of each network (`unused_clients_from`), built on first
    #: use and kept up to date like the indexes, so that a registration's check costs
    #: the network's few clients, not a pass over every client
    unused_by_network: dict[str, set[str]] | None = None
    version: int = 0  # counts the changes applied in this process

    def apply(self, entries: list[dict[str, Any]], size: int) -> _State:
        """Apply journal `entries` (of `size` bytes) in place; the indexes follow the
        changed records only, so a write never rebuilds them. Call under the view lock."""
        items, indexes, by_network = self.items, self.indexes, self.unused_by_network
        for entry in entries:
            key = entry["put"] if "put" in entry else entry["del"]
            old = items.pop(key, None)
            if old is not None:
                for name, index in indexes.items():
                    for value in indexed_values(old, name):
                        if index.get(value) == key:
                            del index[value]
                if by_network is not None and (network := unused_client_network(old)) is not None:
                    by_network.get(network, set()).discard(key)
            if "put" in entry:
                items[key] = entry["record"]
                for name, index in indexes.items():
                    for value in indexed_values(entry["record"], name):
                        index[value] = key
                if by_network is not None and (network := unused_client_network(entry["record"])) is not None:
                    by_network.setdefault(network, set()).add(key)
        self.offset += size
        self.entries += len(entries)
        self.version += 1
        return self


class _FileLock:
    """An exclusive `flock` on a lock file, between processes. Reentrant, so that a
    holder of every lock (backup, restore) can still write; callers hold the
    collection's thread lock first, which keeps the count to one thread. The file is
    opened per acquisition, so a lock file removed by hand is simply made again."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._depth = 0

    def __enter__(self) -> None:
        if self._depth == 0:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
        self._depth += 1

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _is_change(entry: object) -> bool:
    return isinstance(entry, dict) and (
        (isinstance(entry.get("put"), str) and isinstance(entry.get("record"), dict))
        or isinstance(entry.get("del"), str)
    )


class PersistentStore:
    """The file store. Records are reached one at a time: `get`, `find` (by a field,
    through an index), `put`, `add` (only if absent), `change` (an atomic
    read-modify-write of one record: token rotation), `delete`, `delete_where`;
    `scan` and `count` read a whole collection, and `revision` tells a derived cache
    when it changed. For the operator: `purge` (expired records out), `snapshot` (all
    collections at one instant), `replace_all` (restore) and `compact`."""

    def __init__(self, data_dir: str | os.PathLike, expiry: Mapping[str, ExpiryRule] | None = None):
        self.data_dir = Path(data_dir)
        self.location = str(self.data_dir)
        self._expiry = dict(expiry or {})
        self._state: dict[str, _State] = {}
        self._file_names: dict[str, tuple[str, str]] = {}
        #: whether this process has written anything (the CLI compacts only then)
        self.wrote = False
        self._thread_locks = {name: threading.RLock() for name in COLLECTIONS}
        self._file_locks = {name: _FileLock(self.data_dir / f".{file}.lock") for name, file in COLLECTIONS.items()}
        # Readers take only this short lock to refresh their view, never the writers'
        # lock, so a read never waits for another request's fsync.
        self._view_locks = {name: threading.Lock() for name in COLLECTIONS}
        # Group commit: writes are numbered as they are appended; one fsync makes every
        # write appended before it durable, so concurrent writers share it.
        self._appended = dict.fromkeys(COLLECTIONS, 0)
        self._durable = dict.fromkeys(COLLECTIONS, 0)
        self._sync_locks = {name: threading.Lock() for name in COLLECTIONS}
        self.observe_write: WriteObserver = ignore_write
        self._upkeep: threading.Thread | None = None
        self._upkeep_stop = threading.Event()
        #: one process serves the files, so its short-lived state is its own
        self.shared: SharedState = local.LocalState()
        self._ensure_dir()

    @classmethod
    def open(cls, url: str, data_dir: Path, expiry: Mapping[str, ExpiryRule], max_connections: int) -> PersistentStore:
        """For `open_store` (`file`): the files in `data_dir`."""
        return cls(data_dir, expiry)

    # -- paths and locks ---------------------------------------------------------

    def path(self, collection: str) -> Path:
        try:
            return self.data_dir / COLLECTIONS[collection]
        except KeyError:
            raise StoreError(f"unknown collection {collection!r}") from None

    def journal_path(self, collection: str) -> Path:
        return self.path(collection).with_name(COLLECTIONS[collection] + ".journal")

    def _names(self, collection: str) -> tuple[str, str]:
        """(snapshot, journal) as plain strings: the read path `stat`s them on every
        access, and building `Path`s there would cost more than the `stat`s."""
        names = self._file_names.get(collection)
        if names is None:
            names = self._file_names[collection] = (str(self.path(collection)), str(self.journal_path(collection)))
        return names

    def _ensure_dir(self) -> None:
        try:
            self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if (self.data_dir.stat().st_mode & 0o777) != 0o700:
                os.chmod(self.data_dir, 0o700)
        except OSError as exc:
            raise StoreError(f"cannot use data folder {self.data_dir}: {exc.strerror}") from None

    @contextmanager
    def lock(self, *collections: str) -> Iterator[None]:
        """Hold the locks of the named collections (all when none are named), in a fixed
        order so two holders never deadlock. Used by writes and by consistent backups."""
        names = sorted(collections or COLLECTIONS)
        for name in names:
            self.path(name)  # an unknown name is a StoreError, before any lock is taken
        with ExitStack() as stack:
            for name in names:
                stack.enter_context(self._thread_locks[name])
                stack.enter_context(self._file_locks[name])
            yield

    # -- reading -----------------------------------------------------------------

    @staticmethod
    def _stat(path: str | Path) -> os.stat_result | None:
        try:
            return os.stat(path)
        except FileNotFoundError:
            return None

    def _load(self, collection: str) -> _State:
        """The collection as it is on disk now: two `stat`s when nothing changed, the
        new journal lines when only those were added, everything when the snapshot or
        the journal was replaced (compaction, restore, another process)."""
        snapshot_name, journal_name = self._names(collection)
        with self._view_locks[collection]:
            for _ in range(10):
                snap = self._stat(snapshot_name)
                jour = self._stat(journal_name)
                snapshot = (snap.st_ino, snap.st_size, snap.st_mtime_ns) if snap else None
                journal: FileId = (jour.st_dev, jour.st_ino) if jour else None
                state = self._state.get(collection)
                if state is not None and state.snapshot == snapshot and state.journal == journal:
                    if jour is None or jour.st_size == state.offset:
                        return state
                    if jour.st_size > state.offset:
                        tail = self._read_journal(collection, state.journal, state.offset)
                        if tail is not None:
                            entries, size, _ = tail
                            if size:
                                state.apply(entries, size)
                            return state
                fresh = self._read_all(collection)
                if fresh is not None:
                    self._state[collection] = fresh
                    return fresh
            raise StoreError(f"{self.path(collection)} keeps changing while being read")

    def _read_all(self, collection: str) -> _State | None:
        """Snapshot plus journal; None when either was replaced while reading (retry)."""
        path = self.path(collection)
        snap = self._stat(path)
        generation, items = self._read_snapshot(collection, path) if snap is not None else (0, {})
        jour = self._stat(self.journal_path(collection))
        journal: FileId = (jour.st_dev, jour.st_ino) if jour else None
        state = _State(
            snapshot=(snap.st_ino, snap.st_size, snap.st_mtime_ns) if snap else None,
            generation=generation,
            snapshot_bytes=snap.st_size if snap else 0,
            journal=journal,
            journal_generation=None,
            offset=0,
            entries=0,
            items=items,
        )
        if journal is not None:
            read = self._read_journal(collection, journal, 0)
            if read is None:
                return None
            entries, size, header = read
            if header is not None and header > generation:
                return None  # a compaction replaced both files between our two reads
            state.journal_generation = header
            if header == generation:
                state.apply(entries, size)
            else:
                state.offset = size  # an older journal, already in the snapshot
        after = self._stat(path)
        if (after.st_ino if after else None) != (snap.st_ino if snap else None):
            return None
        return state

    def _read_journal(
        self, collection: str, journal: FileId, offset: int
    ) -> tuple[list[dict[str, Any]], int, int | None] | None:
        """(the changes in the journal's complete lines past `offset`, their size in
        bytes, the header's generation when read from the start); None when the file
        is no longer `journal` (replaced: the caller reads again)."""
        path = self.journal_path(collection)
        try:
            with open(path, "rb") as handle:
                st = os.fstat(handle.fileno())
                if (st.st_dev, st.st_ino) != journal:
                    return None
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        size = data.rfind(b"\n") + 1  # whole lines only: a torn tail is not there yet
        header: int | None = None
        entries: list[dict[str, Any]] = []
        for number, line in enumerate(data[:size].splitlines()):
            try:
                entry = json.loads(line)
            except ValueError:
                raise CorruptStoreError(f"{path} has a damaged line; fix or move it away") from None
            if offset == 0 and number == 0 and isinstance(entry, dict) and isinstance(entry.get("generation"), int):
                header = entry["generation"]
            else:
                batch = entry.get("batch") if isinstance(entry, dict) else None
                for change in batch if isinstance(batch, list) else [entry]:
                    if not _is_change(change):
                        raise CorruptStoreError(f"{path} has a line of unknown kind; fix or move it away")
                    entries.append(change)
        return entries, size, header

    def _read_snapshot(self, collection: str, path: Path) -> tuple[int, dict[str, Record]]:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return 0, {}
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise CorruptStoreError(f"{path} is not valid JSON ({exc}); fix or move it away") from None
        if not isinstance(document, dict) or not isinstance(document.get(collection), dict):
            raise CorruptStoreError(f"{path} has no {collection!r} object; fix or move it away")
        version = document.get("version")
        if version != FORMAT_VERSION:
            raise CorruptStoreError(f"{path} has unsupported version {version!r} (expected {FORMAT_VERSION})")
        items = document[collection]
        if not all(isinstance(v, dict) for v in items.values()):
            raise CorruptStoreError(f"{path} holds entries that are not objects; fix or move it away")
        generation = document.get("generation", 0)
        return (generation if isinstance(generation, int) else 0), items

    def _is_expired(self, collection: str, record: Record, now: float) -> bool:
        return is_expired(self._expiry.get(collection), record, now)

    def read_ahead(self, wanted: list[tuple[str, str]], assume_known: bool = False) -> AbstractContextManager[None]:
        return nullcontext()  # every read is from memory already, and checked live

    def get(self, collection: str, key: str) -> Record | None:
        record = self._load(collection).items.get(key)
        if record is None or self._is_expired(collection, record, time.time()):
            return None
        return record

    def scan(self, collection: str) -> dict[str, Record]:
        """The live records of a collection. Treat them as read-only: change them
        through `put`, `change` or `delete`."""
        now = time.time()
        state = self._load(collection)
        with self._view_locks[collection]:
            items = list(state.items.items())
        return {k: v for k, v in items if not self._is_expired(collection, v, now)}

    def count(self, collection: str) -> int:
        """How many records there are, expired ones not yet compacted away included
        (cheap: for limits; `scan` for an exact count)."""
        return len(self._load(collection).items)

    def revision(self, collection: str) -> object:
        """A value that changes whenever the collection does (in any process)."""
        state = self._load(collection)
        return (id(state), state.version)

    def find(self, collection: str, field: str, value: str) -> Record | None:
        """The live record whose `field` (a string, or the keys of an object) holds
        `value`, through an index rebuilt only when the collection changes."""
        state = self._load(collection)
        index = state.indexes.get(field)
        if index is None:
            with self._view_locks[collection]:
                index = {v: key for key, record in state.items.items() for v in indexed_values(record, field)}
                state.indexes[field] = index
        key = index.get(value)
        return self.get(collection, key) if key is not None else None

    def unused_clients_from(self, network: str) -> int:
        """See the interface (base.py): through an index of the never-used clients by
        network, built once per view of the collection and kept up to date as changes
        are applied (so a registration pays for the network's few clients only)."""
        now = time.time()
        state = self._load("clients")
        with self._view_locks["clients"]:
            if state.unused_by_network is None:
                by_network: dict[str, set[str]] = {}
                for key, record in state.items.items():
                    if (held := unused_client_network(record)) is not None:
                        by_network.setdefault(held, set()).add(key)
                state.unused_by_network = by_network
            records = [state.items[key] for key in state.unused_by_network.get(network, ())]
        return sum(1 for record in records if not self._is_expired("clients", record, now))

    def evict_oldest_unused_client(self) -> Record | None:
        """See the interface (base.py): chosen and deleted under the lock."""

        def decide(items: dict[str, Record]) -> tuple[Record | None, list[dict[str, Any]]]:
            since = {key: at for key, record in items.items() if (at := evictable_since(record)) is not None}
            if not since:
                return None, []
            oldest = min(since, key=since.__getitem__)
            return items[oldest], [{"del": oldest}]

        return self._write("clients", decide)

    def check(self) -> None:
        """Raise `StoreError` unless every file is readable and parses."""
        for name in COLLECTIONS:
            self._load(name)

    def sweep(self) -> list[Path]:
        """Remove the temporary files a crash left behind (a process killed between
        writing a temporary file and renaming it); at start-up. Only old ones: a
        temporary file lives for the milliseconds of one write, and another process
        may be writing one now."""
        cutoff = time.time() - LEFTOVER_AGE
        removed = []
        for path in [*self.data_dir.glob(".*.tmp"), *self.data_dir.glob(".probe.*")]:
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except OSError:
                continue  # gone already, or not ours to remove: harmless either way
        return removed

    def check_writable(self) -> None:
        """Raise `StoreError` unless a file can be written in the folder now (a full
        or read-only disk)."""
        probe = self.data_dir / f".probe.{os.getpid()}.{threading.get_ident()}"
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, b"\0" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
                probe.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write in {self.data_dir}: {exc.strerror or exc}") from None

    # -- writing -----------------------------------------------------------------

    def _write(self, collection: str, decide: Callable[[dict[str, Record]], tuple[T, list[dict[str, Any]]]]) -> T:
        """Under the lock, on the current items: `decide` returns (a value, the journal
        entries to append). The entries are durable when this returns."""
        started = time.perf_counter()
        try:
            with self.lock(collection):
                state = self._load(collection)
                result, entries = decide(state.items)
                if not entries:
                    return result
                state = self._append(collection, state, entries)
                self._appended[collection] += 1
                number = self._appended[collection]
                if state.offset > max(MIN_COMPACTION_BYTES, state.snapshot_bytes):
                    self._compact_locked(collection)
            # The fsync happens outside the lock, so that the writers queued behind
            # this one append meanwhile and one fsync covers them all.
            self._make_durable(collection, number)
            self.observe_write(collection, time.perf_counter() - started)
            return result
        except OSError as exc:
            raise self._write_failed(collection, exc) from None

    def _make_durable(self, collection: str, number: int) -> None:
        """Return once write `number` of this process is on disk: fsync the journal,
        unless another writer's fsync (or a compaction) already covered it."""
        with self._sync_locks[collection]:
            if self._durable[collection] >= number:
                return
            covered = self._appended[collection]  # every one of these is in the file
            # By name: if the journal was replaced since (a compaction, here or in
            # another process), its snapshot holds our write and was fsync'd first.
            fd = os.open(self._names(collection)[1], os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._durable[collection] = max(self._durable[collection], covered)

    def _append(self, collection: str, state: _State, entries: list[dict[str, Any]]) -> _State:
        """Append `entries` to the journal (the caller makes them durable); the new
        state."""
        path = self.journal_path(collection)
        # One line per write, so a write is in the journal whole or not at all.
        line = entries[0] if len(entries) == 1 else {"batch": entries}
        data = json.dumps(line, separators=(",", ":")).encode("utf-8") + b"\n"
        if state.journal is None or state.journal_generation != state.generation:
            # No journal yet, or one a crashed compaction left behind: start afresh.
            self._install(path, json.dumps({"generation": state.generation}).encode() + b"\n")
            self._fsync_dir()
            state = self._load(collection)
        start = state.offset
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            if os.fstat(fd).st_size > state.offset:  # the torn line of a writer that crashed
                os.ftruncate(fd, state.offset)
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, "No space left on device")
            except OSError:
                os.ftruncate(fd, state.offset)  # not acknowledged: leave no part of it
                raise
        finally:
            os.close(fd)
        with self._view_locks[collection]:
            # A reader may have replayed our line already (it is in the file): we
            # hold the file lock, so the bytes past `start` can only be ours.
            if state.offset == start:
                state.apply(entries, len(data))
        self.wrote = True
        return state

    def put(self, collection: str, key: str, record: Record) -> None:
        storable_key(key)
        self._write(collection, lambda items: (None, [{"put": key, "record": record}]))

    def add(self, collection: str, key: str, record: Record) -> bool:
        """Store `record` unless `key` exists; whether it was stored."""
        storable_key(key)

        def decide(items: dict[str, Record]) -> tuple[bool, list[dict[str, Any]]]:
            existing = items.get(key)
            if existing is not None and not self._is_expired(collection, existing, time.time()):
                return False, []
            return True, [{"put": key, "record": record}]

        return self._write(collection, decide)

    def change(self, collection: str, key: str, change: Callable[[Record], T]) -> T | None:
        """Atomically change one record: `change` alters the copy it is given and may
        return a value. None, and nothing written, when the record does not exist."""

        def decide(items: dict[str, Record]) -> tuple[T | None, list[dict[str, Any]]]:
            existing = items.get(key)
            if existing is None or self._is_expired(collection, existing, time.time()):
                return None, []
            record = json.loads(json.dumps(existing))  # a deep copy the change may alter
            return change(record), [{"put": key, "record": record}]

        return self._write(collection, decide)

    def delete(self, collection: str, key: str) -> Record | None:
        def decide(items: dict[str, Record]) -> tuple[Record | None, list[dict[str, Any]]]:
            existing = items.get(key)
            return existing, ([{"del": key}] if existing is not None else [])

        return self._write(collection, decide)

    def delete_where(self, collection: str, doomed: Callable[[Record], bool]) -> list[Record]:
        """Delete every record `doomed` selects, atomically; the records deleted."""

        def decide(items: dict[str, Record]) -> tuple[list[Record], list[dict[str, Any]]]:
            keys = [k for k, v in items.items() if doomed(v)]
            return [items[k] for k in keys], [{"del": k} for k in keys]

        return self._write(collection, decide)

    def _write_failed(self, collection: str, exc: OSError) -> StoreError:
        return StoreError(f"cannot write {self.path(collection)}: {exc.strerror or exc}")

    def purge(
        self, collection: str, extra: Callable[[Record], bool] | None = None, dry_run: bool = False
    ) -> list[Record]:
        """Remove expired records (and those `extra` selects). Returns the records
        removed (or that would be, with `dry_run`)."""
        now = time.time()

        def decide(items: dict[str, Record]) -> tuple[list[Record], list[dict[str, Any]]]:
            keys = sorted(
                k for k, v in items.items() if self._is_expired(collection, v, now) or (extra is not None and extra(v))
            )
            return [items[k] for k in keys], ([] if dry_run else [{"del": k} for k in keys])

        return self._write(collection, decide)

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """Every collection as of one instant: read under all the locks."""
        with self.lock():
            return {name: self.scan(name) for name in COLLECTIONS}

    # -- compaction, restore -----------------------------------------------------------

    def compact(self, *collections: str) -> None:
        """Write the snapshots and empty the journals (at start-up, after a crash; at a
        clean stop, so that the JSON files alone are the whole truth), and write the
        snapshot of a collection that has none yet, so that every file docs/operations.md
        names exists."""
        for name in collections or COLLECTIONS:
            try:
                with self.lock(name):
                    if self._needs_compaction(self._load(name)):
                        self._compact_locked(name)
            except OSError as exc:
                raise self._write_failed(name, exc) from None

    @staticmethod
    def _needs_compaction(state: _State) -> bool:
        """Whether the snapshot lacks something the journal holds, or is missing."""
        stale_journal = state.journal is not None and state.journal_generation != state.generation
        return bool(state.entries) or stale_journal or state.snapshot is None

    # -- upkeep: the JSON files follow the writes within seconds ------------------------

    def start_upkeep(self) -> None:
        """Compact, in a background thread, every collection whose journal holds
        changes, once they pause (UPKEEP_QUIET) and at least every UPKEEP_EVERY seconds
        under load, whichever process wrote them (the thread reads the files' sizes,
        two `stat`s per collection and tick). Writers wait only while a snapshot is
        being written, as they would for a compaction a large journal triggers."""
        if self._upkeep is not None:
            return
        self._upkeep_stop.clear()
        self._upkeep = threading.Thread(target=self._keep_files_current, name="store-upkeep", daemon=True)
        self._upkeep.start()

    def stop_upkeep(self) -> None:
        """Stop the background compaction (at a clean stop, before the last one)."""
        thread, self._upkeep = self._upkeep, None
        if thread is not None:
            self._upkeep_stop.set()
            thread.join()

    def close(self) -> None:
        """Nothing stays open between calls (a lock's file is opened per use); the
        background compaction, if any, stops."""
        self.stop_upkeep()

    def put_counted(
        self, collection: str, key: str, record: Record, kind: str, event_key: str, at: float, window: float, limit: int
    ) -> bool:
        return local.put_counted(self, collection, key, record, kind, event_key, at, window, limit)

    def _keep_files_current(self) -> None:
        #: collection -> (the journal as last seen, when it last changed, when its first
        #: pending change was seen)
        seen: dict[str, tuple[tuple[FileId, int], float, float]] = {}
        every = dict.fromkeys(COLLECTIONS, UPKEEP_EVERY)
        while not self._upkeep_stop.wait(UPKEEP_TICK):
            if not self.data_dir.is_dir():
                return  # the folder went away (a test's temporary folder): nothing to keep
            for name in COLLECTIONS:
                try:
                    state = self._load(name)
                    if not state.entries:
                        seen.pop(name, None)
                        continue
                    now = time.monotonic()
                    marker = (state.journal, state.offset)
                    last = seen.get(name)
                    if last is None:
                        seen[name] = (marker, now, now)
                        continue
                    changed_at = now if last[0] != marker else last[1]
                    if now - changed_at < UPKEEP_QUIET and now - last[2] < every[name]:
                        seen[name] = (marker, changed_at, last[2])
                        continue
                    started = time.monotonic()
                    self.compact(name)
                    every[name] = max(UPKEEP_EVERY, 20 * (time.monotonic() - started))
                    seen.pop(name, None)
                except StoreError as exc:
                    # Reported where it matters (/healthz, the next write's 503); the
                    # thread tries again at the next tick.
                    log.debug("upkeep of %s skipped: %s", name, exc)

    def _compact_locked(self, collection: str) -> None:
        """The snapshot first, then the journal (see the module docstring for why a
        crash between them loses nothing)."""
        state = self._load(collection)
        generation = state.generation + 1
        self._install(self.path(collection), self._snapshot_bytes(collection, state.items, generation))
        self._fsync_dir()
        self._install(self.journal_path(collection), json.dumps({"generation": generation}).encode() + b"\n")
        self._fsync_dir()
        with self._view_locks[collection]:
            self._state.pop(collection, None)
        with self._sync_locks[collection]:  # everything appended so far is in the snapshot
            self._durable[collection] = max(self._durable[collection], self._appended[collection])

    def _snapshot_bytes(self, collection: str, items: dict[str, Record], generation: int) -> bytes:
        now = time.time()
        kept = {k: v for k, v in items.items() if not self._is_expired(collection, v, now)}
        # One record per line: readable and diffable like an indented file, but each
        # line comes from json's C encoder (`indent` would force the pure-Python one,
        # ten times slower, and a compaction of 10,000 grants would stall writers).
        head = json.dumps({"version": FORMAT_VERSION, "generation": generation})[:-1]
        lines = [f"{json.dumps(key)}: {json.dumps(record, ensure_ascii=False)}" for key, record in kept.items()]
        body = "{\n " + ",\n ".join(lines) + "\n}" if lines else "{}"
        return f"{head}, {json.dumps(collection)}: {body}}}\n".encode()

    def replace_all(self, collections: Mapping[str, dict[str, Record]]) -> None:
        """Replace the named collections' contents, all or nothing: every new file is
        written and fsync'd before the first is renamed into place, and if a rename
        fails the files already replaced get their old contents back."""
        with self.lock(*collections):
            staged: list[tuple[Path, Path, bytes | None]] = []  # (tmp, final, old bytes)
            try:
                for name, items in collections.items():
                    generation = self._load(name).generation + 1
                    contents = {
                        self.path(name): self._snapshot_bytes(name, items, generation),
                        self.journal_path(name): json.dumps({"generation": generation}).encode() + b"\n",
                    }
                    for path, data in contents.items():
                        old = path.read_bytes() if path.exists() else None
                        staged.append((self._write_temp(path, data), path, old))
            except OSError as exc:
                for tmp, _, _ in staged:
                    tmp.unlink(missing_ok=True)
                raise self._write_failed(next(iter(collections)), exc) from None
            done: list[tuple[Path, bytes | None]] = []
            try:
                for tmp, path, old in staged:
                    os.replace(tmp, path)
                    done.append((path, old))
                self._fsync_dir()
            except OSError as exc:
                for path, old in done:
                    if old is None:
                        path.unlink(missing_ok=True)
                    else:
                        self._install(path, old)
                for tmp, _, _ in staged:
                    tmp.unlink(missing_ok=True)
                raise self._write_failed(next(iter(collections)), exc) from None
            for name in collections:
                with self._view_locks[name]:
                    self._state.pop(name, None)
            self.wrote = True

    def _write_temp(self, path: Path, data: bytes) -> Path:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def _install(self, path: Path, data: bytes) -> None:
        """Replace `path` with `data` atomically (temporary file, fsync, rename)."""
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
