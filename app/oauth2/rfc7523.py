"""RFC 7523, the JWT profile: client assertions (`private_key_jwt`, §2.2 and §3) for
metadata-document clients that publish keys, and the jwt-bearer grant (§2.1) for
Identity Assertion JWT Authorization Grants (ID-JAG,
draft-ietf-oauth-identity-assertion-authz-grant; the MCP extension
`io.modelcontextprotocol/enterprise-managed-authorization`).

Both are JWTs signed by someone else's key, so both get the same care: an explicit
algorithm list (never the header's word alone), keys fetched behind the metadata
documents' fence and cache (app/cimd.py), `exp` required, and each `jti` accepted once,
in the store's shared state (the `ephemeral` table on PostgreSQL, so a replay through
another instance is refused too).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import warnings
from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc6749 import (
    BaseGrant,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
    TokenEndpointMixin,
)
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import KeySet

from ..cimd import DocumentError, DocumentFetcher, public_key_set
from ..models import Client, Person
from ..observability import REPLAYS, audit
from ..policy import PRIVATE_KEY_JWT, TOKEN_AUTH_METHODS, requested_scopes
from ..security import new_id
from ..storage.base import SharedState
from .grants import issued
from .rfc8707 import resolve_resources
from .tokens import TokenSubject

if TYPE_CHECKING:
    from .server import OAuthServer

log = logging.getLogger(__name__)

#: what a client or an IdP may sign with (RFC 8725 §3.1: an explicit list; no `none`,
#: no HMAC, whose key would be the public one)
ALGORITHMS = ["RS256", "ES256", "EdDSA"]
# RFC 9864 deprecates the name "EdDSA" for "Ed25519", but clients and IdPs still send
# it: it is on the list knowingly, and joserfc's warning on each use says nothing new.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)
#: clock skew allowed on `exp`, `iat` and `nbf`
LEEWAY = 60
#: a client assertion may be valid for at most this long from now (its `jti` is kept
#: that long; a longer-lived one would be a bearer credential in all but name)
MAX_ASSERTION_AHEAD = 300
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ID_JAG_TYP = "oauth-id-jag+jwt"
ID_JAG_PROFILE = "urn:ietf:params:oauth:grant-profile:id-jag"
#: the shared state's kinds for the `jti` seen (each kept until its assertion expires)
CLIENT_ASSERTION_JTI = "client_assertion_jti"
ID_JAG_JTI = "id_jag_jti"
#: in process, a bound the LRU never reaches within an assertion's lifetime
MAX_JTI = 1_000_000


def use_once(state: SharedState, kind: str, issuer: str, jti: object, expires_at: float) -> bool:
    """Record a `jti` of `issuer` until `expires_at`; False when it was already
    recorded (one atomic step in every instance: `SharedState.update`)."""
    key = hashlib.sha256(f"{issuer}\n{jti}".encode("utf-8", "surrogatepass")).hexdigest()

    def mark(seen: Any) -> tuple[Any, float, bool]:
        if seen is not None:
            return seen, float(seen), False
        return expires_at, expires_at, True

    return state.update(kind, key, mark)


def _claims_registry(**options: Any) -> jwt.JWTClaimsRegistry:
    return jwt.JWTClaimsRegistry(leeway=LEEWAY, **options)


class PrivateKeyJWT(JWTBearerClientAssertion):
    """`private_key_jwt` (RFC 7523 §2.2, §3): the client signs an assertion with the
    key its metadata document publishes. `iss` = `sub` = the client id, `aud` our
    issuer or token endpoint, `exp` at most 5 minutes ahead, `jti` once.

    A client without keys (public, or a shipped document standing in for a live one)
    is not authenticated here, and an assertion it sends is not checked: it is a
    public client, which `none` authenticates by its `client_id` as before."""

    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, server: OAuthServer, fetcher: DocumentFetcher | None):
        super().__init__(validate_jti=True, leeway=LEEWAY)
        self.server = server
        self.fetcher = fetcher
        server.clients.store.shared.bound(CLIENT_ASSERTION_JTI, MAX_JTI)

    def __call__(self, query_client: Any, request: Any) -> Client | None:
        data = request.payload.data
        assertion = data.get("client_assertion")
        if data.get("client_assertion_type") != self.CLIENT_ASSERTION_TYPE or not assertion:
            return None
        headers, claims = self.extract_assertion(assertion)
        client_id = claims.get("sub")
        if not isinstance(client_id, str) or data.get("client_id") not in (None, client_id):
            raise InvalidClientError(description="The assertion's sub must be the client_id.")
        client: Client | None = query_client(client_id)
        if client is None:
            raise InvalidClientError(description="The client does not exist on this server.")
        if client.signing_keys is None:
            return None
        request.client = client
        self.process_assertion_claims(assertion, self._keys(client, headers.get("kid")))
        return self.authenticate_client(client)

    def _keys(self, client: Client, kid: object) -> KeySet:
        where = client.signing_keys
        try:
            if isinstance(where, dict):
                return public_key_set(where)
            if self.fetcher is None or not isinstance(where, str):
                raise DocumentError("metadata documents are not fetched here")
            return self.fetcher.key_set(where, kid)
        except DocumentError as exc:
            raise InvalidClientError(description=f"The client's keys cannot be used: {exc}.") from None

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ALGORITHMS)
        except (JoseError, ValueError, TypeError):
            raise InvalidClientError(description="The client assertion's signature does not verify.") from None
        self.verify_claims(token.claims)
        return token.claims

    def get_audiences(self) -> list[str]:
        # RFC 7523 §3: the authorization server, by its issuer or token endpoint URL
        return [self.server.config.issuer, self.server.config.url("/token")]

    def verify_claims(self, claims: dict[str, Any]) -> None:
        client_id = claims["sub"]
        registry = _claims_registry(
            iss={"essential": True, "value": client_id},
            sub={"essential": True, "value": client_id},
            aud={"essential": True, "values": self.get_audiences()},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidClientError(description=f"The client assertion is not acceptable: {exc.description}") from None
        exp = claims["exp"]
        if not isinstance(exp, (int, float)) or exp > time.time() + MAX_ASSERTION_AHEAD + LEEWAY:
            raise InvalidClientError(description="The client assertion may be valid for at most 5 minutes.")
        if not self.validate_jti(claims, claims["jti"]):
            REPLAYS.labels("client_assertion").inc()
            audit("replay.detected", logging.WARNING, credential="client_assertion", client_id=client_id)
            raise InvalidClientError(description="The client assertion was already used.")

    def validate_jti(self, claims: dict[str, Any], jti: object) -> bool:
        state = self.server.clients.store.shared
        return use_once(state, CLIENT_ASSERTION_JTI, claims["sub"], jti, float(claims["exp"]) + LEEWAY)


class TrustedIdentityProviders:
    """The enterprise IdPs of OAUTH_TRUSTED_IDPS: their signing keys, found by
    discovery (OpenID Connect's `/.well-known/openid-configuration`, else RFC 8414's
    path-inserted one) behind the metadata documents' fence and cache."""

    def __init__(self, issuers: tuple[str, ...], fetcher: DocumentFetcher):
        self.issuers = issuers
        self.fetcher = fetcher

    def trusts(self, issuer: object) -> bool:
        return isinstance(issuer, str) and issuer in self.issuers

    def keys(self, issuer: str, kid: object) -> KeySet:
        """Raises DocumentError."""
        return self.fetcher.key_set(self._jwks_uri(issuer), kid)

    def _jwks_uri(self, issuer: str) -> str:
        origin, _, path = issuer.partition("://")[2].partition("/")
        candidates = [
            f"{issuer.rstrip('/')}/.well-known/openid-configuration",
            f"https://{origin}/.well-known/oauth-authorization-server" + (f"/{path}".rstrip("/") if path else ""),
        ]
        reason = "no discovery document"
        for url in candidates:
            try:
                document = self.fetcher.json_at(url)
            except DocumentError as exc:
                reason = str(exc)
                continue
            if isinstance(document, dict) and document.get("issuer") == issuer and document.get("jwks_uri"):
                return str(document["jwks_uri"])
            reason = "its discovery document names another issuer or no jwks_uri"
        raise DocumentError(reason)


