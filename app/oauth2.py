"""The OAuth 2.1 machinery, on Authlib's Flask `AuthorizationServer`.

Authlib does the protocol: request validation, client authentication, PKCE, error
responses. This module supplies what Authlib leaves to the application: where clients,
codes and grants live, the JWT access token (RFC 9068) with its audience from RFC 8707
`resource`, the contract's code-retry window, and refresh-token rotation with a grace
window and replay detection (RFC 9700 §4.14.2).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskJsonRequest
from authlib.oauth2.rfc6749 import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
    grants,
)
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonPayload
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from authlib.oauth2.rfc9207 import IssuerParameter
from flask import g
from flask import request as flask_request
from joserfc.jwk import KeySet
from werkzeug.datastructures import EnvironHeaders

from .config import Config
from .keys import ALGORITHM, KeyManager
from .models import IGNORED_SCOPES, AuthorizationCode, Client, Grant, User
from .policy import AUTH_METHODS, same_resource
from .repositories import ClientRepository, GrantRepository
from .security import new_secret
from .tokens import AccessTokenVerifier

log = logging.getLogger(__name__)

CLIENT_AUTH_METHODS = AUTH_METHODS


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this server issues tokens for."""

    error = "invalid_target"


def resolve_resources(requested: list[str], config: Config, allowed: list[str] | None = None) -> list[str]:
    """The configured resource URIs a request names (RFC 8707), in their configured
    spelling; the first configured one when none is named."""
    candidates = list(allowed) if allowed is not None else list(config.resources)
    if not requested:
        return candidates[:1] if allowed is None else candidates
    resolved = []
    for value in requested:
        match = next((c for c in candidates if same_resource(c, value)), None)
        if match is None:
            raise InvalidTargetError(f"The resource {value!r} is not served by this authorization server.")
        if match not in resolved:
            resolved.append(match)
    return resolved


@dataclass
class TokenContext:
    """What the access token generator needs beyond Authlib's arguments."""

    grant_id: str
    resource: list[str]


# -- authorization codes (memory only) ------------------------------------------


class AuthorizationCodeStore:
    """Codes live in memory, single use; a redeemed code is kept until it would have
    expired so that a replay can be recognised and answered."""

    def __init__(self, retry_window: int) -> None:
        self._codes: dict[str, AuthorizationCode] = {}
        self._lock = threading.Lock()
        self._redeem_locks: dict[str, threading.Lock] = {}
        self.retry_window = retry_window

    def save(self, code: AuthorizationCode) -> None:
        with self._lock:
            now = time.time()
            for key in [k for k, c in self._codes.items() if c.expires_at <= now]:
                del self._codes[key]
                self._redeem_locks.pop(key, None)
            # A cached token response is only needed during the retry window.
            for old in self._codes.values():
                if old.redeemed_at is not None and now - old.redeemed_at > self.retry_window:
                    old.response = None
            self._codes[code.code] = code
            self._redeem_locks[code.code] = threading.Lock()

    def get(self, code: str) -> AuthorizationCode | None:
        with self._lock:
            record = self._codes.get(code)
        if record is None or record.is_expired():
            return None
        return record

    def redeem_lock(self, code: str) -> threading.Lock:
        with self._lock:
            return self._redeem_locks.setdefault(code, threading.Lock())

    def discard_for_client(self, client_id: str) -> None:
        with self._lock:
            for key in [k for k, c in self._codes.items() if c.client_id == client_id]:
                del self._codes[key]


# -- PKCE, resource indicators ----------------------------------------------------


