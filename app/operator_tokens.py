"""Access tokens on the operator's side: `issue-token` makes one for testing an MCP
server, and `inspect-token` says whether a token is valid now and, if not, why.

An issued token is an ordinary one: it belongs to a grant made for it (with no refresh
token, expiring with the token), so `/verify`, the gateway and introspection check it
like any other, `delete-client`, `delete-token` or revoking it ends it at once, and
`purge-expired` removes its grant once it has expired.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from joserfc import jwt
from joserfc.errors import JoseError

from .keys import ALGORITHM
from .models import Person, normalize_scope
from .oauth2.tokens import AccessTokenGenerator, TokenSubject
from .policy import same_resource
from .security import new_id

if TYPE_CHECKING:
    from .services import Services


class OperatorTokenError(Exception):
    """A token that cannot be issued as asked; the message is one line."""


def issue_token(
    svc: Services,
    user: str,
    client_id: str,
    scope: str | None = None,
    resource: str | None = None,
    ttl: int | None = None,
) -> tuple[str, dict[str, Any]]:
    """An access token for `user` at `client_id` (a real grant, no refresh token):
    (the token, its grant record)."""
    config = svc.config
    client = svc.clients.get(client_id)
    if client is None:
        raise OperatorTokenError(f"no client {client_id!r}")
    if config.provider == "custom" and svc.users.get(user) is None:
        raise OperatorTokenError(f"no user {user!r}")
    granted = normalize_scope(scope, config.scopes)
    if granted is None:
        raise OperatorTokenError(f"scope must be among {' '.join(config.scopes)!r}, got {scope!r}")
    audience = config.default_resource if resource is None else resource
    if not any(same_resource(audience, offered) for offered in config.resources):
        raise OperatorTokenError(f"resource must be one of {', '.join(config.resources)}, got {audience!r}")
    ttl = config.access_token_ttl if ttl is None else ttl
    if not 1 <= ttl <= config.refresh_token_ttl:
        raise OperatorTokenError(f"--ttl must be between 1 and {config.refresh_token_ttl} seconds")

    grant_id = new_id(18)
    grant = svc.grants.create(grant_id, client.client_id, user, granted, [audience], None, config.provider, ttl)
    generator = AccessTokenGenerator(dataclasses.replace(config, access_token_ttl=ttl), svc.keys)
    person = Person(subject=user, provider=config.provider)
    token = generator.access_token_generator(client, "operator", TokenSubject(person, grant_id, [audience]), granted)
    return token, grant.record


def inspect_token(svc: Services, token: str) -> dict[str, Any]:
    """Whether `token` is valid now, and if not the first reason it is not (signature,
    type, issuer, expiry, audience, client gone, grant revoked), with its header and
    claims as they read (unverified when the signature fails)."""
    header, claims = _unverified(token)
    report: dict[str, Any] = {"valid": False, "reason": None, "header": header, "claims": claims}
    if claims is None:
        report["reason"] = "not a JWT (a refresh token or something else: only access tokens can be inspected)"
        return report
    try:
        decoded = jwt.decode(token, svc.keys.verifiers, algorithms=[ALGORITHM])
    except (JoseError, ValueError, TypeError):
        report["reason"] = "signature: not signed by any of this server's keys"
        return report
    verified = decoded.claims
    exp = verified.get("exp")
    audience = verified.get("aud")
    audiences: list[Any] = audience if isinstance(audience, list) else [audience]
    checks: list[tuple[bool, str]] = [
        (decoded.header.get("typ") == "at+jwt", "type: not an access token (typ is not at+jwt)"),
        (verified.get("iss") == svc.config.issuer, f"issuer: {verified.get('iss')!r} is not {svc.config.issuer!r}"),
        (
            isinstance(exp, (int, float)) and exp > time.time(),
            f"expiry: expired {_ago(exp)}" if isinstance(exp, (int, float)) else "expiry: no exp claim",
        ),
        (
            any(same_resource(a, r) for a in audiences if isinstance(a, str) for r in svc.config.resources),
            f"audience: {verified.get('aud')!r} names none of this server's resources",
        ),
        (svc.clients.get(verified.get("client_id")) is not None, "client gone: its client is no longer registered"),
        (svc.grants.exists(verified.get("grant_id")), "grant revoked: its grant no longer exists"),
    ]
    report["reason"] = next((reason for passed, reason in checks if not passed), None)
    report["valid"] = report["reason"] is None
    return report


def _unverified(token: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A compact JWS's header and payload as JSON objects, unverified (None for what
    does not parse as such)."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None, None
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))) for part in parts[:2])
    except ValueError:
        return None, None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None, None
    return header, claims


def _ago(timestamp: float) -> str:
    seconds = int(time.time() - timestamp)
    return f"{seconds} s ago" if seconds < 120 else f"{seconds // 60} min ago"
