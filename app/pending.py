"""Pending authorization requests: an /authorize request that passed validation,
kept while the person logs in (here or upstream) and consents: in memory, or in
PostgreSQL when instances share one (login on one instance, consent on another).

Each is bound to the browser session that started it, so a link to someone else's
pending request is worthless, and expires after OAUTH_AUTH_CODE_TTL.

Anyone can start one without logging in, so what they may hold is bounded three ways:
in bytes (the query, `MAX_QUERY_BYTES`), per address (`MAX_PER_ADDRESS`, an IPv6
client by its /64) and in all (`MAX_ITEMS`, in memory).
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from .cache import TTLCache
from .storage import expiring_map

if TYPE_CHECKING:
    from .storage.postgres import PostgresStore

T = TypeVar("T")

#: An /authorize query longer than this is refused (400) before anything is kept: real
#: requests are well under 2 KiB, and each pending one holds its whole query.
MAX_QUERY_BYTES = 8 * 1024
#: Pending authorizations one address (one IPv6 /64) may hold at once.
MAX_PER_ADDRESS = 100
#: `PendingAuthorization.then` of a login the account page started
FOR_ACCOUNT = "account"
#: the shared database's kind for each address's pending ids
ADDRESS_KIND = "pending-address"


class TooManyPending(Exception):
    """This address already holds `MAX_PER_ADDRESS` pending authorizations."""

    def __init__(self, wait: int):
        super().__init__(f"too many pending authorizations: try again in {wait} s")
        self.wait = wait


@dataclass
class PendingAuthorization:
    id: str
    params: dict[str, list[str]]
    browser_id: str
    created_at: float = field(default_factory=time.time)
    #: the network it was started from (`forwarded.network_key`), whose count it is in
    network: str = ""
    #: where the person goes once logged in: "" for consent (an authorization
    #: request), or `FOR_ACCOUNT` (a login started by /account, whose params are empty)
    then: str = ""

    @property
    def client_id(self) -> str:
        return (self.params.get("client_id") or [""])[0]

    @classmethod
    def decode(cls, stored: dict[str, Any]) -> PendingAuthorization:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in stored.items() if k in known})


#: (the ids an address holds -> their expiry) -> (the new value or None, its expiry, result)
Update = Callable[[Any], tuple[Any, float, T]]


class _LocalHeld:
    """Each address's pending ids in this process: `PostgresStore.ephemeral_update`'s
    read-modify-write on a bounded map."""

    def __init__(self, max_keys: int):
        self._held: TTLCache[str, Any] = TTLCache(max_keys)
        self._lock = threading.Lock()

    def update(self, key: str, update: Update[T]) -> T:
        with self._lock:
            value, expires_at, result = update(self._held.get(key))
            if value is None:
                self._held.pop(key)
            else:
                self._held.put(key, value, expires_at)
            return result


class PendingAuthorizations:
    #: Past this many (in memory), the least recently used are dropped so that a
    #: flood of /authorize requests from many addresses cannot exhaust memory.
    MAX_ITEMS = 10_000

    def __init__(
        self,
        ttl: int,
        max_items: int = MAX_ITEMS,
        shared: PostgresStore | None = None,
        per_address: int = MAX_PER_ADDRESS,
    ):
        self.ttl = ttl
        self.per_address = per_address
        self._items: Any = expiring_map(
            shared, "pending", max_items, encode=dataclasses.asdict, decode=PendingAuthorization.decode
        )
        self._update_held: Callable[[str, Update[Any]], Any] = (
            _LocalHeld(max_items).update
            if shared is None
            else lambda key, update: shared.ephemeral_update(ADDRESS_KIND, key, update)
        )

    def create(
        self, params: dict[str, list[str]], browser_id: str, network: str = "", then: str = ""
    ) -> PendingAuthorization:
        """Keep a validated request while the person logs in. Raises TooManyPending
        when its address holds `per_address` already: its new requests are refused
        rather than its oldest dropped, so that a flood from an address shared by
        several people (an office's NAT, a household's /64) never pushes out the
        sign-in another of them is in the middle of; the flood's own entries leave
        as they expire."""
        pending = PendingAuthorization(secrets.token_urlsafe(24), params, browser_id, network=network, then=then)
        expires_at = pending.created_at + self.ttl
        self._hold(pending, expires_at)
        self._items.put(pending.id, pending, expires_at)
        return pending

    def _hold(self, pending: PendingAuthorization, expires_at: float) -> None:
        now = pending.created_at

        def update(held: Any) -> tuple[Any, float, int]:
            live = {k: v for k, v in (held or {}).items() if v > now}
            if len(live) >= self.per_address:
                wait = max(1, int(min(live.values()) - now + 0.999))
                return (live or None), max(live.values(), default=0.0), wait
            live[pending.id] = expires_at
            return live, max(live.values()), 0

        wait = self._update_held(pending.network, update)
        if wait:
            raise TooManyPending(wait)

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
        pending: PendingAuthorization | None = self._items.pop(pending_id)
        if pending is None:
            return

        def update(held: Any) -> tuple[Any, float, None]:
            live = {k: v for k, v in (held or {}).items() if k != pending_id and v > time.time()}
            return (live or None), max(live.values(), default=0.0), None

        self._update_held(pending.network, update)
