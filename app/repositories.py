"""Repositories: clients, grants and users on top of the store's interface (`Store`).

This is where records get their shape and their expiry rules; the protocol code asks
for models and never touches the store's files.
"""

from __future__ import annotations

import functools
import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from werkzeug.security import check_password_hash, generate_password_hash

from . import storage
from .cimd import DocumentError, DocumentFetcher, is_document_url
from .config import Config
from .keys import key_expires_at
from .models import Client, Grant
from .observability import REPLAYS, audit
from .security import hash_secret, new_id, new_secret
from .storage import Store
from .storage.base import ExpiryRule, Record
from .throttle import SlidingWindow

log = logging.getLogger(__name__)

#: Rotated refresh-token hashes kept per grant, to recognise a replay (RFC 9700 §4.14.2).
ROTATED_HASHES_KEPT = 20
#: A grant's refresh-token hashes (hash -> when it was rotated, None while live). A
#: refresh token names its grant (`<grant id>.<secret>`), so it is found by the id.
TOKEN_HASHES = "token_hashes"
#: The same, in grants made before refresh tokens named their grant: their tokens are
#: found by hash (`Store.find`, an index), and the grant keeps this field for life.
SEARCHED_TOKEN_HASHES = "refresh_token_hashes"
#: The hash of the live token a rotated one got when presented again inside its grace
#: window: the next such presentation replaces it instead of adding another, so a grant
#: holds at most two live tokens however often a rotated one comes back.
GRACE_TOKEN_HASH = "grace_token_hash"
#: the thumbprint of the DPoP key a grant's refresh tokens are bound to (RFC 9449 §5)
DPOP_JKT = "dpop_jkt"
#: the collection of the person's upstream tokens, by grant id (app/upstream_tokens.py)
UPSTREAM_TOKENS = "upstream_tokens"
#: last_used_at is written at most this often per client, not on every request.
TOUCH_INTERVAL = 300


def expiry_rules(config: Config) -> dict[str, ExpiryRule]:
    """When a record of each collection expires, from the configured lifetimes."""

    def client_expires(record: Record) -> float | None:
        if record.get("resource_server") is True:
            return None  # made by the operator, deleted by the operator
        last_used = record.get("last_used_at")
        if last_used is None:
            return float(record.get("created_at", time.time())) + config.unused_client_ttl
        return last_used + config.client_idle_ttl if config.client_idle_ttl > 0 else None

    def grant_expires(record: Record) -> float | None:
        return float(record.get("expires_at", 0))

    def signing_key_expires(record: Record) -> float | None:
        return key_expires_at(record, config.access_token_ttl)

    return {"clients": client_expires, "grants": grant_expires, "signing_keys": signing_key_expires}


def new_client_id() -> str:
    return new_id(24)


def new_refresh_token(grant_id: str) -> str:
    """An opaque refresh token (256 random bits) that names its grant, so that it is
    looked up by the grant's key rather than searched for. The grant id is no secret:
    the access tokens carry it too. Ids and secrets hold no `.` (URL-safe base64)."""
    return f"{grant_id}.{new_secret()}"


def grant_named_by(refresh_token: str) -> str | None:
    """The grant id a refresh token names (None for one issued before they did)."""
    grant_id, named, _ = refresh_token.partition(".")
    return grant_id if named and grant_id else None


def _token_hashes_field(record: Record) -> str:
    return SEARCHED_TOKEN_HASHES if SEARCHED_TOKEN_HASHES in record else TOKEN_HASHES


#: what a person sees on the consent page that an approval stands for besides the
#: scope and resource: where the codes go, and the name they were shown
CONSENTED_METADATA = ("redirect_uris", "client_name")


def forget_approvals_if_redirected(record: Record, metadata: dict[str, Any]) -> None:
    """A client whose redirect URIs or name change (RFC 7592 PUT, a changed metadata
    document) loses every approval: each person sees the consent page again before a
    code goes to the new place (the MCP specification: the server MUST show where the
    code goes)."""
    previous = record.get("metadata", {})
    if any(previous.get(name) != metadata.get(name) for name in CONSENTED_METADATA):
        record.pop("approvals", None)


def open_store(config: Config) -> Store:
    """The configured backend (OAUTH_STORE; app/storage chooses it), with this
    configuration's expiry rules, and a connection for each request thread (and two
    to spare) should it be a database."""
    return storage.open_store(config.store, config.data_dir, expiry_rules(config), max_connections=config.threads + 2)


