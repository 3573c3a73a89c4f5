"""Pending authorization requests: an /authorize request that passed validation,
kept while the person logs in (here or upstream) and consents: in memory, or in
PostgreSQL when instances share one (login on one instance, consent on another).

Each is bound to the browser session that started it, so a link to someone else's
pending request is worthless, and expires after OAUTH_AUTH_CODE_TTL.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .storage import expiring_map

if TYPE_CHECKING:
    from .storage.postgres import PostgresStore


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
    #: Anyone can start an authorization; past this many, the least recently used
    #: are dropped so that a flood of /authorize requests cannot exhaust memory.
    MAX_ITEMS = 10_000

    def __init__(self, ttl: int, max_items: int = MAX_ITEMS, shared: PostgresStore | None = None):
        self.ttl = ttl
        self._items: Any = expiring_map(
            shared, "pending", max_items, encode=dataclasses.asdict, decode=lambda d: PendingAuthorization(**d)
        )

    def create(self, params: dict[str, list[str]], browser_id: str) -> PendingAuthorization:
        pending = PendingAuthorization(secrets.token_urlsafe(24), params, browser_id)
        self._items.put(pending.id, pending, pending.created_at + self.ttl)
        return pending

    def get(self, pending_id: str | None, browser_id: str | None) -> PendingAuthorization | None:
        """The pending request, if it exists, is fresh and belongs to this browser."""
        if not pending_id or not browser_id:
            return None
        pending: PendingAuthorization | None = self._items.get(pending_id)  # None once expired
        if pending is None:
            return None
        if not secrets.compare_digest(pending.browser_id, browser_id):
            return None
        return pending

    def finish(self, pending_id: str) -> None:
        self._items.pop(pending_id)
