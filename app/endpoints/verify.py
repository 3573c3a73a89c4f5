"""GET /verify (ForwardAuth for Traefik, Caddy and nginx) and GET /healthz.

/verify answers 200 with the X-Auth-* headers for a live access token, 401 with an
RFC 9728 `resource_metadata` challenge otherwise, and 403 `insufficient_scope` when
the token lacks a scope named in `?scope=` (whose scopes every challenge names). It
reads no file: the token is a JWT and the store's cache answers whether its client and
grant still exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl

from flask import Blueprint, Response, jsonify, request

from .. import __version__
from ..config import Config
from ..errors import SECURITY_HEADERS, error_response
from ..forwarded import WSGIEnviron, forwarded_url
from ..oauth2 import InvalidAccessToken
from ..observability import note
from ..policy import InvalidPath, check_path_escapes, resource_for_url
from ..security import bearer_token
from ..services import services
from ..storage import StoreError
from .metadata import resource_metadata_url

if TYPE_CHECKING:
    from .. import Services

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
    """Why a bearer token does not pass: an RFC 6750 §3 challenge to answer."""

    status: int
    error: str | None  # None when no token was sent (RFC 6750 §3.1)
    description: str
    scope: str = ""


def challenge(config: Config, resource: str, refusal: Refusal) -> Response:
    """An RFC 6750 §3 challenge with the RFC 9728 pointer to our resource metadata.
    With no token at all there is no error code (RFC 6750 §3.1)."""
    params = [f"error={quoted(refusal.error)}"] if refusal.error else []
    params.append(f"resource_metadata={quoted(resource_metadata_url(config, resource))}")
    if refusal.scope:
        params.append(f"scope={quoted(refusal.scope)}")
    if refusal.error:
        params.append(f"error_description={quoted(refusal.description)}")
    return error_response(
        refusal.status,
        refusal.error or "invalid_request",
        refusal.description,
        {"WWW-Authenticate": "Bearer " + ", ".join(params)},
    )


def check_bearer(svc: Services, environ: WSGIEnviron, resource: str, scope: str = "") -> dict[str, str] | Refusal:
    """The X-Auth-* headers for the request's bearer token, or why it is refused.
    Shared by /verify (in Flask and on the hot path) and the gateway."""
    token = bearer_token(environ)
    # The scopes a request needs go in its 401 too, so a client asks for those
    # (RFC 6750 §3; the MCP authorization spec's scope selection reads them first).
    if token is None:
        return Refusal(401, None, "An access token is required.", scope)
    try:
        access = svc.verifier.verify(token, resource)
    except InvalidAccessToken as exc:
        return Refusal(401, "invalid_token", str(exc), scope)
    subject = str(access.claims.get("sub", ""))
    note(client_id=access.client_id, subject=subject)
    if set(scope.split()) - set(access.get_scope().split()):
        return Refusal(403, "insufficient_scope", "The access token lacks a required scope.", scope)
    return {
        "X-Auth-Subject": subject,
        "X-Auth-Client-Id": access.client_id,
        "X-Auth-Scope": access.get_scope(),
    }


def verified_headers(svc: Services, environ: WSGIEnviron) -> dict[str, str] | None:
    """/verify's success, when it is one: the headers of the 200 answer. None for any
    other outcome, which the Flask view answers in full."""
    scope = required_scope(environ)
    if scope is None:
        return None
    try:
        result = check_bearer(svc, environ, forwarded_resource(svc.config, environ), scope)
    except (NoResource, InvalidPath):
        return None
    if isinstance(result, Refusal):
        return None
    return {**result, **PASSED_HEADERS}


#: on every 200 from /verify, whichever path answered it
PASSED_HEADERS = {
    "Content-Type": "text/plain; charset=utf-8",
    "Cache-Control": "no-store",
    **SECURITY_HEADERS,
}


bp = Blueprint("verify", __name__)


@bp.route("/verify", methods=["GET", "HEAD", "POST"])
def verify() -> Response:
    # A plain GET that passes is answered by the hot path (app/hotpath.py) before
    # it gets here; the same checks run here for everything else.
    svc = services()
    environ = request.environ
    scope = required_scope(environ)
    if scope is None:
        return error_response(400, "invalid_request", "scope must be space-separated scope tokens.")
    try:
        resource = forwarded_resource(svc.config, environ)
    except NoResource:
        return error_response(403, "invalid_target", "The request names no resource this server protects.")
    except InvalidPath:
        return error_response(400, "invalid_request", "The forwarded path is not a valid URI path.")
    result = check_bearer(svc, environ, resource, scope)
    if isinstance(result, Refusal):
        return challenge(svc.config, resource, result)
    return Response(b"", 200, headers={**result, **PASSED_HEADERS})


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
