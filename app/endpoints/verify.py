"""GET /verify (ForwardAuth for Traefik, Caddy and nginx) and GET /healthz.

/verify answers 200 with the X-Auth-* headers for a live access token, 401 with an
RFC 9728 `resource_metadata` challenge otherwise, and 403 `insufficient_scope` when
the token lacks a scope named in `?scope=` (whose scopes every challenge names). It
reads no file: the token is a JWT and the store's cache answers whether its client and
grant still exist.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from flask import Blueprint, Response, jsonify, request

from .. import __version__
from ..config import Config
from ..errors import SECURITY_HEADERS, Answer, json_error
from ..forwarded import WSGIEnviron, forwarded_url, peer_is_trusted
from ..oauth2 import InvalidAccessToken
from ..oauth2.rfc9449 import ALGORITHMS, InvalidProof, bound_key
from ..observability import note
from ..policy import InvalidPath, check_path_escapes, resource_for_url
from ..security import access_token
from ..services import services
from ..storage import StoreError
from .metadata import resource_metadata_url
from .once import handed

if TYPE_CHECKING:
    from .. import Services

#: the person's upstream token for the MCP server (app/upstream_tokens.py)
UPSTREAM_TOKEN_HEADER = "X-Auth-Upstream-Token"
#: RFC 6749 §3.3 scope-token characters.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


class NoResource(Exception):
    """The forwarded URL names none of several configured resources."""


def forwarded_resource(config: Config, environ: WSGIEnviron) -> str:
    """The configured resource the original request was for. With one resource, that
    one; with several, the one the (trusted) forwarded URL names after normalisation,
    and `NoResource` when it names none (never "any of them"). InvalidPath when the
    forwarded path holds an encoded slash, backslash or NUL, refused as the gateway
    refuses it (`check_path_escapes`): the proxy's upstream may decode it."""
    url = forwarded_url(config, environ)
    if url is not None:
        check_path_escapes(url.raw_path.partition("?")[0])
    if len(config.resources) == 1:
        return config.default_resource
    try:
        resource = resource_for_url(config, url.scheme, url.host, url.raw_path) if url else None
    except InvalidPath:
        resource = None
    if resource is None:
        raise NoResource
    return resource


def required_scope(environ: WSGIEnviron) -> str | None:
    """`?scope=` (scopes the token must hold), or None when it is not scope tokens."""
    scope = next((v for k, v in parse_qsl(environ.get("QUERY_STRING", "")) if k == "scope"), "")
    return scope if all(SCOPE_TOKEN.match(s) for s in scope.split(" ") if s) else None


