"""Gateway mode: OAUTH_RESOURCE_PATH and below, checked like /verify, then proxied to
OAUTH_UPSTREAM_URL as a stream in both directions by `upstream.Upstream` (its HTTP/1.1
client, the stream relay and what is passed on).

Every MCP request passes here, so the plain case (GET, POST or DELETE with a token
that passes) is answered in front of Flask (`GatewayPath`, called by app/hotpath.py),
at the WSGI level; everything else (a refused token, a bad path, OPTIONS, HEAD, a body
too large) goes on to the Flask view, which answers it in full. Both forward through
`Upstream.forward`, which works on the WSGI environ.

The client's `Authorization` header is never passed upstream (MCP forbids token
passthrough); the upstream gets `X-Auth-Subject`, `X-Auth-Client-Id` and `X-Auth-Scope`
instead, and any such headers the client sent are dropped.
"""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request
from werkzeug.routing import PathConverter
from werkzeug.wsgi import get_content_length

from ... import services
from ...config import Config
from ...cors import GATEWAY_HEADERS, gateway_preflight
from ...errors import error_response
from ...observability import note
from ...policy import InvalidPath, normalize_path, same_resource, within
from ...security import bearer_token
from ...streams import StreamSlots
from ..verify import Refusal, challenge, check_bearer
from .upstream import MAX_BODY, Answer, Upstream

if TYPE_CHECKING:
    from ... import Services

__all__ = ["MAX_BODY", "GatewayPath", "Upstream", "init_app"]


def gateway_resource(config: Config) -> str:
    """The resource URI the gateway path stands for."""
    own = config.issuer + config.resource_path
    return next((r for r in config.resources if same_resource(r, own)), config.default_resource)


class GatewayPath:
    """The gateway's plain case, in front of Flask: a GET, POST or DELETE below the
    resource path whose token passes is forwarded here; None leaves any other
    request to the Flask view (`init_app`), which applies the same rules and answers
    in full. The decision is made before anything is read or sent."""

    METHODS = frozenset({"GET", "POST", "DELETE"})

    def __init__(self, svc: Services, upstream: Upstream):
        self.services = svc
        self.upstream = upstream
        self.config = svc.config
        self.prefix = svc.config.issuer_path + svc.config.resource_path
        self.resource = gateway_resource(svc.config)

    def matches(self, path_info: str) -> bool:
        """Whether Flask would route this path to the gateway view."""
        return path_info == self.prefix or path_info.startswith(self.prefix + "/")

    def __call__(self, environ: dict[str, Any]) -> Answer | None:
        if environ.get("REQUEST_METHOD") not in self.METHODS:
            return None
        try:
            path = normalize_path(environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""))
        except InvalidPath:
            return None
        length = get_content_length(environ)
        if not within(path, self.prefix) or (length or 0) > MAX_BODY:
            return None
        if length is None and environ.get("HTTP_TRANSFER_ENCODING"):
            return None  # a body of unknown length: Flask reads it under its limit
        try:
            result = check_bearer(self.services, environ, self.resource)
        except Exception:  # noqa: BLE001 - e.g. an unreadable store: Flask answers 503
            return None
        if isinstance(result, Refusal):
            return None
        note(endpoint="gateway.proxy")
        return self.upstream.forward(environ, path[len(self.prefix) :], result, self.config, grant_of(environ))


def grant_of(environ: dict[str, Any]) -> str:
    """The `grant_id` claim of the request's bearer token, which `check_bearer` has
    just verified (so its payload is read here without checking it again: a second
    verification would cost a store revision check per request)."""
    token = bearer_token(environ) or ""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    grant = claims.get("grant_id") if isinstance(claims, dict) else None
    return grant if isinstance(grant, str) else ""


class AnyPath(PathConverter):
    """Whatever follows the resource path, `//` and dot segments included: the view
    normalises it (Werkzeug's `path` would not match `/mcp//x` at all)."""

    regex = ".*"
    part_isolating = False  # Werkzeug would infer True from a regex without "/"


def init_app(app: Flask, config: Config) -> GatewayPath | None:
    """The Flask view for every gateway request; the `GatewayPath` that answers the
    plain ones in front of it (None without OAUTH_UPSTREAM_URL)."""
    if not config.upstream_url:
        return None
    slots = StreamSlots(config.max_streams, config.max_streams_per_grant)
    upstream = Upstream(config.upstream_url, config.upstream_timeout, slots)
    resource = gateway_resource(config)
    bp = Blueprint("gateway", __name__, url_prefix=config.issuer_path)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]

    prefix = config.issuer_path + config.resource_path

    app.url_map.converters["anything"] = AnyPath

    @bp.route(config.resource_path, defaults={"rest": ""}, methods=methods, strict_slashes=False)
    @bp.route(f"{config.resource_path}/<anything:rest>", methods=methods)
    def proxy(rest: str) -> Response:
        # Route on the raw path, normalised: the decoded one Flask matched on would
        # let `/mcp/%2e%2e/admin` through as `/mcp/../admin`.
        try:
            path = normalize_path(request.environ.get("REQUEST_URI") or request.full_path)
        except InvalidPath:
            return error_response(400, "invalid_request", "The request path is not a valid URI path.")
        if not within(path, prefix):
            return error_response(404, "not_found", "Nothing is served at this path.")
        if request.method == "OPTIONS":
            asked = request.headers.get("Access-Control-Request-Headers", "")
            return Response(status=204, headers=gateway_preflight(asked))
        request.max_content_length = MAX_BODY
        result = check_bearer(services(), request.environ, resource)
        if isinstance(result, Refusal):
            # RFC 6750 §3: the challenge names the scopes a token here needs (all the
            # configured ones: the gateway asks for no particular one).
            response = challenge(config, resource, replace(result, scope=result.scope or " ".join(config.scopes)))
            response.headers.update(GATEWAY_HEADERS)
            return response
        environ = request.environ
        status, headers, body = upstream.forward(environ, path[len(prefix) :], result, config, grant_of(environ))
        return Response(body, status=status, headers=headers, direct_passthrough=True)

    app.register_blueprint(bp)
    app.extensions["gateway_upstream"] = upstream  # wsgi.py ends its streams at a stop
    return GatewayPath(app.extensions["oauth"], upstream)
