"""The shape of every stored record, checked before a backup is restored.

A restored record is trusted by every request afterwards: a string where a number
belongs makes an expiry check raise, a signing key without its fields makes
`/jwks.json` fail and every token look forged. So `restore` checks each record's fields
and types against these rules first, and changes nothing when one fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import RSAKey

from .policy import AUTH_METHODS

Check = Callable[[Any], bool]

SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
USERNAME = re.compile(r"^[A-Za-z0-9._@+-]{1,64}$")


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
        and value.get("token_endpoint_auth_method", "none") in AUTH_METHODS
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


def token_hashes(value: Any) -> bool:
    return isinstance(value, dict) and all(sha256_hex(k) and optional(number)(v) for k, v in value.items())


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
    "users": (
        "username",
        {
            "username": lambda v: isinstance(v, str) and bool(USERNAME.match(v)),
            "password_hash": text,
            "created_at": optional(number),
            "password_changed_at": optional(number),
        },
    ),
}
SIGNING_KEY: dict[str, Check] = {
    "kid": text,
    "use": lambda v: v == "sig",
    "jwk": private_rsa_jwk,
    "created_at": number,
    "retired_at": optional(number),
}
SESSION_SECRET: dict[str, Check] = {"kid": text, "use": lambda v: v == "session", "secret": text}


def problem(collection: str, key: str, record: Any) -> str | None:
    """Why a record cannot be stored in `collection` under `key`, or None."""
    if not isinstance(record, dict):
        return "is not an object"
    if collection == "signing_keys":
        id_field, fields = "kid", SESSION_SECRET if record.get("use") == "session" else SIGNING_KEY
    elif collection in RULES:
        id_field, fields = RULES[collection]
    else:
        return f"belongs to no known collection {collection!r}"
    bad = [name for name, check in fields.items() if not check(record.get(name))]
    if bad:
        return f"has a missing or invalid {', '.join(bad)}"
    if collection == "grants":
        held = [record[name] for name in ("token_hashes", "refresh_token_hashes") if name in record]
        if len(held) != 1 or held[0] is None:
            return "has not exactly one of token_hashes, refresh_token_hashes"
    if record[id_field] != key:
        return f"has {id_field} {record[id_field]!r}, not its key"
    return None
