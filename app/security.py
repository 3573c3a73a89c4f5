"""Small security helpers: random secrets, hashes of high-entropy secrets, CSRF.

Client secrets, registration access tokens and refresh tokens carry 256 bits of
randomness, so a fast SHA-256 is the right hash for them (a slow password hash would
cap every confidential-client request at a few per second). Only user passwords get
a slow hash (werkzeug's scrypt, in `repositories.UserRepository`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from flask import abort, request, session

CSRF_FIELD = "csrf_token"


def new_secret() -> str:
    """A URL-safe random string with 256 bits of entropy."""
    return secrets.token_urlsafe(32)


def new_id(nbytes: int) -> str:
    """A URL-safe random id that never begins with `-`, so that no command line
    reads it as an option."""
    while True:
        value = secrets.token_urlsafe(nbytes)
        if not value.startswith("-"):
            return value


def hash_secret(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def secret_matches(value: str | None, expected_hash: str | None) -> bool:
    """Constant-time check of a presented secret against a stored SHA-256 hash."""
    if not value or not expected_hash:
        return False
    return hmac.compare_digest(hash_secret(value), expected_hash)


def bearer_token(environ: dict[str, Any] | None = None) -> str | None:
    """The token of an `Authorization: Bearer …` header (RFC 6750 §2.1), of the
    current Flask request unless a WSGI `environ` is given."""
    environ = request.environ if environ is None else environ
    scheme, _, value = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def access_token(environ: dict[str, Any]) -> tuple[str, str] | None:
    """The scheme (`bearer` or `dpop`, RFC 9449 §7.1) and token of the request's
    `Authorization` header, or None when it carries neither."""
    scheme, _, value = (environ.get("HTTP_AUTHORIZATION") or "").partition(" ")
    scheme, value = scheme.lower(), value.strip()
    return (scheme, value) if value and scheme in ("bearer", "dpop") else None


def csrf_token() -> str:
    """The CSRF token of this browser session (synchronizer token pattern)."""
    token = session.get(CSRF_FIELD)
    if not token:
        token = session[CSRF_FIELD] = secrets.token_urlsafe(32)
    return token


def csrf_valid(submitted: str) -> bool:
    """Whether `submitted` is this session's CSRF token (constant time)."""
    expected = session.get(CSRF_FIELD)
    return isinstance(expected, str) and expected != "" and hmac.compare_digest(expected.encode(), submitted.encode())


def check_csrf() -> None:
    """Abort with 400 unless the submitted form carries this session's CSRF token."""
    if not csrf_valid(request.form.get(CSRF_FIELD, "")):
        abort(400, description="The form expired or was not sent from this site. Go back and try again.")
