"""Models: the objects Authlib's grants and endpoints work on.

Each wraps a plain record (a dict as stored in the JSON files, or kept in memory for
authorization codes) and implements the Authlib mixin the protocol code expects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin
from authlib.oauth2.rfc6749.util import scope_to_list

from .config import is_loopback_host
from .policy import CONFIDENTIAL_AUTH_METHODS, PRIVATE_KEY_JWT, requested_scopes
from .security import secret_matches


def normalize_scope(requested: str | None, offered: tuple[str, ...]) -> str | None:
    """The scope to grant: all offered scopes when none (or only ignored ones) are
    asked for, else the requested ones; None when something unknown is asked for."""
    wanted = requested_scopes(requested)
    if not wanted:
        return " ".join(offered)
    if not set(wanted) <= set(offered):
        return None
    return " ".join(dict.fromkeys(wanted))


def redirect_uri_matches(registered: str, presented: str) -> bool:
    """Exact string match, except that a loopback http redirect may use any port
    (RFC 8252 §7.3: native apps bind an ephemeral port at the time of the request)."""
    if registered == presented:
        return True
    reg, pres = urlsplit(registered), urlsplit(presented)
    if reg.scheme != "http" or pres.scheme != "http" or not is_loopback_host(reg.hostname):
        return False
    try:
        _ = pres.port  # a malformed port must not match
    except ValueError:
        return False
    return (
        reg.hostname == pres.hostname
        and reg.path == pres.path
        and reg.query == pres.query
        and reg.fragment == pres.fragment == ""
        and pres.username is None
        and pres.password is None
    )


class Client(ClientMixin):
    """A registered client (one entry of clients.json)."""

    def __init__(self, record: dict[str, Any], offered_scopes: tuple[str, ...]):
        self.record = record
        self.metadata: dict[str, Any] = record.get("metadata", {})
        self._offered_scopes = offered_scopes

    # Authlib's rfc7592 endpoint reads these two to build the read response.
    @property
    def client_info(self) -> dict[str, Any]:
        return {
            "client_id": self.client_id,
            "client_id_issued_at": int(self.record.get("client_id_issued_at", 0)),
            "client_secret_expires_at": 0,
        }

    @property
    def client_metadata(self) -> dict[str, Any]:
        return dict(self.metadata)

    @property
    def client_id(self) -> str:
        return self.record["client_id"]

    @property
    def client_name(self) -> str:
        return self.metadata.get("client_name") or self.client_id

    @property
    def redirect_uris(self) -> list[str]:
        return list(self.metadata.get("redirect_uris", []))

    @property
    def auth_method(self) -> str:
        return self.metadata.get("token_endpoint_auth_method", "none")

    @property
    def is_public(self) -> bool:
        return self.auth_method == "none"

    @property
    def signing_keys(self) -> dict[str, Any] | str | None:
        """Where this client's RFC 7523 assertion keys are: its document's inline
        `jwks`, or its `jwks_uri`; None for a client that has none."""
        if self.auth_method != PRIVATE_KEY_JWT:
            return None
        return self.metadata.get("jwks") or self.metadata.get("jwks_uri")

    @property
    def is_resource_server(self) -> bool:
        """Made by the operator to introspect every token (RFC 7662 §4)."""
        return self.record.get("resource_server") is True

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        offered = self._offered_scopes
        registered = scope_to_list(self.metadata.get("scope") or "")
        if registered:
            offered = tuple(s for s in offered if s in registered) or offered
        return normalize_scope(scope, offered)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.registered_redirect_uri(redirect_uri) is not None

    def registered_redirect_uri(self, presented: str) -> str | None:
        """The registered redirect URI that `presented` matches (the same, or a
        loopback one on another port), or None: what an approval is bound to."""
        return next((r for r in self.redirect_uris if redirect_uri_matches(r, presented)), None)

    def check_client_secret(self, client_secret: str) -> bool:
        return secret_matches(client_secret, self.record.get("client_secret_hash"))

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        # A confidential client may send its secret either way (basic or post): some
        # clients register the RFC 7591 default, client_secret_basic, and then post.
        if self.is_public:
            return method == "none" and endpoint != "introspection"
        if self.auth_method == PRIVATE_KEY_JWT:
            # bound to the key its document publishes: nothing else stands for it
            return method == PRIVATE_KEY_JWT and endpoint != "introspection"
        return method in CONFIDENTIAL_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.metadata.get("response_types", ["code"])

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.metadata.get("grant_types", ["authorization_code", "refresh_token"])


@dataclass
class AuthorizationCode(AuthorizationCodeMixin):
    """An authorization code, kept in memory only."""

    code: str
    client_id: str
    redirect_uri: str | None
    scope: str
    resource: list[str]
    subject: str
    code_challenge: str
    code_challenge_method: str
    expires_at: float
    # Set once redeemed: for the retry window (a client posting /token twice) and
    # for replay detection (RFC 6749 §4.1.2).
    redeemed_at: float | None = None
    grant_id: str | None = None
    response: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def is_expired(self) -> bool:
        return time.time() >= self.expires_at


class Grant(TokenMixin):
    """One grant of refresh_tokens.json: what a person approved for a client, and the
    hash of its refresh token(s)."""

    def __init__(self, record: dict[str, Any], presented_hash: str | None = None):
        self.record = record
        self.presented_hash = presented_hash

    @property
    def grant_id(self) -> str:
        return self.record["grant_id"]

    @property
    def client_id(self) -> str:
        return self.record["client_id"]

    @property
    def subject(self) -> str:
        return self.record["subject"]

    @property
    def resource(self) -> list[str]:
        return list(self.record.get("resource", []))

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.record.get("scope", "")

    def get_expires_in(self) -> int:
        return max(0, int(self.record["expires_at"] - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.record["expires_at"]

    def is_revoked(self) -> bool:
        return False  # a revoked grant is deleted from the store

    def get_user(self) -> str:
        return self.subject


@dataclass(frozen=True)
class Person:
    """A person as a provider identified them: who logs in, consents, and whom a
    grant is for. `subject` becomes the `sub` of our tokens."""

    subject: str
    provider: str
    name: str = ""
    email: str | None = None
    #: when the person logged in here (from the login session; 0 when not known)
    login_at: float = 0.0

    def get_user_id(self) -> str:
        return self.subject


@dataclass
class AccessToken(TokenMixin):
    """A verified access token (the JWT's claims), for introspection and revocation."""

    claims: dict[str, Any]

    @property
    def client_id(self) -> str:
        return self.claims["client_id"]

    @property
    def grant_id(self) -> str | None:
        return self.claims.get("grant_id")

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.claims.get("scope", "")

    def get_expires_in(self) -> int:
        return max(0, int(self.claims["exp"] - time.time()))

    def is_expired(self) -> bool:
        return time.time() >= self.claims["exp"]

    def is_revoked(self) -> bool:
        return False  # verify() already refused revoked tokens
