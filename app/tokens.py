"""Access token verification, for /verify, /introspect, /revoke and the gateway.

A token is valid when its RS256 signature checks against one of our keys, `typ` is
`at+jwt`, `iss` is us, it has not expired, `aud` names the resource asked about, and
its client and grant are still in the store.

The signature is checked once per token: the claims of a verified token are kept,
under the SHA-256 of the token, until its `exp` (bounded; only tokens that verified
get in, so garbage cannot fill it), and while the signing keys stay as they were. The
client and grant checks run on every request and cost a `stat` or two (the store's
view), which is how a deletion or revocation, by the CLI process too, takes effect at
once.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from .cache import TTLCache
from .config import Config
from .keys import ALGORITHM, KeyManager
from .models import AccessToken
from .policy import same_resource
from .repositories import ClientRepository, GrantRepository


class InvalidAccessToken(Exception):
    """The token is not (or no longer) valid; the message says why, for logs and the
    `error_description` (never the token itself)."""


#: verified tokens whose claims are kept (each until its `exp`)
MAX_VERIFIED = 10_000


class AccessTokenVerifier:
    def __init__(self, config: Config, keys: KeyManager, clients: ClientRepository, grants: GrantRepository):
        self.config = config
        self.keys = keys
        self.clients = clients
        self.grants = grants
        #: SHA-256 of a token -> (the keys' revision it was verified under, its claims)
        self.verified: TTLCache[bytes, tuple[object, dict[str, Any]]] = TTLCache(MAX_VERIFIED)

    def decode(self, token: str) -> dict[str, Any]:
        """The claims of a token we signed and that has not expired, else raise."""
        if not token or token.count(".") != 2:
            raise InvalidAccessToken("The access token is malformed.")
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        revision = self.keys.revision()
        cached = self.verified.get(digest)  # None once past its `exp`
        if cached is not None and cached[0] == revision:
            return cached[1]
        claims = self._check_signature_and_claims(token)
        self.verified.put(digest, (revision, claims), float(claims["exp"]))
        return claims

    def _check_signature_and_claims(self, token: str) -> dict[str, Any]:
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