#: seconds the client count the registration cap is checked against may be reused
CLIENT_COUNT_TTL = 1.0
#: what a registration refused by a client cap is told to wait (a client that never
#: completes an authorization expires after OAUTH_UNUSED_CLIENT_TTL, one that does
#: frees room at once)
CAP_RETRY_AFTER = 3600
#: locks that make a network's cap check and its registration's write one step here
NETWORK_LOCKS = 64


class RegistrationRefused(Exception):
    """An open registration refused by a client cap (`reason`: `address_full` or
    `at_capacity`): nothing was stored."""

    def __init__(self, reason: str, description: str):
        super().__init__(description)
        self.reason = reason
        self.description = description
        self.retry_after = CAP_RETRY_AFTER


class ClientRepository:
    def __init__(self, store: Store, config: Config, documents: DocumentFetcher | None = None):
        self.store = store
        self.config = config
        self.documents = documents
        # (when read from the store, clients then + those registered here since)
        self._count: tuple[float, int] | None = None
        self._count_lock = threading.Lock()
        self._network_locks = [threading.Lock() for _ in range(NETWORK_LOCKS)]

    def _wrap(self, record: dict[str, Any] | None) -> Client | None:
        return Client(record, self.config.scopes) if record else None

    def get(self, client_id: str | None) -> Client | None:
        if not client_id or not isinstance(client_id, str):
            return None
        return self._wrap(self.store.get("clients", client_id))

    def resolve(self, client_id: str | None) -> Client | None:
        """A client for the protocol endpoints: a registered one, or one identified by
        its metadata document (fetched, or cached; stored only once it is used). /verify
        asks `get` instead, and never makes a request."""
        client = self.get(client_id)
        if client is not None or self.documents is None or not is_document_url(client_id):
            return client
        assert client_id is not None
        try:
            metadata = self.documents.metadata(client_id)
        except DocumentError as exc:
            log.info("metadata document refused: %s", exc)
            return None
        now = time.time()
        record = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "client_secret_hash": None,
            "registration_access_token_hash": None,
            "created_at": now,
            "last_used_at": None,
            "metadata": metadata,
            "document": True,
        }
        return Client(record, self.config.scopes)

    def refresh_document(self, client_id: str) -> None:
        """At /authorize: fetch the document (or reuse the cached one) and bring a
        stored client's metadata up to date. Raises DocumentError."""
        assert self.documents is not None
        metadata = self.documents.metadata(client_id)

        def change(record: dict[str, Any]) -> None:
            if record.get("document") is True:
                forget_approvals_if_redirected(record, metadata)
                record["metadata"] = metadata

        stored = self.get(client_id)
        if stored is not None and stored.record.get("document") is True and stored.metadata != metadata:
            self.store.change("clients", client_id, change)

    def _change(self, client: Client, change: Callable[[dict[str, Any]], Any]) -> Any:
        """Change a client's stored record; a metadata-document client is stored
        first, on its first real use. What `change` returned (None when the client is
        no longer stored)."""
        if client.record.get("document") is True:
            self.store.add("clients", client.client_id, dict(client.record))
        return self.store.change("clients", client.client_id, change)

    def all(self) -> list[Client]:
        return [Client(r, self.config.scopes) for r in self.store.scan("clients").values()]

    def count(self) -> int:
        """Registered clients, for the registration cap: read from the store at most
        once a second, plus those registered here since. Every registration asks, and
        on PostgreSQL the count reads every client row (1.3 ms of the database's time
        at 10,000); a client deleted or expired elsewhere frees room within a second."""
        now = time.monotonic()
        with self._count_lock:
            if self._count is not None and now - self._count[0] < CLIENT_COUNT_TTL:
                return self._count[1]
        counted = self.store.count("clients")
        with self._count_lock:
            self._count = (now, counted)
        return counted

    def create(
        self,
        metadata: dict[str, Any],
        *,
        resource_server: bool = False,
        counted: tuple[SlidingWindow, str] | None = None,
        registered_from: str | None = None,
    ) -> tuple[Client, str | None, str]:
        """Register a client. Returns it with its client secret (None for a public
        client) and registration access token, the only time both exist in clear.
        `counted`: the registration is an event of this window's key, stored with it
        or refused by it (LimitReached, nothing stored). `registered_from`: an open
        registration from this network (`app.forwarded.network_key`), which the
        client caps apply to (`_make_room`; RegistrationRefused, nothing stored)."""
        client_id = new_client_id()
        client_secret = None if metadata.get("token_endpoint_auth_method") == "none" else new_secret()
        registration_token = new_secret()
        now = time.time()
        record = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "client_secret_hash": hash_secret(client_secret) if client_secret else None,
            "registration_access_token_hash": hash_secret(registration_token),
            "created_at": now,
            "last_used_at": None,
            "metadata": metadata,
        }
        if resource_server:
            record["resource_server"] = True
        if registered_from is None:
            self._store(client_id, record, counted)
        else:
            # the network key, not the address: all the cap needs, and less about a person
            record["registered_from"] = registered_from
            with self._network_locks[hash(registered_from) % NETWORK_LOCKS]:
                self._make_room(registered_from)
                self._store(client_id, record, counted)
        return Client(record, self.config.scopes), client_secret, registration_token

    def _make_room(self, network: str) -> None:
        """The caps of an open registration. One network holds at most
        OAUTH_MAX_CLIENTS_PER_ADDRESS clients that never completed an authorization;
        at OAUTH_MAX_CLIENTS, the client registered first among those that never did is
        evicted (never one that did); with none, RegistrationRefused. The network's
        check and write are one step in this process (a lock per network): instances
        at once may pass a network's cap by one each."""
        per_network = self.config.max_clients_per_address
        if per_network and self.store.unused_clients_from(network) >= per_network:
            raise RegistrationRefused(
                "address_full",
                "This address has registered as many clients as it may that never completed an "
                "authorization; complete one with a client already registered, or try again later.",
            )
        if self.config.max_clients and self.count() >= self.config.max_clients:
            evicted = self.store.evict_oldest_unused_client()
            if evicted is None:
                raise RegistrationRefused(
                    "at_capacity", "This server has as many clients as it accepts; try again later."
                )
            with self._count_lock:
                if self._count is not None:
                    self._count = (self._count[0], self._count[1] - 1)
            audit(
                "client.evicted",
                client_id=evicted.get("client_id"),
                client_name=str(evicted.get("metadata", {}).get("client_name", ""))[:200] or None,
                reason="at_capacity",
            )

    def _store(self, client_id: str, record: dict[str, Any], counted: tuple[SlidingWindow, str] | None) -> None:
        if counted is None:
            self.store.put("clients", client_id, record)
        else:
            window, key = counted
            window.put_counted(key, self.store, "clients", client_id, record)
        with self._count_lock:
            if self._count is not None:
                self._count = (self._count[0], self._count[1] + 1)

    def update_metadata(self, client_id: str, metadata: dict[str, Any]) -> Client | None:
        def change(record: dict[str, Any]) -> dict[str, Any]:
            if metadata.get("token_endpoint_auth_method") == "none":
                record["client_secret_hash"] = None
            forget_approvals_if_redirected(record, metadata)
            record["metadata"] = metadata
            return record

        return self._wrap(self.store.change("clients", client_id, change))

    def touch(self, client: Client) -> bool:
        """Record use (for the idle expiry), at most every TOUCH_INTERVAL seconds; False
        when the client is no longer stored (deleted, or evicted while unused)."""
        last = client.record.get("last_used_at")
        now = time.time()
        if last is not None and now - last < TOUCH_INTERVAL:
            return True

        def used(record: dict[str, Any]) -> bool:
            record["last_used_at"] = now
            record.pop("registered_from", None)  # counted only while unused: kept no longer
            return True

        return bool(self._change(client, used))

    def remember_approval(
        self, client: Client, subject: str, scope: str, resource: list[str], redirect_uri: str
    ) -> None:
        """Remember that this person approved this client for this scope and resource,
        with its codes sent to this redirect URI (kept with the client, so it goes when
        the client goes). A second approval for the same redirect URI widens the first;
        one for another redirect URI replaces it."""
        registered = client.registered_redirect_uri(redirect_uri)

        def change(record: dict[str, Any]) -> None:
            approvals = record.setdefault("approvals", {})
            previous = approvals.get(subject, {})
            if previous.get("redirect_uri") != registered:
                previous = {}
            approvals[subject] = {
                "scope": " ".join(sorted(set(previous.get("scope", "").split()) | set(scope.split()))),
                "resource": sorted(set(previous.get("resource", [])) | set(resource)),
                "redirect_uri": registered,
                "approved_at": time.time(),
            }

        self._change(client, change)

    @staticmethod
    def approved(client: Client, subject: str, scope: str, resource: list[str], redirect_uri: str) -> bool:
        """Whether this person already approved this client for this scope and resource,
        with its codes sent to this redirect URI. The URI is compared as the client
        registered it, so a loopback redirect on another port (RFC 8252 §7.3) is the
        same one; an approval without one (from before they were bound) is none."""
        approval = client.record.get("approvals", {}).get(subject)
        if not approval or approval.get("redirect_uri") is None:
            return False
        if approval["redirect_uri"] != client.registered_redirect_uri(redirect_uri):
            return False
        return set(scope.split()) <= set(approval["scope"].split()) and set(resource) <= set(approval["resource"])

    def approvals_of(self, subject: str) -> dict[str, tuple[Client, dict[str, Any]]]:
        """This person's approvals, by client id: the client and what was approved
        (the account page; a read of every client, as rare as a person opening it)."""
        found: dict[str, tuple[Client, dict[str, Any]]] = {}
        for client_id, record in self.store.scan("clients").items():
            approval = record.get("approvals", {}).get(subject)
            if isinstance(approval, dict):
                found[client_id] = (Client(record, self.config.scopes), approval)
        return found

    def forget_approval(self, client_id: str, subject: str) -> bool:
        """Remove this person's approval of this client (theirs only); whether there
        was one. A client not stored is not stored by this (unlike `_change`)."""

        def change(record: dict[str, Any]) -> bool:
            return record.get("approvals", {}).pop(subject, None) is not None

        return self.store.change("clients", client_id, change) is True

    def forget_approvals_of(self, subject: str) -> int:
        """Remove this person's approvals from every client (a deleted user: someone
        given the same name later must be asked again); how many went."""
        removed = 0
        for client_id, record in self.store.scan("clients").items():
            if subject in record.get("approvals", {}) and self.store.change(
                "clients", client_id, lambda r: r.get("approvals", {}).pop(subject, None)
            ):
                removed += 1
        return removed

    def delete(self, client_id: str) -> tuple[dict[str, Any] | None, int]:
        """Delete a client and every grant of it. Returns (record, grants removed)."""
        record = self.store.delete("clients", client_id)
        removed = GrantRepository(self.store, self.config).delete_for_client(client_id)
        return record, removed


