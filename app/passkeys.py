"""Passkeys (WebAuthn Level 2) for the Custom provider's local users, with py_webauthn.

A person adds a passkey on /account (the registration ceremony) and signs in with it
alone on /login (the authentication ceremony). What the server holds:

- A ceremony's challenge, in the store's shared state (`store.shared`, so that the
  options from one instance are accepted by another on PostgreSQL): random, bound to
  the browser session that asked for it and to its purpose, single use (taken out
  before the answer is checked, whatever the check says) and expiring after
  `CHALLENGE_TTL` seconds.
- The credentials, on the user's record in users.json (`passkeys`: credential id ->
  public key, sign count, transports, user handle, created, last used): a credential is
  found by its id (`Store.find`), and removed with the user.

Every ceremony requires user verification (WebAuthn §7.1 step 17, §7.2 step 17: a PIN
or biometric, so a stolen authenticator alone is not enough); passkeys are discoverable
credentials (resident keys), so a sign-in starts with no user name; the RP ID is the
issuer's host and the origin the issuer's (a passkey made for this server is never
offered to a lookalike site: the phishing resistance passwords lack). A sign count that
does not increase, when either side is non-zero, is refused (§7.2 step 21: a cloned
authenticator); synced passkeys always report 0 and are not counted.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import base64url_to_bytes, bytes_to_base64url, parse_client_data_json
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from .config import Config
from .repositories import UserRepository

#: the shared state's kind for ceremony challenges (key: the challenge, base64url)
CHALLENGE_KIND = "passkey-challenge"
#: seconds a challenge may be answered in (the browser's own timeout is shorter)
CHALLENGE_TTL = 300
#: what the browser is asked to wait for the person, in milliseconds
CEREMONY_TIMEOUT_MS = 120_000
#: passkeys one user may hold (each is a few hundred bytes of the user's record)
MAX_PASSKEYS = 20
#: a challenge is 32 random bytes (43 base64url characters); anything longer is no challenge of ours
MAX_CHALLENGE_CHARS = 64
#: a credential id (WebAuthn §5.8.3: at most 1023 bytes), base64url
MAX_CREDENTIAL_ID_CHARS = 1400
REGISTER = "register"
LOGIN = "login"
TRANSPORTS = frozenset(t.value for t in AuthenticatorTransport)


class PasskeyError(Exception):
    """A ceremony refused; the message is what the person is told (one line)."""


@dataclass(frozen=True)
class SignedIn:
    """A verified passkey sign-in: who, and with which credential."""

    username: str
    credential_id: str


def credential_id_of(credential: Any) -> str:
    """The credential id a ceremony's answer names (base64url), or "" when it names none."""
    if not isinstance(credential, Mapping):
        return ""
    value = credential.get("id")
    return value if isinstance(value, str) and 0 < len(value) <= MAX_CREDENTIAL_ID_CHARS else ""


