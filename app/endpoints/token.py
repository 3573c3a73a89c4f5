"""The token endpoint (RFC 6749 §3.2), revocation (RFC 7009) and introspection
(RFC 7662), on Authlib's server and endpoint classes."""

from __future__ import annotations

import json
from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from flask import Blueprint, Flask, Response

from .. import services
from ..config import Config
from ..models import AccessToken, Client, Grant
from ..oauth2 import CLIENT_AUTH_METHODS, OAuthServer
from ..tokens import InvalidAccessToken


def _find_token(server: OAuthServer, token: str, hint: str | None) -> AccessToken | Grant | None:
    """An access token (JWT) or the grant of a refresh token, whichever this is. A
    rotated refresh token past its grace window is a replay here as at /token: its
    grant is revoked (RFC 9700 §4.14.2)."""
    if hint != "refresh_token" and token.count(".") == 2:
        try:
            return server.verifier.verify(token)
        except InvalidAccessToken:
            return None
    return server.grants.find_by_refresh_token(token)


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH_METHODS
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | Grant | None:
        return _find_token(self.server, token_string, token_type_hint)

    def revoke_token(self, token: AccessToken | Grant, request: Any) -> None:
        # A refresh token revokes its grant, and with it every access token of the
        # grant. An access token does the same (RFC 7009 §2.1 allows it): access
        # tokens are stateless JWTs, and revoking the grant is what survives a restart.
        self.server.grants.revoke(token.grant_id)


class Introspection(IntrospectionEndpoint):
    """RFC 7662. Needs no Flask context, so the hot path (app/hotpath.py) can call
    it with a request built from the WSGI environ."""

    CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | Grant | None:
        return _find_token(self.server, token_string, token_type_hint)

    def check_permission(self, token: AccessToken | Grant, client: Client, request: Any) -> bool:
        """RFC 7662 §4: a client learns only about its own tokens; a resource server
        the operator made (`flask oauth add-resource-server`) about every token."""
        return client.is_resource_server or token.client_id == client.client_id

    def introspect_token(self, token: AccessToken | Grant) -> dict[str, Any]:
        config = self.server.config
        if isinstance(token, AccessToken):
            claims = token.claims
            return {
                "active": True,
                "token_type": "Bearer",
                "client_id": claims["client_id"],
                "scope": claims.get("scope", ""),
                "sub": claims.get("sub"),
                "aud": claims.get("aud"),
                "iss": claims.get("iss"),
                "exp": claims.get("exp"),
                "iat": claims.get("iat"),
                "jti": claims.get("jti"),
            }
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": token.client_id,
            "scope": token.get_scope(),
            "sub": token.subject,
            "aud": token.resource[0] if len(token.resource) == 1 else token.resource,
            "iss": config.issuer,
            "exp": int(token.record["expires_at"]),
            "iat": int(token.record.get("refreshed_at") or token.record["issued_at"]),
        }


def _as_invalid_client_401(response: Response) -> Response:
    """The contract: an unknown or deleted client gets 401 invalid_client at /token,
    whatever way it authenticated (Claude registers again on exactly this)."""
    if response.status_code == 400 and response.mimetype == "application/json":
        try:
            body = json.loads(response.get_data(as_text=True))
        except ValueError:
            return response
        if body.get("error") == "invalid_client":
            response.status_code = 401
            response.headers["WWW-Authenticate"] = 'Basic realm="token", error="invalid_client"'
    return response


def init_app(app: Flask, config: Config) -> None:
    bp = Blueprint("token", __name__, url_prefix=config.issuer_path)
    server = app.extensions["oauth"].server
    server.register_endpoint(Revocation)
    server.register_endpoint(Introspection)

    @bp.post("/token")
    def token() -> Response:
        return _as_invalid_client_401(services().server.create_token_response())

    @bp.post("/revoke")
    def revoke() -> Response:
        return _as_invalid_client_401(services().server.create_endpoint_response("revocation"))

    @bp.post("/introspect")
    def introspect() -> Response:
        return _as_invalid_client_401(services().server.create_endpoint_response("introspection"))

    app.register_blueprint(bp)