class GrantRepository:
    def __init__(self, store: Store, config: Config):
        self.store = store
        self.config = config

    def get(self, grant_id: str) -> Grant | None:
        record = self.store.get("grants", grant_id)
        return Grant(record) if record else None

    def exists(self, grant_id: str | None) -> bool:
        if not grant_id:
            return False
        return self.store.get("grants", grant_id) is not None

    def all(self) -> list[Grant]:
        return [Grant(r) for r in self.store.scan("grants").values()]

    def create(
        self,
        grant_id: str,
        client_id: str,
        subject: str,
        scope: str,
        resource: list[str],
        refresh_token: str | None,
        provider: str,
        expires_in: int | None = None,
        dpop_jkt: str | None = None,
    ) -> Grant:
        """A new grant, for the refresh token's lifetime (or `expires_in` seconds: a
        grant with no refresh token lives as long as its access token); `dpop_jkt`: its
        refresh tokens are bound to that DPoP key (RFC 9449 §5, app/oauth2/rfc9449.py)."""
        now = time.time()
        record = {
            "grant_id": grant_id,
            "client_id": client_id,
            "subject": subject,
            "provider": provider,
            "scope": scope,
            "resource": resource,
            "issued_at": now,
            "refreshed_at": None,
            "expires_at": now + (self.config.refresh_token_ttl if expires_in is None else expires_in),
            TOKEN_HASHES: {hash_secret(refresh_token): None} if refresh_token else {},
        }
        if dpop_jkt:
            record[DPOP_JKT] = dpop_jkt
        self.store.put("grants", grant_id, record)
        return Grant(record)

    def _lookup(self, refresh_token: str, token_hash: str) -> Record | None:
        """The grant that holds a refresh token's hash (live or rotated)."""
        grant_id = grant_named_by(refresh_token)
        if grant_id is None:  # issued before tokens named their grant
            return self.store.find("grants", SEARCHED_TOKEN_HASHES, token_hash)
        record = self.store.get("grants", grant_id)
        # The id is public (it is in every access token): the hash is the proof.
        if record is None or token_hash not in record.get(_token_hashes_field(record), {}):
            return None
        return record

    def present_refresh_token(self, refresh_token: str) -> Grant | None:
        """A client presents a refresh token (at /token, /revoke or /introspect): the
        grant it belongs to, if it may still be used.

        Presenting is an act, not a lookup: a token rotated more than
        OAUTH_REFRESH_GRACE seconds ago is a replay, so the whole grant is revoked
        here (RFC 9700 §4.14.2) and None returned. `peek_refresh_token` only looks.
        The token is hashed and looked up once, replay or not."""
        token_hash = hash_secret(refresh_token)
        found = self._lookup(refresh_token, token_hash)
        grant = self._usable(found, token_hash)
        if grant is not None or found is None:
            return grant
        # The grant holds the token, rotated more than the grace window ago: a replay.
        grant_id = found["grant_id"]
        revoked = self.store.delete("grants", grant_id) if grant_id else None
        self._forget_upstream_tokens([grant_id])
        if revoked is not None:
            REPLAYS.labels("refresh_token").inc()
            audit(
                "replay.detected",
                logging.WARNING,
                credential="refresh_token",
                client_id=revoked.get("client_id"),
                subject=revoked.get("subject"),
                grant_id=grant_id,
                grant_revoked=True,
            )
        return None

    def peek_refresh_token(self, refresh_token: str) -> Grant | None:
        """The grant of a refresh token that may still be used, without side effects."""
        token_hash = hash_secret(refresh_token)
        return self._usable(self._lookup(refresh_token, token_hash), token_hash)

    def _usable(self, record: Record | None, token_hash: str) -> Grant | None:
        """The grant, if the token of this hash it holds may still be used: live, or
        rotated within OAUTH_REFRESH_GRACE."""
        if record is None:
            return None
        hashes = record.get(_token_hashes_field(record), {})
        if token_hash not in hashes:  # not a token of this grant
            return None
        rotated_at = hashes[token_hash]
        if rotated_at is not None and time.time() - rotated_at > self.config.refresh_grace:
            return None
        return Grant(record, token_hash)

    def rotate(self, grant: Grant, new_refresh_token: str, dpop_jkt: str | None = None) -> bool:
        """Replace the presented token by a new one, atomically. False when, under the
        lock, the presented token turned out no longer usable (a concurrent replay),
        or the grant's DPoP key is not `dpop_jkt` (bound meanwhile). An unbound grant
        is bound to `dpop_jkt` from now on (RFC 9449 §5)."""
        presented = grant.presented_hash
        now = time.time()
        if presented is None:
            return False

        def change(record: dict[str, Any]) -> str:
            hashes: dict[str, float | None] = record.setdefault(_token_hashes_field(record), {})
            if presented not in hashes:
                return "gone"
            if record.get(DPOP_JKT, dpop_jkt) != dpop_jkt:
                return "gone"
            if dpop_jkt:
                record[DPOP_JKT] = dpop_jkt
            rotated_at = hashes[presented]
            if rotated_at is not None and now - rotated_at > self.config.refresh_grace:
                return "replay"
            new_hash = hash_secret(new_refresh_token)
            if rotated_at is None:
                # A live token was used: it and any live sibling retire now. Each stays
                # usable for the grace window (concurrent refreshes, lost responses),
                # then is a replay.
                for h, at in hashes.items():
                    if at is None:
                        hashes[h] = now
                record.pop(GRACE_TOKEN_HASH, None)
            else:
                # A retired token inside its grace window (the second of two concurrent
                # refreshes, a retried request): one more live token. The successor the
                # first presentation got stays live, since the client keeps whichever
                # response it stored last; the one a previous such presentation got is
                # replaced, not joined, so that presenting a rotated token again and
                # again never grows the grant (at most two live tokens).
                previous = record.get(GRACE_TOKEN_HASH)
                if previous in hashes and hashes[previous] is None:
                    del hashes[previous]
                record[GRACE_TOKEN_HASH] = new_hash
            hashes[new_hash] = None
            rotated = sorted((h for h, at in hashes.items() if at is not None), key=lambda h: hashes[h] or 0.0)
            for h in rotated[:-ROTATED_HASHES_KEPT]:
                del hashes[h]
            record["refreshed_at"] = now
            record["expires_at"] = now + self.config.refresh_token_ttl
            return "rotated"

        outcome = self.store.change("grants", grant.grant_id, change)
        if outcome == "replay":  # past its grace window while we waited for the lock
            self.revoke(grant.grant_id)
        return outcome == "rotated"

    def revoke(self, grant_id: str | None) -> bool:
        if not grant_id:
            return False
        revoked = self.store.delete("grants", grant_id) is not None
        self._forget_upstream_tokens([grant_id])
        return revoked

    def delete_for_client(self, client_id: str, dry_run: bool = False) -> int:
        """The grants of a client deleted (with `dry_run`: counted)."""
        return self._delete_where(lambda record: record.get("client_id") == client_id, dry_run)

    def delete_for_subject(self, provider: str, subject: str, dry_run: bool = False) -> int:
        """The grants of a person deleted (with `dry_run`: counted)."""
        return self._delete_where(
            lambda record: record.get("subject") == subject and record.get("provider") == provider, dry_run
        )

    def of_person(self, provider: str, subject: str) -> list[Grant]:
        """This person's grants (the account page)."""
        return [
            Grant(record)
            for record in self.store.scan("grants").values()
            if record.get("subject") == subject and record.get("provider") == provider
        ]

    def delete_of_person(self, provider: str, subject: str, client_id: str) -> int:
        """This person's grants of this client deleted (theirs only: the client's other
        people keep theirs); how many. With a grant go its refresh tokens and, since
        every access token names its grant, its access tokens (`AccessTokenVerifier`)."""
        mine = [grant.grant_id for grant in self.of_person(provider, subject) if grant.client_id == client_id]
        return sum(1 for grant_id in mine if self.revoke(grant_id))

    def _delete_where(self, doomed: Callable[[Record], bool], dry_run: bool) -> int:
        if dry_run:
            return sum(1 for record in self.store.scan("grants").values() if doomed(record))
        deleted = self.store.delete_where("grants", doomed)
        self._forget_upstream_tokens([record["grant_id"] for record in deleted])
        return len(deleted)

    def _forget_upstream_tokens(self, grant_ids: list[str]) -> None:
        """A deleted grant takes the person's upstream token along (app/upstream_tokens.py):
        every deletion of grants here calls this (the operator's bulk ones in app/admin.py
        clear the collection themselves)."""
        grant_ids = [grant_id for grant_id in grant_ids if grant_id]
        if len(grant_ids) == 1:
            self.store.delete(UPSTREAM_TOKENS, grant_ids[0])
        elif grant_ids:
            doomed = set(grant_ids)
            self.store.delete_where(UPSTREAM_TOKENS, lambda record: record.get("grant_id") in doomed)


