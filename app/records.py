"""The shape of every stored record, checked before a backup is restored.

A restored record is trusted by every request afterwards: a string where a number
belongs makes an expiry check raise, a signing key without its fields makes
`/jwks.json` fail and every token look forged. So `restore` checks each record's fields
and types against these rules first, and changes nothing when one fails.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from .config import Config
from .policy import TOKEN_AUTH_METHODS, check_redirect_uri

Check = Callable[[Any], bool]

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")
BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")
#: WebAuthn §5.8.3: a credential id is at most 1023 bytes (1364 base64url characters)
MAX_CREDENTIAL_ID = 1364


def number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def optional(check: Check) -> Check:
    return lambda value: value is None or check(value)


def text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def string(value: Any) -> bool:
    return isinstance(value, str)


def sha256_hex(value: Any) -> bool:
    return isinstance(value, str) and bool(SHA256_HEX.match(value))


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def boolean(value: Any) -> bool:
    return isinstance(value, bool)


def client_metadata(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and strings(value.get("redirect_uris", []))
        and value.get("token_endpoint_auth_method", "none") in TOKEN_AUTH_METHODS
        and strings(value.get("grant_types", []))
        and strings(value.get("response_types", []))
        and isinstance(value.get("client_name", ""), str)
        and isinstance(value.get("scope", ""), str)
    )


def approvals(value: Any) -> bool:
    """A person's approval of a client; `redirect_uri` is absent from those written
    before approvals were bound to it (they count as none, but restore as they are)."""
    return isinstance(value, dict) and all(
        isinstance(a, dict)
        and string(a.get("scope"))
        and strings(a.get("resource"))
        and number(a.get("approved_at"))
        and optional(text)(a.get("redirect_uri"))
        for a in value.values()
    )


def base64url(value: Any) -> bool:
    return isinstance(value, str) and bool(BASE64URL.match(value))


def passkeys(value: Any) -> bool:
    """A user's passkeys (app/passkeys.py): credential id -> its public key (COSE,
    base64url), sign count, transports, user handle, created and last used."""
    return isinstance(value, dict) and all(
        base64url(credential_id)
        and len(credential_id) <= MAX_CREDENTIAL_ID
        and isinstance(p, dict)
        and base64url(p.get("public_key"))
        and isinstance(p.get("sign_count"), int)
        and not isinstance(p.get("sign_count"), bool)
        and 0 <= p["sign_count"] < 2**32
        and strings(p.get("transports", []))
        and base64url(p.get("user_handle"))
        and number(p.get("created_at"))
        and optional(number)(p.get("last_used_at"))
        for credential_id, p in value.items()
    )


def token_hashes(value: Any) -> bool:
    return isinstance(value, dict) and all(sha256_hex(k) and optional(number)(v) for k, v in value.items())


def aes256_key(value: Any) -> bool:
    """A 256-bit key, URL-safe base64 (app/keys.py `_new_encryption_record`)."""
    try:
        return isinstance(value, str) and len(base64.urlsafe_b64decode(value.encode())) == 32
    except (ValueError, binascii.Error):
        return False


def sealed(value: Any) -> bool:
    """Base64 of a nonce, a ciphertext and its tag (app/upstream_tokens.py `Sealer`)."""
    try:
        return isinstance(value, str) and len(base64.b64decode(value.encode(), validate=True)) > 12 + 16
    except (ValueError, binascii.Error):
        return False


#: RSA signing keys shorter than this are refused (NIST SP 800-57: 2048 bits at least;
#: keys.py makes 2048-bit keys): a restored short key would sign every token.
MIN_RSA_BITS = 2048


def rsa_modulus_bits(value: Any) -> int:
    """The size in bits of an RSA JWK's modulus `n` (RFC 7518 §6.3.1.1), 0 when unreadable."""
    n = value.get("n") if isinstance(value, dict) else None
    if not isinstance(n, str) or not n:
        return 0
    try:
        return int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big").bit_length()
    except (ValueError, binascii.Error):
        return 0


def strong_private_rsa_jwk(value: Any) -> bool:
    """A private RSA key of at least MIN_RSA_BITS, checked before it is parsed (a
    short key would only make the library warn)."""
    return rsa_modulus_bits(value) >= MIN_RSA_BITS and private_rsa_jwk(value)


#: werkzeug's hash formats (`method$salt$hash`) that `check_password_hash` can check,
#: with bounds on their cost: an unknown method made /login answer 500, and a huge
#: scrypt cost would make each login take the server's memory.
SCRYPT_METHOD = re.compile(r"^scrypt(?::(\d{1,8}):(\d{1,3}):(\d{1,3}))?$")
PBKDF2_METHOD = re.compile(r"^pbkdf2(?::(sha256|sha512)(?::(\d{1,8}))?)?$")
HASH_PART = re.compile(r"^[0-9a-f]{32,256}$")
SALT_PART = re.compile(r"^[A-Za-z0-9]{1,64}$")


