"""The person's upstream tokens for the MCP server behind us (OAUTH_UPSTREAM_TOKENS).

The MCP servers put behind an authorization server mostly act for the person somewhere
else (their GitHub, their Google calendar): such a server needs the person's token at
that upstream, the one the upstream login (app/providers/upstream.py) received. Here it
is kept, and handed to the MCP server only: as `X-Auth-Upstream-Token` on the gateway's
requests upstream, and on /verify's answer to the proxy. Never to an MCP client, never
in a log, never at /introspect.

Where it lives on its way:
- at the login's callback, with this browser's login (`received`: short-lived state,
  sealed, bound to the browser id), since no grant exists yet;
- when the person approves and the code is made, with the code (`take_for_code`,
  sealed, bound to the code);
- when the code is redeemed, in `upstream_tokens` under the new grant's id
  (`keep_for_grant`): its own collection, keyed by grant, so every deletion of a grant
  takes it along (app/repositories.py `GrantRepository`), and a grant whose refresh
  token rotates keeps it (same grant id).

Sealed with AES-256-GCM (NIST SP 800-38D), a random 96-bit nonce per seal, and the
associated data naming what it belongs to (`grant:<id>`, `code:<hash>`, `login:<id>`):
a ciphertext moved to another grant does not open. The keys live with the signing keys
(app/keys.py, `use: "enc"`), so backups hold ciphertext and the keys as they already
held the signing keys.

Refreshed at the upstream when it expires within `REFRESH_AHEAD` seconds, under a lock
every instance respects; a refresh that fails means no header (the MCP request is
still served), a metric and an audit event, and no new attempt for `RETRY_AFTER`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .keys import KeyManager
from .observability import UPSTREAM_TOKEN_REFRESHES, audit
from .storage import Store

log = logging.getLogger(__name__)

COLLECTION = "upstream_tokens"
HEADER = "X-Auth-Upstream-Token"
#: short-lived state: a login's token waiting for the consent, refresh locks, failures
LOGIN_KIND = "upstream-token-login"
LOCK_KIND = "upstream-token-lock"
FAILED_KIND = "upstream-token-failed"
#: refreshed when it expires within this many seconds
REFRESH_AHEAD = 60
#: after a failed refresh, no new attempt for this many seconds (each MCP request
#: would otherwise wait for the upstream again)
RETRY_AFTER = 30
#: what an upstream token response holds that is kept (never the ID token)
KEPT = ("access_token", "refresh_token", "token_type", "scope", "expires_at")
#: a header value may hold visible ASCII only (RFC 9110 §5.5): anything else is not sent
HEADER_VALUE = re.compile(r"^[\x21-\x7e]{1,8192}\Z")

#: (the refresh token) -> the upstream's new token response; raises on failure
Refresher = Callable[[str], dict[str, Any]]


class Sealer:
    """AES-256-GCM over the key manager's encryption keys."""

    PREFIX = b"mcp-oauth upstream token\0"

    def __init__(self, keys: KeyManager):
        self.keys = keys

    def _associated_data(self, bound_to: str) -> bytes:
        """What a ciphertext is bound to (NIST SP 800-38D: authenticated, not secret)."""
        return self.PREFIX + bound_to.encode()

    def seal(self, bound_to: str, value: dict[str, Any]) -> dict[str, str]:
        kid, keys = self.keys.encryption_keys()
        nonce = os.urandom(12)
        ciphertext = AESGCM(keys[kid]).encrypt(nonce, json.dumps(value).encode(), self._associated_data(bound_to))
        return {"kid": kid, "sealed": base64.b64encode(nonce + ciphertext).decode()}

    def open(self, bound_to: str, box: Any) -> dict[str, Any] | None:
        """What `seal` sealed for `bound_to`; None when it does not open (another
        binding, an unknown key, a changed byte)."""
        if not isinstance(box, dict):
            return None
        _, keys = self.keys.encryption_keys()
        key = keys.get(box.get("kid"))  # type: ignore[arg-type]
        if key is None:
            return None
        try:
            raw = base64.b64decode(box.get("sealed", ""))
            value = json.loads(AESGCM(key).decrypt(raw[:12], raw[12:], self._associated_data(bound_to)))
        except (InvalidTag, ValueError, TypeError):
            return None
        return value if isinstance(value, dict) else None


