"""GET /verify (ForwardAuth for Traefik, Caddy and nginx) and GET /healthz.

/verify answers 200 with the X-Auth-* headers for a live access token, 401 with an
RFC 9728 `resource_metadata` challenge otherwise, and 403 `insufficient_scope` when
the token lacks a scope named in `?scope=`. It reads no file: the token is a JWT and
the store's cache answers whether its client and grant still exist.
"""

from __future__ import annotations

import re

from flask import Blueprint, Flask, Response, jsonify, request

from .. import services
from ..config import Config
from ..errors import error_response
from ..forwarded import forwarded_url
from ..policy import InvalidPath, resource_for_url
from ..security import bearer_token
from ..storage import StoreError
from ..tokens import InvalidAccessToken
from .metadata import resource_metadata_url

#: RFC 6749 §3.3 scope-token characters.
SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5b\x5d-\x7e]+$")


class NoResource(Exception):
    """The forwarded URL names none of several configured resources."""


def forwarded_resource(config: Config) -> str | None:
    """The configured resource the original request was for. With one resource, that
    one; with several, the one the (trusted) forwarded URL names after normalisation,
    and `NoResource` when it names none (never "any of them")."""
    if len(config.resources) == 1:
        return config.default_resource
    url = forwarded_url(config)
    try:
        resource = resource_for_url(config, url.scheme, url.host, url.raw_path) if url else None
    except InvalidPath:
        resource = None
    if resource is None:
        raise NoResource
    return resource


def quoted(value: str) -> str:
    """An RFC 9110 §5.6.4 quoted-string: backslash before `"` and `\\`, control
    characters dropped, so nothing a client sent can end the header or the string."""
    kept = "".join(c for c in value if c == "\t" or (" " <= c <= "~"))
    return '"' + kept.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(
    config: Config, resource: str, status: int, error: str | None, description: str, scope: str = ""
) -> Response:
    """An RFC 6750 §3 challenge with the RFC 9728 pointer to our resource metadata.
    With no token at all there is no error code (RFC 6750 §3.1)."""
    params = [f"error={quoted(error)}"] if error else []
    params.append(f"resource_metadata={quoted(resource_metadata_url(config, resource))}")
    if scope:
        params.append(f"scope={quoted(scope)}")
    if error:
        params.append(f"error_description={quoted(description)}")
    response = jsonify(error=error or "invalid_request", error_description=description)
    response.status_code = status
    response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(params)
    response.headers["Cache-Control"] = "no-store"
    return response


def check_request(resource: str, required_scope: str = "") -> Response | dict[str, str]:
    """The X-Auth-* headers for the request's bearer token, or the error response."""
    svc = services()
    config = svc.config
    token = bearer_token()
    if token is None:
        return challenge(config, resource, 401, None, "An access token is required.")
    try:
        access = svc.verifier.verify(token, resource)
    except InvalidAccessToken as exc:
        return challenge(config, resource, 401, "invalid_token", str(exc))
    missing = set(required_scope.split()) - set(access.get_scope().split())
    if missing:
        return challenge(
            config, resource, 403, "insufficient_scope", "The access token lacks a required scope.", required_scope
        )
    return {
        "X-Auth-Subject": str(access.claims.get("sub", "")),
        "X-Auth-Client-Id": access.client_id,
        "X-Auth-Scope": access.get_scope(),
    }


def init_app(app: Flask, config: Config) -> None:
    bp = Blueprint("verify", __name__, url_prefix=config.issuer_path)

    @bp.route("/verify", methods=["GET", "HEAD", "POST"])
    def verify() -> Response:
        scope = request.args.get("scope", "")
        if not all(SCOPE_TOKEN.match(s) for s in scope.split(" ") if s):
            return error_response(400, "invalid_request", "scope must be space-separated scope tokens.")
        try:
            resource = forwarded_resource(config)
        except NoResource:
            return error_response(403, "invalid_target", "The request names no resource this server protects.")
        result = check_request(resource, scope)
        if isinstance(result, Response):
            return result
        response = Response(status=200)
        response.headers.update(result)
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/healthz")
    def healthz() -> Response:
        store = services().store
        try:
            store.check()
            store.check_writable()
        except StoreError:
            response = jsonify(status="error", error="the store cannot be read or written")
            response.status_code = 503
            response.headers["Cache-Control"] = "no-store"
            return response
        return jsonify(status="ok")

    app.register_blueprint(bp)