class S256CodeChallenge(CodeChallenge):
    """PKCE as OAuth 2.1 and the MCP specification require: a `code_challenge` on
    every authorization request, method `S256` only (`plain` is refused)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256.")
        method = data.get("code_challenge_method")
        if method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 ('plain' is not allowed).")
        super().validate_code_challenge(grant, redirect_uri)


class ResourceIndicator:
    """RFC 8707 at the authorization endpoint: resolve `resource` (absent = the first
    configured) or refuse it with `invalid_target`, before any consent is asked."""

    def __init__(self, config: Config):
        self.config = config

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: Any, redirect_uri: str) -> None:
        requested = grant.request.payload.datalist.get("resource", [])
        grant.request.resource = resolve_resources(list(requested), self.config)


class Issuer(IssuerParameter):
    """RFC 9207: `iss` on every authorization response, errors included."""

    def __init__(self, issuer: str):
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer


# -- tokens -----------------------------------------------------------------------


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 JWT access tokens signed with the current key; `aud` is the resource
    bound at authorization, and `grant_id` ties the token to its grant so that it
    dies with it."""

    def __init__(self, config: Config, keys: KeyManager):
        super().__init__(
            issuer=config.issuer,
            alg=ALGORITHM,
            refresh_token_generator=lambda **_: new_secret(),
            expires_generator=config.access_token_ttl,
        )
        self.keys = keys

    def get_jwks(self) -> KeySet:
        return KeySet([self.keys.current])

    def _context(self) -> TokenContext:
        return g.token_context

    def get_audiences(self, client: Client, user: Any, scope: str) -> str | list[str]:
        resource = self._context().resource
        return resource[0] if len(resource) == 1 else resource

    def get_extra_claims(self, client: Client, grant_type: str, user: Any, scope: str) -> dict[str, Any]:
        return {"grant_id": self._context().grant_id}

    def get_jti(self, client: Client, grant_type: str, user: Any, scope: str) -> str:
        return secrets.token_urlsafe(16)


class _TokenIssuing:
    """Shared by both grants: sign the access token for a grant, with its context."""

    server: OAuthServer

    def _issue(self, client: Client, user: User, scope: str, context: TokenContext, refresh: bool) -> dict:
        g.token_context = context
        return self.server.generate_token(
            grant_type=self.GRANT_TYPE,  # type: ignore[attr-defined]
            client=client,
            user=user,
            scope=scope,
            include_refresh_token=refresh,
        )