class Passkeys:
    """The two ceremonies and the credentials they make, for the users of `users`."""

    def __init__(self, config: Config, users: UserRepository):
        issuer = urlsplit(config.issuer)
        #: WebAuthn §5.1.2: the RP ID is the issuer's host; the origin is the issuer's
        self.rp_id = issuer.hostname or "localhost"
        self.origin = f"{issuer.scheme}://{issuer.netloc}"
        self.users = users
        self.shared = users.store.shared

    # -- the credentials ----------------------------------------------------------------

    def of(self, username: str) -> list[dict[str, Any]]:
        """This user's passkeys for a page: id, created_at, last_used_at, transports;
        the newest first."""
        record = self.users.get(username) or {}
        rows = [
            {
                "id": credential_id,
                "created_at": passkey.get("created_at"),
                "last_used_at": passkey.get("last_used_at"),
                "transports": passkey.get("transports", []),
            }
            for credential_id, passkey in (record.get("passkeys") or {}).items()
        ]
        return sorted(rows, key=lambda row: row["created_at"] or 0, reverse=True)

    def has_passkey(self, username: str) -> bool:
        record = self.users.get(username)
        return bool(record and record.get("passkeys"))

    def owner_of(self, credential_id: str) -> dict[str, Any] | None:
        """The user record holding this credential (an index on the ids), or None."""
        if not credential_id:
            return None
        return self.users.store.find("users", "passkeys", credential_id)

    def remove(self, username: str, credential_id: str) -> bool:
        """Remove one of this user's passkeys (only theirs); whether one went."""

        def drop(record: dict[str, Any]) -> bool:
            passkeys = dict(record.get("passkeys") or {})
            if passkeys.pop(credential_id, None) is None:
                return False
            record["passkeys"] = passkeys
            return True

        return self.users.store.change("users", username, drop) is True

    def reset(self, username: str, dry_run: bool = False) -> int | None:
        """Remove all of a user's passkeys (the operator's `reset-passkeys`); how many,
        or None when there is no such user."""
        record = self.users.get(username)
        if record is None:
            return None
        if dry_run:
            return len(record.get("passkeys") or {})

        def clear(record: dict[str, Any]) -> int:
            count = len(record.get("passkeys") or {})
            record.pop("passkeys", None)
            return count

        return self.users.store.change("users", username, clear)

    # -- the challenges -----------------------------------------------------------------

    def _issue(self, purpose: str, browser: str, **bound: str) -> bytes:
        challenge = secrets.token_bytes(32)
        entry = {"purpose": purpose, "browser": browser, **bound}
        self.shared.put(CHALLENGE_KIND, bytes_to_base64url(challenge), entry, time.time() + CHALLENGE_TTL)
        return challenge

    def _redeem(self, purpose: str, browser: str, credential: Mapping[str, Any]) -> tuple[bytes, dict[str, Any]]:
        """The challenge this answer signed, taken out of the shared state (single use:
        it is gone whatever happens next), and what it was bound to. Refused unless it
        was issued for this purpose to this browser session, and is still live."""
        try:
            response = credential.get("response")
            client_data = parse_client_data_json(base64url_to_bytes(response["clientDataJSON"]))  # type: ignore[index]
        except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
            raise PasskeyError("The passkey's answer is malformed.") from exc
        key = bytes_to_base64url(client_data.challenge)
        entry = self.shared.pop(CHALLENGE_KIND, key) if len(key) <= MAX_CHALLENGE_CHARS else None
        if (
            not isinstance(entry, dict)
            or entry.get("purpose") != purpose
            or not hmac.compare_digest(str(entry.get("browser", "")).encode(), browser.encode())
        ):
            raise PasskeyError("This passkey request expired or was already used. Try again.")
        return client_data.challenge, entry

    # -- registration (WebAuthn §7.1) ---------------------------------------------------

    def registration_options(self, username: str, browser: str) -> str:
        """The options for `navigator.credentials.create()` (JSON), for a logged-in user."""
        record = self.users.get(username) or {}
        passkeys = record.get("passkeys") or {}
        if len(passkeys) >= MAX_PASSKEYS:
            raise PasskeyError(f"You have {MAX_PASSKEYS} passkeys already: remove one first.")
        # The user handle (§14.6.1: random, no personal data), one per user: the one
        # their passkeys carry, or a new one for the first.
        handles = [p["user_handle"] for p in passkeys.values() if p.get("user_handle")]
        handle = handles[0] if handles else bytes_to_base64url(secrets.token_bytes(16))
        challenge = self._issue(REGISTER, browser, subject=username, user_handle=handle)
        options = generate_registration_options(
            rp_id=self.rp_id,
            rp_name=self.rp_id,
            user_name=username,
            user_id=base64url_to_bytes(handle),
            user_display_name=username,
            challenge=challenge,
            timeout=CEREMONY_TIMEOUT_MS,
            attestation=AttestationConveyancePreference.NONE,
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.REQUIRED,
                require_resident_key=True,
                user_verification=UserVerificationRequirement.REQUIRED,
            ),
            exclude_credentials=[PublicKeyCredentialDescriptor(id=base64url_to_bytes(c)) for c in passkeys],
        )
        return options_to_json(options)

    def register(self, username: str, browser: str, credential: Any) -> str:
        """Verify the answer of `navigator.credentials.create()` and keep the passkey
        on the user's record; its credential id."""
        if not isinstance(credential, Mapping):
            raise PasskeyError("The passkey's answer is malformed.")
        challenge, entry = self._redeem(REGISTER, browser, credential)
        if entry.get("subject") != username:
            raise PasskeyError("This passkey request expired or was already used. Try again.")
        try:
            verified = verify_registration_response(
                credential=dict(credential),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                require_user_verification=True,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
            raise PasskeyError("The passkey could not be verified.") from exc
        credential_id = bytes_to_base64url(verified.credential_id)
        if len(credential_id) > MAX_CREDENTIAL_ID_CHARS or self.owner_of(credential_id) is not None:
            raise PasskeyError("This passkey is registered already.")
        response = credential.get("response")
        transports = response.get("transports") if isinstance(response, Mapping) else None
        passkey = {
            "public_key": bytes_to_base64url(verified.credential_public_key),
            "sign_count": verified.sign_count,
            "transports": sorted({t for t in transports or [] if t in TRANSPORTS}),
            "user_handle": entry["user_handle"],
            "created_at": time.time(),
            "last_used_at": None,
        }

        def add(record: dict[str, Any]) -> bool:
            passkeys = dict(record.get("passkeys") or {})
            if len(passkeys) >= MAX_PASSKEYS:
                return False
            passkeys[credential_id] = passkey
            record["passkeys"] = passkeys
            return True

        if self.users.store.change("users", username, add) is not True:
            raise PasskeyError("The passkey could not be added to your account.")
        return credential_id

    # -- authentication (WebAuthn §7.2) -------------------------------------------------

    def authentication_options(self, browser: str) -> str:
        """The options for `navigator.credentials.get()` (JSON): no allowed credentials
        (a discoverable credential names its user), user verification required."""
        options = generate_authentication_options(
            rp_id=self.rp_id,
            challenge=self._issue(LOGIN, browser),
            timeout=CEREMONY_TIMEOUT_MS,
            user_verification=UserVerificationRequirement.REQUIRED,
        )
        return options_to_json(options)

    def authenticate(self, browser: str, credential: Any, owner: dict[str, Any] | None) -> SignedIn:
        """Verify the answer of `navigator.credentials.get()` against the credential of
        `owner` (`owner_of` its id) and record its use."""
        if not isinstance(credential, Mapping):
            raise PasskeyError("The passkey's answer is malformed.")
        challenge, _ = self._redeem(LOGIN, browser, credential)
        credential_id = credential_id_of(credential)
        passkey = (owner or {}).get("passkeys", {}).get(credential_id)
        if owner is None or passkey is None:
            raise PasskeyError("This passkey is not registered here.")
        # §7.2 step 6: the user handle the authenticator returned is the credential's owner's.
        response = credential.get("response")
        handle = response.get("userHandle") if isinstance(response, Mapping) else None
        if not isinstance(handle, str) or not hmac.compare_digest(handle.encode(), passkey["user_handle"].encode()):
            raise PasskeyError("This passkey is not registered here.")
        try:
            verified = verify_authentication_response(
                credential=dict(credential),
                expected_challenge=challenge,
                expected_rp_id=self.rp_id,
                expected_origin=self.origin,
                credential_public_key=base64url_to_bytes(passkey["public_key"]),
                # The sign count is checked below, in the write itself: the library's
                # check would read it before, and two sign-ins racing at two instances
                # with one count would both pass.
                credential_current_sign_count=0,
                require_user_verification=True,
            )
        except (WebAuthnException, KeyError, TypeError, ValueError) as exc:
            raise PasskeyError("The passkey could not be verified.") from exc
        new_count = verified.new_sign_count
        now = time.time()

        def used(record: dict[str, Any]) -> bool:
            current = (record.get("passkeys") or {}).get(credential_id)
            if current is None:
                return False
            known = int(current.get("sign_count", 0))
            if not sign_count_advances(known, new_count):
                return False
            record["passkeys"] = {
                **record["passkeys"],
                credential_id: {**current, "sign_count": new_count, "last_used_at": now},
            }
            return True

        if self.users.store.change("users", owner["username"], used) is not True:
            raise PasskeyError("The passkey could not be verified.")
        return SignedIn(owner["username"], credential_id)


def sign_count_advances(known: int, new: int) -> bool:
    """WebAuthn §7.2 step 21: a count must grow, unless both are 0 (an authenticator
    that keeps none, as synced passkeys do); one that does not was cloned or replayed."""
    return new > known or new == known == 0


def json_body(data: bytes) -> dict[str, Any] | None:
    """A ceremony request's JSON object, or None when it is not one."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
