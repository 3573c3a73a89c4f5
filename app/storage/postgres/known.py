"""`KnownRows`: the rows of refreshes as this instance last read or wrote them, so that
`read_ahead(…, assume_known=True)` makes no read (see the package's docstring)."""

from __future__ import annotations

import threading
from collections import OrderedDict

#: rows an instance remembers as it last read or wrote them (`KnownRows`), the least
#: recently used forgotten first: a grant with its refresh-token hashes is about 2 kB
KNOWN_ROWS = 4096
#: once this many assumptions in a row were stale (instances that take turns with
#: the same grants: a round-robin balancer), assume only every `STALE_RETRY`-th time
STALE_STREAK = 3
STALE_RETRY = 16

#: a row as remembered: (row version, the record as JSON text, when it expires)
KnownRow = tuple[str, str, float | None]


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