class AuthorizationCodeGrant(_TokenIssuing, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        user: User = request.user
        self.server.codes.save(
            AuthorizationCode(
                code=code,
                client_id=request.client.client_id,
                redirect_uri=request.payload.redirect_uri,
                scope=request.scope,
                resource=list(getattr(request, "resource", None) or self.server.config.resources[:1]),
                subject=user.subject,
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method", "S256"),
                expires_at=time.time() + self.server.config.auth_code_ttl,
                extra={"provider": user.provider},
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        record = self.server.codes.get(code)
        self._presented_code = record
        if record is None or record.client_id != client.client_id:
            return None
        return record

    def validate_token_request(self) -> None:
        self._presented_code = None
        try:
            super().validate_token_request()
        except OAuth2Error as error:
            presented = self._presented_code
            if presented is not None and presented.redeemed_at is not None:
                self._refuse_replay(presented)
                raise InvalidGrantError("The authorization code was already used.") from error
            raise
        code: AuthorizationCode = self.request.authorization_code
        if code.redeemed_at is not None:
            # Same client and, since PKCE passed, the same code_verifier: within the
            # retry window, the same response (ChatGPT sometimes posts /token twice).
            window = self.server.config.code_retry_window
            if code.response is None or time.time() - code.redeemed_at > window:
                self._refuse_replay(code)
                raise InvalidGrantError("The authorization code was already used.")

    def _refuse_replay(self, code: AuthorizationCode | None) -> None:
        """RFC 6749 §4.1.2: a code used twice revokes what it issued."""
        if code is not None and code.redeemed_at is not None:
            if self.server.grants.revoke(code.grant_id):
                log.warning("an authorization code was replayed: grant %s… revoked", (code.grant_id or "")[:8])
            code.response = None

    def create_token_response(self) -> tuple[int, dict, list]:
        code: AuthorizationCode = self.request.authorization_code
        client: Client = self.request.client
        with self.server.codes.redeem_lock(code.code):
            if code.redeemed_at is not None:
                if code.response is None:
                    raise InvalidGrantError("The authorization code was already used.")
                return 200, dict(code.response), self.TOKEN_RESPONSE_HEADER
            user = User(code.subject, code.extra.get("provider", ""))
            self.request.user = user
            context = TokenContext(grant_id=secrets.token_urlsafe(18), resource=code.resource)
            token = self._issue(client, user, code.scope, context, client.check_grant_type("refresh_token"))
            self.server.grants.create(
                grant_id=context.grant_id,
                client_id=client.client_id,
                subject=code.subject,
                scope=token.get("scope", code.scope),
                resource=code.resource,
                refresh_token=token.get("refresh_token"),
                provider=user.provider,
            )
            code.redeemed_at = time.time()
            code.grant_id = context.grant_id
            code.response = dict(token)
        self.server.clients.touch(client)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Kept (marked redeemed) until it expires, for replay detection."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User:
        return User(authorization_code.subject, authorization_code.extra.get("provider", ""))


class RefreshTokenGrant(_TokenIssuing, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Grant | None:
        return self.server.grants.find_by_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: Grant) -> User:
        return User(refresh_token.subject, refresh_token.record.get("provider", ""))

    def _requested_scope(self) -> list[str]:
        return [s for s in scope_to_list(self.request.payload.scope or "") or [] if s not in IGNORED_SCOPES]

    def _validate_token_scope(self, token: Grant) -> None:
        requested = self._requested_scope()
        if requested and not set(requested) <= set(token.get_scope().split()):
            raise InvalidScopeError("The requested scope exceeds what was granted.")

    def create_token_response(self) -> tuple[int, dict, list]:
        grant: Grant = self.request.refresh_token
        client: Client = self.request.client
        requested_resource = self.request.payload.datalist.get("resource", [])
        resource = resolve_resources(list(requested_resource), self.server.config, allowed=grant.resource)
        scope = " ".join(self._requested_scope()) or grant.get_scope()
        user = self.authenticate_user(grant)
        self.request.user = user
        token = self._issue(client, user, scope, TokenContext(grant.grant_id, resource), refresh=True)
        if not self.server.grants.rotate(grant, token["refresh_token"]):
            raise InvalidGrantError("The refresh token is no longer valid.")
        self.server.clients.touch(client)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def revoke_old_credential(self, refresh_token: Grant) -> None:
        """Done atomically by `GrantRepository.rotate`."""


# -- the server -------------------------------------------------------------------


class _SafeJsonPayload(JsonPayload):
    """Authlib's Flask JSON payload lets a malformed body raise an HTML 400; this one
    yields an empty payload, which the endpoints answer in RFC 7591 error format."""

    def __init__(self, request: Any):
        self._request = request

    @property
    def data(self) -> dict:
        body = self._request.get_json(silent=True)
        return body if isinstance(body, dict) else {}


class OAuthServer(AuthorizationServer):
    def __init__(self, config: Config, clients: ClientRepository, grant_repo: GrantRepository, keys: KeyManager):
        super().__init__()
        self.config = config
        self.clients = clients
        self.grants = grant_repo
        self.keys = keys
        self.verifier = AccessTokenVerifier(config, keys, clients, grant_repo)
        self.codes = AuthorizationCodeStore(config.code_retry_window)
        self._query_client = clients.resolve
        self.scopes_supported = list(config.scopes)
        self.register_token_generator("default", AccessTokenGenerator(config, keys))
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), ResourceIndicator(config)])
        self.register_grant(RefreshTokenGrant)
        self.register_extension(Issuer(config.issuer))

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        """Grants persist their own state (see the grant classes)."""

    def validate_requested_scope(self, scope: str | None) -> None:
        wanted = {s for s in scope_to_list(scope or "") or [] if s not in IGNORED_SCOPES}
        if not wanted <= set(self.config.scopes):
            raise InvalidScopeError(f"Unknown scope; this server offers: {' '.join(self.config.scopes)}.")

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        """A stored authorization request (a dict of its parameters, kept while the
        person logs in and consents) or the current Flask request."""
        if isinstance(request, OAuth2Request):  # built from a WSGI environ (app/hotpath.py)
            return request
        if isinstance(request, dict):
            oauth_request = OAuth2Request("GET", self.config.url("/authorize"), headers={})
            oauth_request.payload = _MultiPayload(request)
            return oauth_request
        # request.url is the issuer's origin + path (app.forwarded.IssuerOrigin), so
        # Authlib's https check sees what clients see, not the proxy's plain http.
        return super().create_oauth2_request(request)

    def create_json_request(self, request: Any) -> FlaskJsonRequest:
        json_request = FlaskJsonRequest(flask_request)
        json_request.payload = _SafeJsonPayload(flask_request)
        return json_request


class EnvironFormRequest(OAuth2Request):
    """A form POST read straight from a WSGI environ (app/hotpath.py). Authlib's
    endpoints need only its method, URL, headers and form, none of Flask's context."""

    def __init__(self, uri: str, environ: dict[str, Any], params: dict[str, list[str]]):
        super().__init__(environ["REQUEST_METHOD"], uri, headers=EnvironHeaders(environ))
        self.payload = _MultiPayload(params)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class _MultiPayload(BasicOAuth2Payload):
    """A stored request: parameter name -> list of values (as sent, repeats kept)."""

    def __init__(self, params: dict[str, list[str]]):
        self._data = {k: v[0] for k, v in params.items() if v}
        self._datalist = {k: list(v) for k, v in params.items()}
