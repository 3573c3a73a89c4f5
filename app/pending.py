"""Pending authorization requests: an /authorize request that passed validation,
kept while the person logs in (here or upstream) and consents, in the store's
short-lived state: in memory, or in PostgreSQL when instances share one (login on one
instance, consent on another).

Each is bound to the browser session that started it, so a link to someone else's
pending request is worthless, and expires after OAUTH_AUTH_CODE_TTL.

Anyone can start one without logging in, so what they may hold is bounded three ways:
in bytes (the query, `MAX_QUERY_BYTES`), per address (`MAX_PER_ADDRESS`, an IPv6
client by its /64) and in all (`MAX_ITEMS`, in memory).
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .storage.base import JSONValue, SharedState
from .storage.local import LocalState

#: An /authorize query longer than this is refused (400) before anything is kept: real
#: requests are well under 2 KiB, and each pending one holds its whole query.
MAX_QUERY_BYTES = 8 * 1024
#: Pending authorizations one address (one IPv6 /64) may hold at once.
MAX_PER_ADDRESS = 100
#: `PendingAuthorization.then` of a login the account page started
FOR_ACCOUNT = "account"
#: the short-lived state's kinds: the pending requests, and each address's pending ids
KIND = "pending"
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
        """As stored (`create`); a field this version does not know (one written by a
        newer version, sharing the database during a rolling upgrade) is left out."""
        if stored.keys() <= FIELDS:
            return cls(**stored)
        return cls(**{k: v for k, v in stored.items() if k in FIELDS})


#: the fields of a `PendingAuthorization` (`decode`)
FIELDS = frozenset(f.name for f in dataclasses.fields(PendingAuthorization))


class PendingAuthorizations:
    #: Past this many (in memory), the least recently used are dropped so that a
    #: flood of /authorize requests from many addresses cannot exhaust memory.
    MAX_ITEMS = 10_000

    def __init__(
        self,
        ttl: int,
        max_items: int = MAX_ITEMS,
        state: SharedState | None = None,
        per_address: int = MAX_PER_ADDRESS,
    ):
        self.ttl = ttl
        self.per_address = per_address
        #: the store's short-lived state (a new in-process one when none is given)
        self.state: SharedState = state if state is not None else LocalState()
        self.state.bound(KIND, max_items)
        self.state.bound(ADDRESS_KIND, max_items)

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
        self.state.put(KIND, pending.id, dict(vars(pending)), expires_at)  # (its fields are JSON)
        return pending

    def _hold(self, pending: PendingAuthorization, expires_at: float) -> None:
        now = pending.created_at

        def update(held: JSONValue) -> tuple[JSONValue, float, int]:
            live = {k: v for k, v in (held or {}).items() if v > now}
            if len(live) >= self.per_address:
                wait = max(1, int(min(live.values()) - now + 0.999))
                return (live or None), max(live.values(), default=0.0), wait
            live[pending.id] = expires_at
            return live, max(live.values()), 0

        wait = self.state.update(ADDRESS_KIND, pending.network, update)
        if wait:
            raise TooManyPending(wait)

    def get(self, pending_id: str | None, browser_id: str | None) -> PendingAuthorization | None:
        """The pending request, if it exists, is fresh and belongs to this browser."""
        if not pending_id or not browser_id:
            return None
        stored = self.state.get(KIND, pending_id)  # None once expired
        if stored is None:
            return None
        pending = PendingAuthorization.decode(stored)
        if not secrets.compare_digest(pending.browser_id, browser_id):
            return None
        return pending

    def finish(self, pending_id: str) -> None:
        stored = self.state.pop(KIND, pending_id)
        if stored is None:
            return
        pending = PendingAuthorization.decode(stored)

        def update(held: JSONValue) -> tuple[JSONValue, float, None]:
            live = {k: v for k, v in (held or {}).items() if k != pending_id and v > time.time()}
            return (live or None), max(live.values(), default=0.0), None

        self.state.update(ADDRESS_KIND, pending.network, update)
