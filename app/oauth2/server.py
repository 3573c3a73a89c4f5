"""The authorization server: every grant, extension and endpoint registered in one
place, on Authlib's Flask `AuthorizationServer`.

Authlib does the protocol (request validation, client authentication, PKCE, error
responses); the rest of this package supplies what it leaves to the application:
where codes and grants live (codes.py, grants.py), the RFC 9068 access token (tokens.py),
RFC 8707 resource indicators, RFC 9207 `iss`, revocation, introspection, registration,
RFC 7523 client assertions and the jwt-bearer grant for ID-JAGs (rfc7523.py).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.integrations.flask_oauth2.requests import FlaskJsonRequest
from authlib.oauth2.rfc6749 import InvalidClientError, InvalidScopeError, OAuth2Error, OAuth2Request
from flask import Response
from flask import request as flask_request

from ..cimd import DocumentFetcher
from ..config import Config
from ..keys import KeyManager
from ..policy import requested_scopes
from ..repositories import ClientRepository, GrantRepository
from ..throttle import SlidingWindow
from .codes import CodeStore
from .grants import AuthorizationCodeGrant, RefreshTokenGrant
from .requests import SafeJsonPayload, StoredPayload
from .rfc7009 import Revocation
from .rfc7523 import IdentityAssertionGrant, PrivateKeyJWT, TrustedIdentityProviders
from .rfc7591 import RegistrationEndpoint, claims_class
from .rfc7592 import ConfigurationEndpoint
from .rfc7636 import S256CodeChallenge
from .rfc7662 import Introspection
from .rfc8707 import ResourceIndicator
from .rfc9207 import Issuer
from .rfc9449 import ProofChecker
from .tokens import AccessTokenGenerator, AccessTokenVerifier

if TYPE_CHECKING:
    from ..upstream_tokens import UpstreamTokens


class OAuthServer(AuthorizationServer):
    def __init__(self, config: Config, clients: ClientRepository, grants: GrantRepository, keys: KeyManager):
        super().__init__()
        self.config = config
        self.clients = clients
        self.grants = grants
        self.keys = keys
        self.verifier = AccessTokenVerifier(config, keys, clients, grants)
        shared = clients.store.shared
        self.codes = CodeStore(shared, config.code_retry_window)
        #: registrations per client address (RFC 7591 §3 leaves limits to the server),
        #: counted as they are stored (app/oauth2/rfc7591.py)
        self.registration_rate = SlidingWindow(config.registration_rate, 60, shared, "registration")
        self._query_client = clients.resolve
        self.scopes_supported = list(config.scopes)
        #: the person's upstream tokens, moved from the login to the code to the grant
        #: (set by the factory with OAUTH_UPSTREAM_TOKENS)
        self.upstream_tokens: UpstreamTokens | None = None
        #: where a failed client authentication is a 401 (see handle_error_response): the
        #: paths of the endpoints declared `authenticates_clients`, read from the URL map
        #: once every route is registered (app/routes.py)
        self.client_authenticated_paths: frozenset[str] = frozenset()

        self.register_token_generator("default", AccessTokenGenerator(config, keys))
        #: RFC 9449 DPoP proofs, at /token (the grants) and at the resources (verify.py)
        self.dpop = ProofChecker(shared)
        self.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True), ResourceIndicator(config)])
        self.register_grant(RefreshTokenGrant)
        #: when this process started: an ID-JAG issued before is refused where the
        #: replay set lives in the process (rfc7523.py)
        self.started_at = time.time()
        fetcher = clients.documents or (DocumentFetcher(config, shared) if config.trusted_idps else None)
        self.register_client_auth_method(PrivateKeyJWT.CLIENT_AUTH_METHOD, PrivateKeyJWT(self, clients.documents))
        if config.trusted_idps and fetcher is not None:
            self.identity_providers = TrustedIdentityProviders(config.trusted_idps, fetcher)
            self.register_grant(IdentityAssertionGrant)
        self.register_extension(Issuer(config.issuer))
        self.register_endpoint(Revocation)
        self.introspection = Introspection(self)
        self.register_endpoint(self.introspection)
        claims = [claims_class(config)]
        self.register_endpoint(RegistrationEndpoint(self, claims_classes=claims))
        self.register_endpoint(ConfigurationEndpoint(self, claims_classes=claims))

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        """Grants persist their own state (see the grant classes)."""

    def validate_requested_scope(self, scope: str | None) -> None:
        if not set(requested_scopes(scope)) <= set(self.config.scopes):
            raise InvalidScopeError(f"Unknown scope; this server offers: {' '.join(self.config.scopes)}.")

    def handle_error_response(self, request: Any, error: OAuth2Error) -> Response:
        return self.handle_response(*self.error_answer(request, error))

    def error_answer(self, request: Any, error: OAuth2Error) -> tuple[int, Any, list]:
        """An OAuth error's status, body and headers. RFC 6749 §5.2 allows 401 for every
        `invalid_client`, and MCP clients need it: Claude registers again on a 401 from
        /token, whichever way it sent its credentials (Authlib answers 400 unless they
        came in the Authorization header)."""
        if isinstance(error, InvalidClientError) and error.status_code == 400:
            path = urlsplit(getattr(request, "uri", "") or "").path
            if path in self.client_authenticated_paths:
                error.status_code = 401
        return error(self.get_error_uri(request, error))

    def introspect(self, request: OAuth2Request) -> tuple[int, Any, list]:
        """RFC 7662's answer to a request, errors included: the fast front's
        (app/hotpath.py, for a 200) and the Flask view's (app/endpoints/token.py)."""
        try:
            return self.introspection(request)
        except OAuth2Error as error:
            return self.error_answer(request, error)

    def create_oauth2_request(self, request: Any) -> OAuth2Request:
        """A request already built (from a WSGI environ, app/hotpath.py), a stored
        authorization request (its parameters, kept while the person logs in and
        consents), or the current Flask request."""
        if isinstance(request, OAuth2Request):
            return request
        if isinstance(request, dict):
            oauth_request = OAuth2Request("GET", self.config.url("/authorize"), headers={})
            oauth_request.payload = StoredPayload(request)
            return oauth_request
        # request.url is the issuer's origin + path (app.forwarded.IssuerOrigin), so
        # Authlib's https check sees what clients see, not the proxy's plain http.
        return super().create_oauth2_request(request)

    def create_json_request(self, request: Any) -> FlaskJsonRequest:
        json_request = FlaskJsonRequest(flask_request)
        json_request.payload = SafeJsonPayload(flask_request)
        return json_request