def known_password_hash(value: Any) -> bool:
    """A password hash werkzeug makes and checks: scrypt (N a power of two, 2^10..2^20,
    r 1..32, p 1..16) or pbkdf2 with sha256/sha512 (1,000..10,000,000 iterations)."""
    if not isinstance(value, str) or value.count("$") != 2:
        return False
    method, salt, digest = value.split("$")
    if not SALT_PART.match(salt) or not HASH_PART.match(digest):
        return False
    scrypt = SCRYPT_METHOD.match(method)
    if scrypt:
        if scrypt.group(1) is None:
            return True
        n, r, p = (int(g) for g in scrypt.groups())
        return 2**10 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16
    pbkdf2 = PBKDF2_METHOD.match(method)
    if pbkdf2:
        return pbkdf2.group(2) is None or 1000 <= int(pbkdf2.group(2)) <= 10_000_000
    return False


def private_rsa_jwk(value: Any) -> bool:
    if not isinstance(value, dict) or value.get("kty") != "RSA" or "d" not in value:
        return False
    try:
        RSAKey.import_key(value)
    except (JoseError, ValueError, TypeError, KeyError):
        return False
    return True


#: collection -> (id field, {field: check}); a field missing from a record is checked
#: as None, so only `optional` fields may be left out.
RULES: dict[str, tuple[str, dict[str, Check]]] = {
    "clients": (
        "client_id",
        {
            "client_id": text,
            "metadata": client_metadata,
            "created_at": number,
            "last_used_at": optional(number),
            "client_id_issued_at": optional(number),
            "client_secret_hash": optional(sha256_hex),
            "registration_access_token_hash": optional(sha256_hex),
            "approvals": optional(approvals),
            "resource_server": optional(boolean),
            "document": optional(boolean),
            # the network it registered from, while it never completed an authorization
            "registered_from": optional(text),
        },
    ),
    "grants": (
        "grant_id",
        {
            "grant_id": text,
            "client_id": text,
            "subject": text,
            "provider": optional(string),
            "scope": string,
            "resource": strings,
            "issued_at": number,
            "refreshed_at": optional(number),
            "expires_at": number,
            # one of the two (app/repositories.py: TOKEN_HASHES, SEARCHED_TOKEN_HASHES)
            "token_hashes": optional(token_hashes),
            "refresh_token_hashes": optional(token_hashes),
            "grace_token_hash": optional(sha256_hex),
        },
    ),
    # sealed: only ciphertext is ever stored or backed up
    "upstream_tokens": (
        "grant_id",
        {"grant_id": text, "kid": text, "sealed": sealed, "updated_at": number},
    ),
    "users": (
        "username",
        {
            "username": lambda v: isinstance(v, str) and bool(USERNAME.match(v)),
            "password_hash": known_password_hash,
            "created_at": optional(number),
            "password_changed_at": optional(number),
            "passkeys": optional(passkeys),
        },
    ),
}
SIGNING_KEY: dict[str, Check] = {
    "kid": text,
    "use": lambda v: v == "sig",
    "jwk": strong_private_rsa_jwk,
    "created_at": number,
    "retired_at": optional(number),
}
SESSION_SECRET: dict[str, Check] = {"kid": text, "use": lambda v: v == "session", "secret": text}


ENCRYPTION_KEY: dict[str, Check] = {
    "kid": text,
    "use": lambda v: v == "enc",
    "key": aes256_key,
    "created_at": number,
}
SIGNING_KEY_RULES = {"session": SESSION_SECRET, "enc": ENCRYPTION_KEY}


#: the rule a field breaks, where its name alone does not say it
RULE_NAMES = {
    "jwk": f"jwk (a private RSA key of at least {MIN_RSA_BITS} bits)",
    "password_hash": "password_hash (a known method: werkzeug's scrypt or pbkdf2)",
}


def problem(collection: str, key: str, record: Any) -> str | None:
    """Why a record cannot be stored in `collection` under `key`, or None."""
    if not isinstance(record, dict):
        return "is not an object"
    if collection == "signing_keys":
        id_field, fields = "kid", SIGNING_KEY_RULES.get(str(record.get("use")), SIGNING_KEY)
    elif collection in RULES:
        id_field, fields = RULES[collection]
    else:
        return f"belongs to no known collection {collection!r}"
    bad = [name for name, check in fields.items() if not check(record.get(name))]
    if bad:
        return f"has a missing or invalid {', '.join(RULE_NAMES.get(name, name) for name in bad)}"
    if collection == "grants":
        held = [record[name] for name in ("token_hashes", "refresh_token_hashes") if name in record]
        if len(held) != 1 or held[0] is None:
            return "has not exactly one of token_hashes, refresh_token_hashes"
    if record[id_field] != key:
        return f"has {id_field} {record[id_field]!r}, not its key"
    return None


def live_input_problem(collection: str, record: dict[str, Any], config: Config) -> str | None:
    """Why a record (of the right shape: `problem` found none) breaks a rule live
    input is held to, or None: a restored client's redirect URIs must pass the
    registration's rules (app/policy.py), under this server's configuration."""
    if collection == "clients":
        for uri in record["metadata"].get("redirect_uris", []):
            why = check_redirect_uri(uri, config)
            if why:
                return f"has a redirect URI registration refuses: {why}"
    return None