def kept_of(response: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """What is kept of an upstream token response (None without an access token): its
    expiry made absolute; a refresh response without a refresh token keeps the old one
    (RFC 6749 §6: the upstream MAY issue a new one)."""
    access = response.get("access_token")
    if not isinstance(access, str) or not access:
        return None
    kept = {k: response[k] for k in KEPT if isinstance(response.get(k), str | int | float)}
    expires_in = response.get("expires_in")
    if isinstance(expires_in, int | float | str) and str(expires_in).isdigit():
        kept["expires_at"] = time.time() + int(expires_in)
    if not kept.get("refresh_token") and previous and previous.get("refresh_token"):
        kept["refresh_token"] = previous["refresh_token"]
    return kept


class UpstreamTokens:
    """Keeps, refreshes and hands out the upstream tokens (see the module's doc)."""

    def __init__(self, store: Store, keys: KeyManager, refresher: Refresher, provider: str, ttl: int):
        self.store = store
        self.shared = store.shared
        self.sealer = Sealer(keys)
        self.refresher = refresher
        self.provider = provider
        #: how long a login's token waits for the consent and the code (the code's TTL)
        self.ttl = ttl

    # -- login -> code -> grant ----------------------------------------------------------

    def received(self, browser: str, response: dict[str, Any]) -> None:
        """The upstream login's token response, kept with this browser's login until
        the person approves (or `ttl` passes)."""
        kept = kept_of(response)
        if kept is None:
            return
        box = self.sealer.seal(f"login:{browser}", kept)
        self.shared.put(LOGIN_KIND, browser, box, time.time() + self.ttl)

    def has_login_token(self, browser: str) -> bool:
        return self.shared.get(LOGIN_KIND, browser) is not None

    def discard_login_token(self, browser: str) -> None:
        self.shared.pop(LOGIN_KIND, browser)

    def take_for_code(self, browser: str, code: str) -> dict[str, str] | None:
        """The login's token, moved to the code being made (it leaves the login: each
        code, so each grant, has a token of its own)."""
        value = self.sealer.open(f"login:{browser}", self.shared.pop(LOGIN_KIND, browser))
        return None if value is None else self.sealer.seal(_code_binding(code), value)

    def keep_for_grant(self, grant_id: str, code: str, box: Any) -> None:
        """The code's token, kept for the grant the code just made."""
        value = self.sealer.open(_code_binding(code), box)
        if value is not None:
            self.store.put(COLLECTION, grant_id, self._record(grant_id, value))

    def _record(self, grant_id: str, value: dict[str, Any]) -> dict[str, Any]:
        return {"grant_id": grant_id, **self.sealer.seal(f"grant:{grant_id}", value), "updated_at": time.time()}

    # -- for the MCP server --------------------------------------------------------------

    def header_for(self, grant_id: Any) -> str | None:
        """The grant's upstream access token for the MCP server, refreshed when it is
        about to expire; None when there is none (or none usable right now)."""
        if not isinstance(grant_id, str) or not grant_id:
            return None
        value = self._open(grant_id, self.store.get(COLLECTION, grant_id))
        if value is None:
            return None
        if _expiring(value):
            value = self._refresh(grant_id)
        access = value.get("access_token") if value else None
        return access if isinstance(access, str) and HEADER_VALUE.match(access) else None

    def _open(self, grant_id: str, record: dict[str, Any] | None) -> dict[str, Any] | None:
        if record is None:
            return None
        value = self.sealer.open(f"grant:{grant_id}", record)
        if value is None:
            log.warning("the upstream token of grant %s does not open; it is not used", grant_id)
        return value

    def _refresh(self, grant_id: str) -> dict[str, Any] | None:
        """Refresh at the upstream, once across instances: the lock's entry is made
        first (a database locks rows, not absent keys), then held while the upstream
        is asked; whoever held it before may have refreshed already."""
        if self.shared.get(FAILED_KIND, grant_id) is not None:
            return None
        self.shared.update(LOCK_KIND, grant_id, lambda held: (held or 1, time.time() + 600, None))
        with self.shared.locked(LOCK_KIND, grant_id):
            value = self._open(grant_id, self.store.get(COLLECTION, grant_id))
            if value is None or not _expiring(value):
                return value
            if self.shared.get(FAILED_KIND, grant_id) is not None:
                return None
            refresh_token = value.get("refresh_token")
            if not isinstance(refresh_token, str) or not refresh_token:
                self._failed(grant_id, "no_refresh_token")
                return None
            try:
                fresh = kept_of(self.refresher(refresh_token), previous=value)
            except Exception as exc:  # noqa: BLE001 - whatever the upstream or the network did
                self._failed(grant_id, _reason(exc))
                return None
            if fresh is None:
                self._failed(grant_id, "no_access_token")
                return None
            record = self._record(grant_id, fresh)
            # `change`, not `put`: a grant deleted meanwhile took its record along,
            # and it must not come back.
            if self.store.change(COLLECTION, grant_id, lambda r: r.update(record) or True) is None:
                return None
        UPSTREAM_TOKEN_REFRESHES.labels("refreshed").inc()
        audit("upstream_token.refreshed", grant_id=grant_id, provider=self.provider)
        return fresh

    def _failed(self, grant_id: str, reason: str) -> None:
        UPSTREAM_TOKEN_REFRESHES.labels("failed").inc()
        audit(
            "upstream_token.refresh_failed", logging.WARNING, grant_id=grant_id, provider=self.provider, reason=reason
        )
        self.shared.put(FAILED_KIND, grant_id, 1, time.time() + RETRY_AFTER)


def _expiring(value: dict[str, Any]) -> bool:
    expires_at = value.get("expires_at")
    return isinstance(expires_at, int | float) and expires_at - time.time() < REFRESH_AHEAD


def _code_binding(code: str) -> str:
    return "code:" + hashlib.sha256(code.encode()).hexdigest()


def _reason(exc: Exception) -> str:
    """Why a refresh failed, for the audit log: the upstream's OAuth error code, or the
    kind of failure (never a message that could quote a token)."""
    error = getattr(exc, "error", None)
    if isinstance(error, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", error):
        return error
    return type(exc).__name__
