"""RFC 9068 JWT access tokens: issued (by the grants) and verified (by /verify,
/introspect, /revoke and the gateway) here.

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

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from ..cache import TTLCache
from ..config import Config
from ..keys import ALGORITHM, KeyManager
from ..models import AccessToken, Client, Grant, Person
from ..policy import same_resource
from ..repositories import ClientRepository, GrantRepository, new_refresh_token


@dataclass(frozen=True)
class TokenSubject:
    """What a token is issued for: the person, the grant it belongs to and the
    resources it may be used at. Handed to Authlib as the token's `user`, so the
    generator reads all it needs from its arguments."""

    person: Person
    grant_id: str
    resource: list[str]
    #: RFC 9449: the thumbprint of the client's DPoP key the token is bound to, if any
    jkt: str | None = None

    def get_user_id(self) -> str:
        return self.person.subject


class AccessTokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 JWT access tokens signed with the current key; `aud` is the resource
    bound at authorization, and `grant_id` ties the token to its grant so that it
    dies with it."""

    def __init__(self, config: Config, keys: KeyManager):
        super().__init__(
            issuer=config.issuer,
            alg=ALGORITHM,
            refresh_token_generator=lambda user, **_: new_refresh_token(user.grant_id),
            expires_generator=config.access_token_ttl,
        )
        self.keys = keys

    def get_jwks(self) -> KeySet:
        return KeySet([self.keys.current])

    def get_audiences(self, client: Client, user: TokenSubject, scope: str) -> str | list[str]:
        return user.resource[0] if len(user.resource) == 1 else user.resource

    def get_extra_claims(self, client: Client, grant_type: str, user: TokenSubject, scope: str) -> dict[str, Any]:
        if user.jkt:  # RFC 9449 §6.1: bound to the key of the token request's proof
            return {"grant_id": user.grant_id, "cnf": {"jkt": user.jkt}}
        return {"grant_id": user.grant_id}

    def generate(
        self, grant_type: str, client: Client, user: TokenSubject | None = None, *args: Any, **kwargs: Any
    ) -> dict:
        token: dict = super().generate(grant_type, client, user, *args, **kwargs)
        if user is not None and user.jkt:
            token["token_type"] = "DPoP"  # RFC 9449 §5
        return token

    def get_jti(self, client: Client, grant_type: str, user: TokenSubject, scope: str) -> str:
        return secrets.token_urlsafe(16)


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
            if not self.keys.reload_for(_key_id(token)):
                raise InvalidAccessToken("The access token signature is invalid.") from None
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


def _key_id(token: str) -> object:
    """The `kid` in a compact JWS's header, unverified (None when there is none)."""
    try:
        header = json.loads(base64.urlsafe_b64decode(token.split(".", 1)[0] + "=="))
    except ValueError:
        return None
    return header.get("kid") if isinstance(header, dict) else None


def find_token(
    verifier: AccessTokenVerifier, grants: GrantRepository, token: str, hint: str | None
) -> AccessToken | Grant | None:
    """An access token (JWT) or the grant of a refresh token, whichever this is, for
    revocation and introspection. A rotated refresh token past its grace window is a
    replay here as at /token: its grant is revoked (RFC 9700 §4.14.2)."""
    if hint != "refresh_token" and token.count(".") == 2:
        try:
            return verifier.verify(token)
        except InvalidAccessToken:
            return None
    return grants.present_refresh_token(token)