class IdentityAssertionGrant(BaseGrant, TokenEndpointMixin):
    """The jwt-bearer grant (RFC 7523 §2.1) for an ID-JAG: `typ` oauth-id-jag+jwt,
    signed by a trusted IdP, `aud` our issuer, `client_id` the client authenticated
    here, `resource` one of ours, `iat` and `exp`, its `jti` once. The person is the
    IdP's `sub`, as a subject of that issuer (`issuer#sub`: issuers hold no `#`, so
    two IdPs cannot name one person); the scope is what was asked, asserted and
    offered at once; no refresh token (the client asks its IdP again)."""

    GRANT_TYPE = JWT_BEARER
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    server: OAuthServer

    def validate_token_request(self) -> None:
        client: Client = self.authenticate_token_endpoint_client()
        self.request.client = client
        assertion = self.request.payload.data.get("assertion")
        if not isinstance(assertion, str) or not assertion:
            raise InvalidRequestError("The jwt-bearer grant needs an assertion.")
        try:
            self.request.id_jag = self._granted(self._verified(assertion, client), client)
        except OAuth2Error as error:
            audit("id_jag.refused", logging.WARNING, client_id=client.client_id, reason=error.description)
            raise

    def _granted(self, claims: dict[str, Any], client: Client) -> tuple[dict[str, Any], str, list[str]]:
        """(the claims, the scope, the resources) of a verified ID-JAG, its `jti` used."""
        offered = self.server.config.scopes
        asked = requested_scopes(self.request.payload.scope)
        asserted = claims.get("scope")
        asserted_scopes = requested_scopes(asserted) if isinstance(asserted, str) else list(offered)
        scope = [s for s in offered if (not asked or s in asked) and s in asserted_scopes]
        if not scope:
            raise InvalidScopeError("No scope is both asked for, granted by the identity provider and offered here.")
        requested = list(self.request.payload.datalist.get("resource", []))
        claimed = claims.get("resource")
        if not claimed:
            raise InvalidGrantError("The assertion names no resource.")
        resource = resolve_resources(claimed if isinstance(claimed, list) else [claimed], self.server.config)
        resource = resolve_resources(requested, self.server.config, resource)
        self._use_once(claims, client)  # last: an assertion refused for another reason is not used up
        return claims, " ".join(scope), resource

    def _use_once(self, claims: dict[str, Any], client: Client) -> None:
        state = self.server.clients.store.shared
        if state.in_process and claims["iat"] < int(self.server.started_at):
            # The replay set lives in this process: an assertion issued before it
            # started may have been used before a restart.
            raise InvalidGrantError("The assertion was issued before this server started; ask for a new one.")
        if not use_once(state, ID_JAG_JTI, claims["iss"], claims["jti"], float(claims["exp"]) + LEEWAY):
            REPLAYS.labels("id_jag").inc()
            audit(
                "replay.detected",
                logging.WARNING,
                credential="id_jag",
                client_id=client.client_id,
                issuer=claims["iss"],
            )
            raise InvalidGrantError("The assertion was already used.")

    def _verified(self, assertion: str, client: Client) -> dict[str, Any]:
        idps: TrustedIdentityProviders = self.server.identity_providers
        try:
            compact = jws.extract_compact(assertion.encode("utf-8", "surrogatepass"))
            header, payload = compact.headers(), json.loads(compact.payload)
        except (JoseError, ValueError, TypeError):
            raise InvalidGrantError("The assertion is not a JWT.") from None
        if header.get("typ") != ID_JAG_TYP:
            raise InvalidGrantError(f"The assertion's typ must be {ID_JAG_TYP}.")
        issuer = payload.get("iss") if isinstance(payload, dict) else None
        if not idps.trusts(issuer):
            raise InvalidGrantError("The assertion's issuer is not a trusted identity provider.")
        assert isinstance(issuer, str)
        try:
            keys = idps.keys(issuer, header.get("kid"))
        except DocumentError as exc:
            raise InvalidGrantError(f"The identity provider's keys cannot be used: {exc}.") from None
        try:
            claims = jwt.decode(assertion, keys, algorithms=ALGORITHMS).claims
        except (JoseError, ValueError, TypeError):
            raise InvalidGrantError("The assertion's signature does not verify.") from None
        registry = _claims_registry(
            iss={"essential": True, "value": issuer},
            sub={"essential": True},
            aud={"essential": True, "value": self.server.config.issuer},
            client_id={"essential": True, "value": client.client_id},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError as exc:
            raise InvalidGrantError(f"The assertion is not acceptable: {exc.description}") from None
        if not isinstance(claims["sub"], str) or not claims["sub"]:
            raise InvalidGrantError("The assertion's sub must be a string.")
        if not isinstance(claims["iat"], (int, float)) or claims["iat"] > time.time() + LEEWAY:
            raise InvalidGrantError("The assertion's iat is in the future.")
        return claims

    def create_token_response(self) -> tuple[int, dict, list]:
        client: Client = self.request.client
        claims, scope, resource = self.request.id_jag
        if not self.server.clients.touch(client):
            raise InvalidClientError("The client is no longer registered; register again.")
        person = Person(f"{claims['iss']}#{claims['sub']}", "id-jag")
        self.request.user = person
        subject = TokenSubject(person, grant_id=new_id(18), resource=resource)
        token = self.server.generate_token(
            grant_type=self.GRANT_TYPE, client=client, user=subject, scope=scope, include_refresh_token=False
        )
        self.server.grants.create(
            grant_id=subject.grant_id,
            client_id=client.client_id,
            subject=person.subject,
            scope=scope,
            resource=resource,
            refresh_token=None,
            provider=person.provider,
            expires_in=int(token.get("expires_in", self.server.config.access_token_ttl)),
        )
        issued("id_jag.accepted", self.GRANT_TYPE, client.client_id, person.subject, subject.grant_id, token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
