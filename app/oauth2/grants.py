"""The two grants this server offers (OAuth 2.1): authorization code with PKCE, with
the code retry window and replay revocation (RFC 6749 §4.1.2), and refresh tokens,
rotated on every use with a grace window and replay detection (RFC 9700 §4.14.2).

Authlib validates the requests; these classes keep the state: codes in
`server.codes`, grants in the grant repository.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from authlib.oauth2.rfc6749 import (
    InvalidClientError,
    InvalidGrantError,
    InvalidScopeError,
    OAuth2Error,
    OAuth2Request,
    grants,
)

from ..models import AuthorizationCode, Client, Grant, Person
from ..observability import REPLAYS, TOKENS_ISSUED, audit, note
from ..policy import TOKEN_AUTH_METHODS, requested_scopes
from ..providers.base import browser_id
from ..security import new_id
from .rfc8707 import resolve_resources
from .rfc9449 import bind_token_request
from .tokens import TokenSubject

if TYPE_CHECKING:
    from .server import OAuthServer


class _TokenIssuing:
    """Shared by both grants: sign the access token for a grant."""

    server: OAuthServer
    request: OAuth2Request
    GRANT_TYPE: str

    def _issue(self, client: Client, subject: TokenSubject, scope: str, refresh: bool) -> dict:
        jkt = getattr(self.request, "dpop_jkt", None)  # RFC 9449: rfc9449.bind_token_request
        if jkt:
            subject = replace(subject, jkt=jkt)
        return self.server.generate_token(
            grant_type=self.GRANT_TYPE,
            client=client,
            user=subject,
            scope=scope,
            include_refresh_token=refresh,
        )

    def _binds_refresh(self, client: Client) -> str | None:
        """RFC 9449 §5: a public client's refresh token is bound to the key of the
        proof it got it with (a confidential client's is bound by its authentication)."""
        return getattr(self.request, "dpop_jkt", None) if client.is_public else None


def issued(event: str, grant_type: str, client_id: str, subject: str, grant_id: str, token: dict) -> None:
    """Count and audit an access token issued (never the token itself)."""
    TOKENS_ISSUED.labels(grant_type).inc()
    note(client_id=client_id, subject=subject)
    audit(event, client_id=client_id, subject=subject, grant_id=grant_id, scope=token.get("scope"))


class AuthorizationCodeGrant(_TokenIssuing, grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS

    def generate_authorization_code(self) -> str:
        # 256 bits in one read of the OS's CSPRNG (RFC 6749 §10.10); Authlib's default
        # draws each of its 48 characters with a SystemRandom call of its own.
        return secrets.token_urlsafe(32)

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        data = request.payload.data
        user: Person = request.user
        extra: dict = {"provider": user.provider}
        if self.server.upstream_tokens is not None:
            # The person's upstream token from this browser's login goes with the code
            # to the grant it makes (app/upstream_tokens.py).
            upstream = self.server.upstream_tokens.take_for_code(browser_id(), code)
            if upstream is not None:
                extra["upstream"] = upstream
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
                extra=extra,
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
        # After the replay rules: a replayed code revokes its grant whatever its proof.
        bind_token_request(self.server.dpop, self.request)

    def _refuse_replay(self, code: AuthorizationCode | None) -> None:
        """RFC 6749 §4.1.2: a code used twice revokes what it issued."""
        if code is not None and code.redeemed_at is not None:
            revoked = self.server.grants.revoke(code.grant_id)
            REPLAYS.labels("authorization_code").inc()
            audit(
                "replay.detected",
                logging.WARNING,
                credential="authorization_code",
                client_id=code.client_id,
                subject=code.subject,
                grant_id=code.grant_id,
                grant_revoked=revoked,
            )
            with self.server.codes.redeeming(code.code) as current:
                if current is not None:
                    current.response = None

    def create_token_response(self) -> tuple[int, dict, list]:
        client: Client = self.request.client
        with self.server.codes.redeeming(self.request.authorization_code.code) as code:
            if code is None:  # expired (or its client deleted) since it was validated
                raise InvalidGrantError("The authorization code is no longer valid.")
            if code.redeemed_at is not None:
                if code.response is None:
                    raise InvalidGrantError("The authorization code was already used.")
                return 200, dict(code.response), self.TOKEN_RESPONSE_HEADER
            # Used first, then granted: a used client is never evicted at the client
            # cap, so its grant cannot be left behind by an eviction meanwhile.
            if not self.server.clients.touch(client):
                raise InvalidClientError("The client is no longer registered; register again.")
            person = self.authenticate_user(code)
            self.request.user = person
            subject = TokenSubject(person, grant_id=new_id(18), resource=code.resource)
            token = self._issue(client, subject, code.scope, client.check_grant_type("refresh_token"))
            self.server.grants.create(
                grant_id=subject.grant_id,
                client_id=client.client_id,
                subject=code.subject,
                scope=token.get("scope", code.scope),
                resource=code.resource,
                refresh_token=token.get("refresh_token"),
                provider=person.provider,
                dpop_jkt=self._binds_refresh(client),
            )
            upstream = code.extra.pop("upstream", None)  # the code keeps it no longer
            if upstream is not None and self.server.upstream_tokens is not None:
                self.server.upstream_tokens.keep_for_grant(subject.grant_id, code.code, upstream)
            code.redeemed_at = time.time()
            code.grant_id = subject.grant_id
            code.response = dict(token)
        issued("token.issued", self.GRANT_TYPE, client.client_id, code.subject, subject.grant_id, token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Kept (marked redeemed) until it expires, for replay detection."""

    def authenticate_user(self, authorization_code: AuthorizationCode) -> Person:
        return Person(authorization_code.subject, authorization_code.extra.get("provider", ""))


class RefreshTokenGrant(_TokenIssuing, grants.RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = TOKEN_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def validate_token_request(self) -> None:
        super().validate_token_request()
        bind_token_request(self.server.dpop, self.request)

    def authenticate_refresh_token(self, refresh_token: str) -> Grant | None:
        return self.server.grants.present_refresh_token(refresh_token)

    def authenticate_user(self, refresh_token: Grant) -> Person:
        return Person(refresh_token.subject, refresh_token.record.get("provider", ""))

    def _requested_scope(self) -> list[str]:
        return requested_scopes(self.request.payload.scope)

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
        person = self.authenticate_user(grant)
        self.request.user = person
        token = self._issue(client, TokenSubject(person, grant.grant_id, resource), scope, refresh=True)
        if not self.server.grants.rotate(grant, token["refresh_token"], dpop_jkt=self._binds_refresh(client)):
            raise InvalidGrantError("The refresh token is no longer valid.")
        self.server.clients.touch(client)
        issued("token.refreshed", self.GRANT_TYPE, client.client_id, grant.subject, grant.grant_id, token)
        return 200, token, self.TOKEN_RESPONSE_HEADER

    def revoke_old_credential(self, refresh_token: Grant) -> None:
        """Done atomically by `GrantRepository.rotate`."""
