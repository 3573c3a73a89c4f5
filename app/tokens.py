"""Access token verification, for /verify, /introspect, /revoke and the gateway.

A token is valid when its RS256 signature checks against one of our keys, `typ` is
`at+jwt`, `iss` is us, it has not expired, `aud` names the resource asked about, and
its client and grant are still in the store. The last two checks cost one `stat` each
(the store's cache), which is how a deletion by the CLI process takes effect here at
once without a file read per request.
"""

from __future__ import annotations

import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from .config import Config
from .keys import ALGORITHM, KeyManager
from .models import AccessToken
from .policy import same_resource
from .repositories import ClientRepository, GrantRepository


class InvalidAccessToken(Exception):
    """The token is not (or no longer) valid; the message says why, for logs and the
    `error_description` (never the token itself)."""


class AccessTokenVerifier:
    def __init__(self, config: Config, keys: KeyManager, clients: ClientRepository, grants: GrantRepository):
        self.config = config
        self.keys = keys
        self.clients = clients
        self.grants = grants

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token we signed and that has not expired, else raise."""
        if not token or token.count(".") != 2:
            raise InvalidAccessToken("The access token is malformed.")
        try:
            decoded = jwt.decode(token, self.keys.verifiers, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            raise InvalidAccessToken("The access token signature is invalid.") from None
        if decoded.header.get("typ") != "at+jwt":
            raise InvalidAccessToken("The token is not an access token.")
        claims = decoded.claims
        if claims.get("iss") != self.config.issuer:
            raise InvalidAccessToken("The access token was issued by another server.")
        exp = claims.get("exp")
        if not isinstance(exp, (int, float)) or exp <= time.time():
            raise InvalidAccessToken("The access token has expired.")
        return claims

    def verify(self, token: str, resource: str | None = None) -> AccessToken:
        """A live access token, checked for `resource` when given (else for any of
        the configured resources)."""
        claims = self.decode(token)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        wanted = [resource] if resource else list(self.config.resources)
        if not any(same_resource(a, w) for a in audiences if isinstance(a, str) for w in wanted):
            raise InvalidAccessToken("The access token is not meant for this resource.")
        if self.clients.get(claims.get("client_id")) is None:
            raise InvalidAccessToken("The client of this access token is no longer registered.")
        if not self.grants.exists(claims.get("grant_id")):
            raise InvalidAccessToken("The access token was revoked.")
        return AccessToken(claims)
