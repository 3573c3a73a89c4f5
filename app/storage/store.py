"""`PersistentStore`: collections of JSON records kept in plain files.

Each collection is one file, ``{"version": 1, "<collection>": {key: record}}``. The
server and the operator CLI are separate processes writing the same files, so every
write takes a file lock, re-reads the file under it, applies the change, and replaces
the file atomically (temporary file, fsync, rename, fsync of the folder). Readers never
lock: a rename is atomic, so they see the old file or the new one.

Reads go through an in-process cache keyed on the file's (inode, size, mtime): a
request costs one ``stat``, and the file is parsed again only when another process
changed it. That is what lets a deletion by the CLI take effect in the running server
at once without a file read per request.

Expired records (the predicate per collection comes from the caller) are invisible
on load and are not written back on save. A file that cannot be parsed raises
`CorruptStoreError` naming it, and is never overwritten.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

FORMAT_VERSION = 1

#: collection name -> file name (the contract's file names)
COLLECTIONS: dict[str, str] = {
    "clients": "clients.json",
    "grants": "refresh_tokens.json",
    "users": "users.json",
    "signing_keys": "signing_keys.json",
}

Record = dict[str, Any]
ExpiryRule = Callable[[Record, float], bool]
T = TypeVar("T")


class StoreError(Exception):
    """The store cannot be used; the message says which file and why."""


class CorruptStoreError(StoreError):
    """A store file exists but is not a valid store document."""


@dataclass
class _Cached:
    signature: tuple[int, int, int] | None  # (inode, size, mtime_ns); None = no file
    items: dict[str, Record]
    #: field -> value -> key, built on first use (see `find`)
    indexes: dict[str, dict[str, str]] = field(default_factory=dict)


class PersistentStore:
    """The file store. Records are reached one at a time: `get`, `find` (by a field,
    through an index), `put`, `add` (only if absent), `change` (an atomic
    read-modify-write of one record: token rotation), `delete`, `delete_where`;
    `scan` and `count` read a whole collection, and `revision` tells a derived cache
    when it changed. For the operator: `purge` (expired records off the disk),
    `snapshot` (all collections at one instant) and `replace_all` (restore)."""

    def __init__(self, data_dir: str | os.PathLike, expiry: Mapping[str, ExpiryRule] | None = None):
        self.data_dir = Path(data_dir)
        self._expiry = dict(expiry or {})
        self._cache: dict[str, _Cached] = {}
        self._thread_locks = {name: threading.RLock() for name in COLLECTIONS}
        self._ensure_dir()
        # One instance per file: FileLock is reentrant per instance, so a holder of
        # all locks (backup, restore) can still write.
        self._file_locks = {
            name: FileLock(str(self.data_dir / f".{file}.lock"), mode=0o600) for name, file in COLLECTIONS.items()
        }

    # -- paths and locks ---------------------------------------------------------

    def path(self, collection: str) -> Path:
        try:
            return self.data_dir / COLLECTIONS[collection]
        except KeyError:
            raise StoreError(f"unknown collection {collection!r}") from None

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
        with ExitStack() as stack:
            for name in names:
                stack.enter_context(self._thread_locks[name])
                stack.enter_context(self._file_locks[name])
            yield

    # -- reading -----------------------------------------------------------------

    def _signature(self, path: Path) -> tuple[int, int, int] | None:
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def _load(self, collection: str) -> dict[str, Record]:
        """The collection's items, parsed again only when the file changed on disk."""
        path = self.path(collection)
        signature = self._signature(path)
        cached = self._cache.get(collection)
        if cached is not None and cached.signature == signature:
            return cached.items
        items = self._read(collection, path) if signature is not None else {}
        self._cache[collection] = _Cached(signature, items)
        return items

    def _read(self, collection: str, path: Path, drop_expired: bool = True) -> dict[str, Record]:
        try:
            text = path.read_text(encoding="utf-8")
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
        if not drop_expired:
            return items
        now = time.time()
        return {k: v for k, v in items.items() if not self._is_expired(collection, v, now)}

    def _is_expired(self, collection: str, record: Record, now: float) -> bool:
        rule = self._expiry.get(collection)
        return bool(rule and rule(record, now))

    def get(self, collection: str, key: str) -> Record | None:
        record = self._load(collection).get(key)
        if record is None or self._is_expired(collection, record, time.time()):
            return None
        return record

    def scan(self, collection: str) -> dict[str, Record]:
        """The live records of a collection. Treat them as read-only: change them
        through `put`, `delete` or `update`."""
        now = time.time()
        return {k: v for k, v in self._load(collection).items() if not self._is_expired(collection, v, now)}

    def count(self, collection: str) -> int:
        return len(self.scan(collection))

    def revision(self, collection: str) -> object:
        """A value that changes whenever the collection does (in any process)."""
        self._load(collection)
        return self._cache[collection]

    def find(self, collection: str, field: str, value: str) -> Record | None:
        """The live record whose `field` (a string, or the keys of an object) holds
        `value`, through an index rebuilt only when the collection changes."""
        items = self._load(collection)
        cached = self._cache[collection]
        index = cached.indexes.get(field)
        if index is None:
            index = cached.indexes[field] = {}
            for key, record in items.items():
                held = record.get(field)
                for item in held if isinstance(held, dict) else [held]:
                    if isinstance(item, str):
                        index[item] = key
        key = index.get(value)
        return self.get(collection, key) if key is not None else None

    def check(self) -> None:
        """Raise `StoreError` unless every file is readable and parses."""
        for name in COLLECTIONS:
            self._load(name)

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

    def _update(self, collection: str, change: Callable[[dict[str, Record]], tuple[T, bool]]) -> T:
        """Apply `change` to a fresh copy of the items under the lock; it returns (a
        value, whether to save). If it raises, nothing is written."""
        try:
            with self.lock(collection):
                path = self.path(collection)
                current = self._read(collection, path) if path.exists() else {}
                items = {k: dict(v) for k, v in current.items()}
                result, dirty = change(items)
                if dirty:
                    self._write(collection, items)
                return result
        except OSError as exc:
            raise self._write_failed(collection, exc) from None

    def put(self, collection: str, key: str, record: Record) -> None:
        self._update(collection, lambda items: (items.__setitem__(key, record), True))

    def add(self, collection: str, key: str, record: Record) -> bool:
        """Store `record` unless `key` exists; whether it was stored."""

        def change(items: dict[str, Record]) -> tuple[bool, bool]:
            if key in items:
                return False, False
            items[key] = record
            return True, True

        return self._update(collection, change)

    def change(self, collection: str, key: str, change: Callable[[Record], T]) -> T | None:
        """Atomically change one record: `change` alters the copy it is given and may
        return a value. None, and nothing written, when the record does not exist."""

        def apply(items: dict[str, Record]) -> tuple[T | None, bool]:
            record = items.get(key)
            if record is None:
                return None, False
            return change(record), True

        return self._update(collection, apply)

    def delete(self, collection: str, key: str) -> Record | None:
        def remove(items: dict[str, Record]) -> tuple[Record | None, bool]:
            record = items.pop(key, None)
            return record, record is not None

        return self._update(collection, remove)

    def delete_where(self, collection: str, doomed: Callable[[Record], bool]) -> list[Record]:
        """Delete every record `doomed` selects, atomically; the records deleted."""

        def remove(items: dict[str, Record]) -> tuple[list[Record], bool]:
            keys = [k for k, v in items.items() if doomed(v)]
            return [items.pop(k) for k in keys], bool(keys)

        return self._update(collection, remove)

    def _write_failed(self, collection: str, exc: OSError) -> StoreError:
        return StoreError(f"cannot write {self.path(collection)}: {exc.strerror or exc}")

    def purge(
        self, collection: str, extra: Callable[[Record], bool] | None = None, dry_run: bool = False
    ) -> list[Record]:
        """Remove expired records (and those `extra` selects) from the file itself.
        Returns the records removed (or that would be, with `dry_run`)."""
        with self.lock(collection):
            path = self.path(collection)
            items = self._read(collection, path, drop_expired=False) if path.exists() else {}
            now = time.time()
            doomed = {
                k for k, v in items.items() if self._is_expired(collection, v, now) or (extra is not None and extra(v))
            }
            if doomed and not dry_run:
                try:
                    self._write(collection, {k: v for k, v in items.items() if k not in doomed})
                except OSError as exc:
                    raise self._write_failed(collection, exc) from None
            return [items[k] for k in sorted(doomed)]

    def snapshot(self) -> dict[str, dict[str, Record]]:
        """Every collection as of one instant: read under all the locks."""
        with self.lock():
            return {
                name: (self._read(name, self.path(name)) if self.path(name).exists() else {}) for name in COLLECTIONS
            }

    def replace_all(self, collections: Mapping[str, dict[str, Record]]) -> None:
        """Replace the named collections' contents, all or nothing: every new file is
        written and fsync'd before the first is renamed into place, and if a rename
        fails the files already replaced get their old contents back."""
        with self.lock(*collections):
            staged: list[tuple[Path, Path, bytes | None]] = []  # (tmp, final, old bytes)
            try:
                for name, items in collections.items():
                    path = self.path(name)
                    old = path.read_bytes() if path.exists() else None
                    staged.append((self._stage(name, items)[0], path, old))
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
            self._cache.clear()

    def _write(self, collection: str, items: dict[str, Record]) -> None:
        path = self.path(collection)
        tmp, kept = self._stage(collection, items)
        try:
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._fsync_dir()
        self._cache[collection] = _Cached(self._signature(path), kept)

    def _stage(self, collection: str, items: dict[str, Record]) -> tuple[Path, dict[str, Record]]:
        """The collection's new file, written and fsync'd beside the real one, and the
        records it holds."""
        now = time.time()
        kept = {k: v for k, v in items.items() if not self._is_expired(collection, v, now)}
        payload = json.dumps({"version": FORMAT_VERSION, collection: kept}, indent=1, sort_keys=True)
        return self._write_temp(self.path(collection), payload.encode("utf-8")), kept

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
        os.replace(self._write_temp(path, data), path)

    def _fsync_dir(self) -> None:
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