class UserRepository:
    """Local users of the Custom provider (users.json), passwords as scrypt hashes."""

    def __init__(self, store: Store):
        self.store = store

    def get(self, name: str) -> dict[str, Any] | None:
        return self.store.get("users", name) if name else None

    def all(self) -> list[dict[str, Any]]:
        return sorted(self.store.scan("users").values(), key=lambda u: u["username"])

    def set_password(self, name: str, password: str, *, create: bool) -> bool:
        """Create or update a user. Returns False if `create` and the user exists,
        or if not `create` and it does not."""
        password_hash = generate_password_hash(password, method="scrypt")

        now = time.time()
        if create:
            record = {"username": name, "created_at": now, "password_hash": password_hash, "password_changed_at": now}
            return self.store.add("users", name, record)

        def change(record: dict[str, Any]) -> bool:
            record["password_hash"] = password_hash
            record["password_changed_at"] = now
            return True

        return self.store.change("users", name, change) is True

    def delete(self, name: str) -> bool:
        return self.store.delete("users", name) is not None

    def authenticate(self, name: str, password: str) -> bool:
        record = self.get(name)
        if record is None:
            # Spend the same time as a real check so the response does not reveal
            # which user names exist.
            check_password_hash(_dummy_hash(), password)
            return False
        return check_password_hash(record["password_hash"], password)


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(8), method="scrypt")