def quoted(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string: backslash before `"` and `\\`, control
    characters dropped, so nothing a client sent can end the header or the string."""
    kept = "".join(c for c in value if c == "\t" or (" " <= c <= "~"))
    return '"' + kept.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Refusal:
    """Why a token does not pass: an RFC 6750 §3 (or RFC 9449 §7.1) challenge to answer."""

    status: int
    error: str | None  # None when no token was sent (RFC 6750 §3.1)
    description: str
    scope: str = ""
    #: the challenge's scheme: `DPoP` for a request or token that is DPoP (RFC 9449 §7.1)
    scheme: str = "Bearer"


#: RFC 9449 §7.1: a DPoP challenge names the proof algorithms taken
DPOP_ALGS = f"algs={quoted(' '.join(ALGORITHMS))}"


def challenge(config: Config, resource: str, refusal: Refusal, headers: dict[str, str] | None = None) -> Answer:
    """An RFC 6750 §3 challenge with the RFC 9728 pointer to our resource metadata,
    as a WSGI answer. With no token at all there is no error code (RFC 6750 §3.1)."""
    params = [f"error={quoted(refusal.error)}"] if refusal.error else []
    params.append(f"resource_metadata={quoted(resource_metadata_url(config, resource))}")
    if refusal.scope:
        params.append(f"scope={quoted(refusal.scope)}")
    if refusal.error:
        params.append(f"error_description={quoted(refusal.description)}")
    if refusal.scheme == "DPoP":
        params.append(DPOP_ALGS)
    return json_error(
        refusal.status,
        refusal.error or "invalid_request",
        refusal.description,
        {"WWW-Authenticate": f"{refusal.scheme} " + ", ".join(params), **(headers or {})},
    )


#: the method and public URL a request was for (`htm`, `htu`: RFC 9449 §4.3), or None
#: when they cannot be known
Target = Callable[[WSGIEnviron], "tuple[str, str] | None"]


def forwarded_target(config: Config, environ: WSGIEnviron) -> tuple[str, str] | None:
    """/verify's `Target`: the URL and method a trusted proxy forwarded (X-Forwarded-*;
    the method is the one /verify is asked with when no X-Forwarded-Method is sent, as
    nginx's auth_request asks with the original method)."""
    url = forwarded_url(config, environ)
    if url is None:
        return None
    method = environ.get("HTTP_X_FORWARDED_METHOD") or environ.get("REQUEST_METHOD") or ""
    return method.strip().upper(), f"{url.scheme}://{url.host}{url.raw_path}"


def dpop_refusal(
    svc: Services, environ: WSGIEnviron, claims: dict, scheme: str, token: str, target: Target, scope: str
) -> Refusal | None:
    """RFC 9449 §7: a DPoP-bound token passes only as `DPoP` with a proof of its key
    for this request; a token that is not bound, only as `Bearer`."""
    jkt = bound_key(claims)
    if scheme == "bearer":
        if jkt is None:
            return None
        return Refusal(
            401, "invalid_token", "This access token is DPoP-bound: send it as DPoP with a proof.", scope, "DPoP"
        )
    if jkt is None:
        return Refusal(401, "invalid_token", "This access token is not DPoP-bound: send it as Bearer.", scope, "DPoP")
    where = target(environ)
    if where is None:
        description = "The URL this request was for is unknown (no X-Forwarded-* from a trusted proxy)."
        return Refusal(401, "invalid_dpop_proof", description, scope, "DPoP")
    try:
        svc.server.dpop.check(environ.get("HTTP_DPOP"), where[0], where[1], access_token=token, jkt=jkt)
    except InvalidProof as exc:
        return Refusal(401, "invalid_dpop_proof", str(exc), scope, "DPoP")
    return None


#: where `check_bearer` leaves the grant of the token it passed (the gateway's per-grant
#: stream cap reads it; a client's header can never name this environ key)
VERIFIED_GRANT = "mcp_oauth.verified_grant"


def check_bearer(
    svc: Services,
    environ: WSGIEnviron,
    resource: str,
    target: Target,
    scope: str = "",
    *,
    upstream_token: bool = True,
) -> dict[str, str] | Refusal:
    """The X-Auth-* headers for the request's access token (Bearer, or DPoP with its
    proof for `target`), or why it is refused. Shared by /verify and the gateway. With
    OAUTH_UPSTREAM_TOKENS and `upstream_token`, the person's upstream token too, for
    the MCP server (app/upstream_tokens.py)."""
    presented = access_token(environ)
    # The scopes a request needs go in its 401 too, so a client asks for those
    # (RFC 6750 §3; the MCP authorization spec's scope selection reads them first).
    if presented is None:
        return Refusal(401, None, "An access token is required.", scope)
    scheme, token = presented
    try:
        access = svc.verifier.verify(token, resource)
    except InvalidAccessToken as exc:
        return Refusal(401, "invalid_token", str(exc), scope, "DPoP" if scheme == "dpop" else "Bearer")
    # After the verified-token cache, on every request: the cache keeps a token's
    # claims, never the outcome of a proof (RFC 9449 §7).
    refused = dpop_refusal(svc, environ, access.claims, scheme, token, target, scope)
    if refused is not None:
        return refused
    subject = str(access.claims.get("sub", ""))
    note(client_id=access.client_id, subject=subject)
    if set(scope.split()) - set(access.get_scope().split()):
        return Refusal(403, "insufficient_scope", "The access token lacks a required scope.", scope)
    grant_id = access.claims.get("grant_id")
    environ[VERIFIED_GRANT] = grant_id if isinstance(grant_id, str) else ""
    headers = {
        "X-Auth-Subject": subject,
        "X-Auth-Client-Id": access.client_id,
        "X-Auth-Scope": access.get_scope(),
    }
    if svc.upstream_tokens is not None and upstream_token:
        value = svc.upstream_tokens.header_for(grant_id)
        if value is not None:
            headers[UPSTREAM_TOKEN_HEADER] = value
    return headers


#: on every 200 from /verify
PASSED_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-store",
    **SECURITY_HEADERS,
}
PASSED = "200 OK"


def judge(svc: Services, environ: WSGIEnviron) -> Answer:
    """/verify's answer to a request, whoever sends it: the fast front (app/hotpath.py)
    when it passes, else the view (app/endpoints/once.py)."""
    scope = required_scope(environ)
    if scope is None:
        return json_error(400, "invalid_request", "scope must be space-separated scope tokens.")
    try:
        resource = forwarded_resource(svc.config, environ)
    except NoResource:
        return json_error(403, "invalid_target", "The request names no resource this server protects.")
    except InvalidPath:
        return json_error(400, "invalid_request", "The forwarded path is not a valid URI path.")
    # The upstream token goes to the proxy only: /verify asked by anyone else (a
    # client calling it itself) never gets it.
    target = functools.partial(forwarded_target, svc.config)
    result = check_bearer(svc, environ, resource, target, scope, upstream_token=peer_is_trusted(svc.config, environ))
    if isinstance(result, Refusal):
        return challenge(svc.config, resource, result)
    return PASSED, [*result.items(), *PASSED_HEADERS.items(), ("Content-Length", "0")], [b""]


bp = Blueprint("verify", __name__)


@bp.route("/verify", methods=["GET", "HEAD", "POST"])
def verify() -> Response:
    environ = request.environ
    status, headers, body = handed(environ, judge) or judge(services(), environ)
    return Response(body, status=status, headers=headers)


@bp.get("/healthz")
def healthz() -> Response:
    store = services().store
    try:
        store.check()
        store.check_writable()
    except StoreError:
        response = jsonify(status="error", version=__version__, error="the store cannot be read or written")
        response.status_code = 503
        response.headers["Cache-Control"] = "no-store"
        return response
    return jsonify(status="ok", version=__version__)
