"""Pending authorization requests: an /authorize request that passed validation,
kept in memory while the person logs in (here or upstream) and consents.

Each is bound to the browser session that started it, so a link to someone else's
pending request is worthless, and expires after OAUTH_AUTH_CODE_TTL.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field


@dataclass
class PendingAuthorization:
    id: str
    params: dict[str, list[str]]
    browser_id: str
    created_at: float = field(default_factory=time.time)

    @property
    def client_id(self) -> str:
        return (self.params.get("client_id") or [""])[0]


class PendingAuthorizations:
    #: Anyone can start an authorization; past this many, the oldest are dropped so
    #: that a flood of /authorize requests cannot exhaust memory.
    MAX_ITEMS = 10_000

    def __init__(self, ttl: int):
        self.ttl = ttl
        self._items: dict[str, PendingAuthorization] = {}
        self._lock = threading.Lock()

    def create(self, params: dict[str, list[str]], browser_id: str) -> PendingAuthorization:
        pending = PendingAuthorization(secrets.token_urlsafe(24), params, browser_id)
        with self._lock:
            self._drop_expired()
            while len(self._items) >= self.MAX_ITEMS:
                del self._items[next(iter(self._items))]  # dicts keep insertion order
            self._items[pending.id] = pending
        return pending

    def get(self, pending_id: str | None, browser_id: str | None) -> PendingAuthorization | None:
        """The pending request, if it exists, is fresh and belongs to this browser."""
        if not pending_id or not browser_id:
            return None
        with self._lock:
            pending = self._items.get(pending_id)
        if pending is None or time.time() - pending.created_at > self.ttl:
            return None
        if not secrets.compare_digest(pending.browser_id, browser_id):
            return None
        return pending

    def finish(self, pending_id: str) -> None:
        with self._lock:
            self._items.pop(pending_id, None)

    def _drop_expired(self) -> None:
        now = time.time()
        for key in [k for k, p in self._items.items() if now - p.created_at > self.ttl]:
            del self._items[key]
