"""RFC 7662 token introspection, for the resource servers an operator made and for
clients asking about their own tokens."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7662 import IntrospectionEndpoint

from ..models import AccessToken, Client, Grant
from ..policy import CONFIDENTIAL_AUTH_METHODS
from .rfc9449 import bound_key
from .tokens import find_token

if TYPE_CHECKING:
    from .server import OAuthServer


class Introspection(IntrospectionEndpoint):
    """RFC 7662. Needs no Flask context, so the hot path (app/hotpath.py) can call
    it with a request built from the WSGI environ."""

    CLIENT_AUTH_METHODS = CONFIDENTIAL_AUTH_METHODS
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | Grant | None:
        return find_token(self.server.verifier, self.server.grants, token_string, token_type_hint)

    def check_permission(self, token: AccessToken | Grant, client: Client, request: Any) -> bool:
        """RFC 7662 §4: a client learns only about its own tokens; a resource server
        the operator made (`flask oauth add-resource-server`) about every token."""
        return client.is_resource_server or token.client_id == client.client_id

    def introspect_token(self, token: AccessToken | Grant) -> dict[str, Any]:
        config = self.server.config
        if isinstance(token, AccessToken):
            claims = token.claims
            jkt = bound_key(claims)
            # RFC 9449 §6.2: a DPoP-bound token says so, and to which key
            bound = {"token_type": "DPoP", "cnf": {"jkt": jkt}} if jkt else {"token_type": "Bearer"}
            return {
                "active": True,
                **bound,
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
