"""Signing keys (signing_keys.json): the current RS256 key, the previous ones until the
tokens they signed have expired, and the secret that signs the login session cookie.

Keys are created on first use and rotated by `flask oauth rotate-keys`. A retired key
keeps verifying for one access-token lifetime, then the store's expiry rule drops it.

With OAUTH_UPSTREAM_TOKENS the file also holds the AES-256 keys that seal the person's
upstream tokens (records of `use: "enc"`, app/upstream_tokens.py): the newest seals,
every one still opens what it sealed (they never expire), and `rotate-keys` adds a new
one once there is any.
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any

from joserfc.jwk import KeySet, RSAKey

from .storage import Store

ALGORITHM = "RS256"
SESSION_ENTRY = "session"
#: the `use` of an upstream-token encryption key's record
ENCRYPTION = "enc"
ENCRYPTION_KEY_BYTES = 32


def key_expires_at(record: dict[str, Any], access_token_ttl: int) -> float | None:
    """A retired key verifies until the last token it signed has expired."""
    retired_at = record.get("retired_at")
    return None if retired_at is None else retired_at + access_token_ttl


class KeyManager:
    def __init__(self, store: Store):
        self.store = store
        self._reloaded_at = 0.0
        self._cached_from: object = None
        self._current: RSAKey | None = None
        self._verifiers: KeySet | None = None
        self._session_secret: str | None = None
        self._session_from: object = None
        #: (the revision read at, the current encryption key's kid, every one by kid)
        self._encryption: tuple[object, str, dict[str, bytes]] | None = None

    def ensure(self) -> None:
        """Create the signing key and the session secret if the file has none."""
        if self._find_current(self.store.scan("signing_keys")) and self.store.get("signing_keys", SESSION_ENTRY):
            return

        if not self._find_current(self.store.scan("signing_keys")):
            record = _new_key_record()
            self.store.add("signing_keys", record["kid"], record)
            self._retire_older_keys()  # two processes may have raced here
        self.store.add("signing_keys", SESSION_ENTRY, _new_session_record())

    def rotate(self) -> str:
        """Make a new current key; the old one only verifies from now on. Returns the new kid."""
        new = _new_key_record()
        self.store.put("signing_keys", new["kid"], new)
        self._retire_older_keys()
        if any(r.get("use") == ENCRYPTION for r in self.store.scan("signing_keys").values()):
            # new upstream tokens are sealed with a new key; the old ones still open
            self.new_encryption_key()
        return new["kid"]

    # -- the keys that seal upstream tokens ----------------------------------------------

    def new_encryption_key(self) -> str:
        """A new current encryption key; the kid."""
        record = _new_encryption_record()
        self.store.put("signing_keys", record["kid"], record)
        return record["kid"]

    def encryption_keys(self) -> tuple[str, dict[str, bytes]]:
        """(the kid of the key that seals, every key that opens by kid), made on first
        use; read again only when the keys changed, in any process."""
        revision = self.store.revision("signing_keys")
        cached = self._encryption
        if cached is not None and cached[0] == revision:
            return cached[1], cached[2]
        records = [r for r in self.store.scan("signing_keys").values() if r.get("use") == ENCRYPTION]
        if not records:
            record = _new_encryption_record()
            self.store.add("signing_keys", record["kid"], record)
            revision = self.store.revision("signing_keys")
            records = [r for r in self.store.scan("signing_keys").values() if r.get("use") == ENCRYPTION]
        current = max(records, key=lambda r: (r["created_at"], r["kid"]))
        keys = {r["kid"]: base64.urlsafe_b64decode(r["key"]) for r in records}
        self._encryption = (revision, current["kid"], keys)
        return current["kid"], keys

    def _retire_older_keys(self) -> None:
        """Every live key but the newest only verifies from now on."""
        now = time.time()
        keys = self.store.scan("signing_keys")
        current = self._find_current(keys)
        for record in keys.values():
            if record.get("use") == "sig" and record.get("retired_at") is None and record is not current:
                self.store.change("signing_keys", record["kid"], lambda r: r.__setitem__("retired_at", now))

    @staticmethod
    def _find_current(items: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
        live = [r for r in items.values() if r.get("use") == "sig" and r.get("retired_at") is None]
        return max(live, key=lambda r: r["created_at"]) if live else None

    def revision(self) -> object:
        """Changes whenever a key is added, retired or dropped (in any process)."""
        return self.store.revision("signing_keys")

    def _refresh(self) -> None:
        revision = self.store.revision("signing_keys")
        if revision == self._cached_from:
            return
        current = self._find_current(self.store.scan("signing_keys"))
        if current is None:
            self.ensure()
            revision = self.store.revision("signing_keys")
            current = self._find_current(self.store.scan("signing_keys"))
        assert current is not None
        self._current = RSAKey.import_key(current["jwk"])
        live = self.store.scan("signing_keys")
        self._verifiers = KeySet([RSAKey.import_key(r["jwk"]) for r in live.values() if r.get("use") == "sig"])
        self._cached_from = revision

    @property
    def current(self) -> RSAKey:
        self._refresh()
        assert self._current is not None
        return self._current

    @property
    def verifiers(self) -> KeySet:
        """Every key that may still have signed a valid token."""
        self._refresh()
        assert self._verifiers is not None
        return self._verifiers

    def reload_for(self, kid: object) -> bool:
        """Read the keys again when a token names a key id we do not hold, in case
        another instance just made it (a store may report a revision a moment
        late); at most once a second, so forged key ids cost nothing. True when
        the key is now known."""
        if not isinstance(kid, str) or any(key.kid == kid for key in self.verifiers.keys):
            return False
        now = time.monotonic()
        if now - self._reloaded_at < 1.0:
            return False
        self._reloaded_at = now
        self._cached_from = None
        return any(key.kid == kid for key in self.verifiers.keys)

    def public_jwks(self) -> dict[str, Any]:
        return dict(self.verifiers.as_dict(private=False))

    def session_secret(self) -> str:
        """The secret that signs login-session cookies (and so their CSRF tokens); read
        again only when the keys changed, in any process (`rotate_session_secret`)."""
        revision = self.store.revision("signing_keys")
        if self._session_secret is None or self._session_from != revision:
            self.ensure()
            record = self.store.get("signing_keys", SESSION_ENTRY)
            assert record is not None
            self._session_secret, self._session_from = record["secret"], self.store.revision("signing_keys")
        return self._session_secret

    def rotate_session_secret(self) -> None:
        """A new session secret: every login session ends (each person signs in again);
        tokens, signed with the signing keys, are unaffected."""
        self.ensure()
        self.store.put("signing_keys", SESSION_ENTRY, _new_session_record())

    def summary(self) -> list[dict[str, Any]]:
        return [
            {"kid": r["kid"], "created_at": r["created_at"], "retired_at": r.get("retired_at")}
            for r in self.store.scan("signing_keys").values()
            if r.get("use") == "sig"
        ]


def _new_encryption_record() -> dict[str, Any]:
    return {
        "kid": "enc-" + secrets.token_urlsafe(12),
        "use": ENCRYPTION,
        "key": base64.urlsafe_b64encode(secrets.token_bytes(ENCRYPTION_KEY_BYTES)).decode(),
        "created_at": time.time(),
    }


def _new_session_record() -> dict[str, Any]:
    return {"kid": SESSION_ENTRY, "use": "session", "secret": secrets.token_hex(32)}


def _new_key_record() -> dict[str, Any]:
    kid = secrets.token_urlsafe(12)
    key = RSAKey.generate_key(2048, parameters={"kid": kid, "use": "sig", "alg": ALGORITHM}, private=True)
    return {
        "kid": kid,
        "use": "sig",
        "jwk": key.as_dict(private=True),
        "created_at": time.time(),
        "retired_at": None,
    }
