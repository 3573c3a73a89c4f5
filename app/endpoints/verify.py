"""GET /verify (ForwardAuth for Traefik, Caddy and nginx) and GET /healthz.

/verify answers 200 with the X-Auth-* headers for a live access token, 401 with an
RFC 9728 `resource_metadata` challenge otherwise, and 403 `insufficient_scope` when
the token lacks a scope named in `?scope=`. It reads no file: the token is a JWT and
the store's cache answers whether its client and grant still exist.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, jsonify, request

from .. import services
from ..config import Config
from ..security import bearer_token
from ..storage import StoreError
from ..tokens import InvalidAccessToken
from .metadata import resource_metadata_url


def forwarded_resource(config: Config) -> str | None:
    """The configured resource the original request (X-Forwarded-*) was for, if any."""
    host = request.headers.get("X-Forwarded-Host")
    if not host:
        return None
    proto = request.headers.get("X-Forwarded-Proto", urlsplit(config.issuer).scheme)
    path = urlsplit(request.headers.get("X-Forwarded-Uri", "/")).path
    url = f"{proto}://{host}{path}"
    for resource in config.resources:
        base = resource.rstrip("/")
        if url == base or url.startswith(base + "/"):
            return resource
    return None


def challenge(config: Config, resource: str, status: int, error: str, description: str, scope: str = "") -> Response:
    """An RFC 6750 error with the RFC 9728 pointer to our resource metadata."""
    # The contract's order: error, then resource_metadata (what clients look for).
    params = [f'error="{error}"', f'resource_metadata="{resource_metadata_url(config, resource)}"']
    if scope:
        params.append(f'scope="{scope}"')
    params.append(f'error_description="{description}"')
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    response.headers["WWW-Authenticate"] = "Bearer " + ", ".join(params)
    response.headers["Cache-Control"] = "no-store"
    return response


def check_request(resource: str | None, required_scope: str = "") -> Response | dict[str, str]:
    """The X-Auth-* headers for the request's bearer token, or the error response."""
    svc = services()
    config = svc.config
    target = resource or config.default_resource
    token = bearer_token()
    if token is None:
        return challenge(config, target, 401, "invalid_token", "An access token is required.")
    try:
        access = svc.verifier.verify(token, resource)
    except InvalidAccessToken as exc:
        return challenge(config, target, 401, "invalid_token", str(exc))
    missing = set(required_scope.split()) - set(access.get_scope().split())
    if missing:
        return challenge(
            config, target, 403, "insufficient_scope", "The access token lacks a required scope.", required_scope
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
        result = check_request(forwarded_resource(config), request.args.get("scope", ""))
        if isinstance(result, Response):
            return result
        response = Response(status=200)
        response.headers.update(result)
        response.headers["Cache-Control"] = "no-store"
        return response

    @bp.get("/healthz")
    def healthz() -> Response:
        try:
            services().store.check()
        except StoreError:
            response = jsonify(status="error", error="the store cannot be read")
            response.status_code = 503
            return response
        return jsonify(status="ok")

    app.register_blueprint(bp)
