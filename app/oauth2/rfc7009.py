"""RFC 7009 token revocation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7009 import RevocationEndpoint

from ..models import AccessToken, Grant
from ..observability import TOKENS_REVOKED, audit
from ..policy import TOKEN_AUTH_METHODS
from .tokens import find_token

if TYPE_CHECKING:
    from .server import OAuthServer


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = TOKEN_AUTH_METHODS
    server: OAuthServer

    def query_token(self, token_string: str, token_type_hint: str | None) -> AccessToken | Grant | None:
        return find_token(self.server.verifier, self.server.grants, token_string, token_type_hint)

    def revoke_token(self, token: AccessToken | Grant, request: Any) -> None:
        # A refresh token revokes its grant, and with it every access token of the
        # grant. An access token does the same (RFC 7009 §2.1 allows it): access
        # tokens are stateless JWTs, and revoking the grant is what survives a restart.
        if self.server.grants.revoke(token.grant_id):
            TOKENS_REVOKED.inc()
            audit("token.revoked", client_id=request.client.client_id, grant_id=token.grant_id)
