"""Gateway mode: OAUTH_RESOURCE_PATH and below, checked like /verify, then proxied to
OAUTH_UPSTREAM_URL as a stream in both directions by `upstream.Upstream` (its HTTP/1.1
client, the stream relay and what is passed on).

Every MCP request passes here, so the plain case (GET, POST or DELETE with a token
that passes) is answered in front of Flask (`Gateway`, called by app/hotpath.py), at
the WSGI level; everything else (a refused token, a bad path, OPTIONS, HEAD, a body of
unknown length) is answered by the Flask view. Both judge a request with
`Gateway.judge`, once (app/endpoints/once.py), and forward through `Upstream.forward`,
which works on the WSGI environ.

The client's `Authorization` header is never passed upstream (MCP forbids token
passthrough); the upstream gets `X-Auth-Subject`, `X-Auth-Client-Id` and `X-Auth-Scope`
instead, and any such headers the client sent are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, request
from werkzeug.routing import PathConverter
from werkzeug.wsgi import get_content_length

from ...config import Config
from ...cors import GATEWAY_HEADERS, gateway_preflight
from ...errors import Answer, json_error
from ...observability import note
from ...policy import InvalidPath, normalize_path, same_resource, within
from ...routes import path_of
from ...streams import StreamSlots
from ..once import ahead, handed
from ..verify import VERIFIED_GRANT, Refusal, challenge, check_bearer
from .upstream import MAX_BODY, Upstream

if TYPE_CHECKING:
    from ... import Services

__all__ = ["MAX_BODY", "Gateway", "Upstream", "init_app"]


def gateway_resource(config: Config) -> str:
    """The resource URI the gateway path stands for."""
    own = config.issuer + config.resource_path
    return next((r for r in config.resources if same_resource(r, own)), config.default_resource)


@dataclass(frozen=True, slots=True)
class Passage:
    """A request the gateway forwards: `rest` is its normalised, encoded path below the
    resource path ('' or '/…'), `identity` the X-Auth-* headers its token earned,
    `grant` the grant whose stream slots it counts against."""

    rest: str
    identity: dict[str, str]
    grant: str


class Gateway:
    """The gateway's rules (`judge`), and the fast front's part (`__call__`): a GET,
    POST or DELETE below the resource path whose token passes is forwarded in front of
    Flask; whatever else it judged (a refusal, a bad path) it hands to the Flask view
    with its judgement (app/endpoints/once.py), and what it did not judge (another
    method, a body of unknown length) the view judges. The decision is made before
    anything is read or sent."""

    METHODS = frozenset({"GET", "POST", "DELETE"})

    def __init__(self, svc: Services, upstream: Upstream, prefix: str):
        self.services = svc
        self.upstream = upstream
        self.config = svc.config
        #: the resource path as routed (the issuer's path included), from the URL map
        self.prefix = prefix
        self.resource = gateway_resource(svc.config)
        #: RFC 6750 §3: a challenge names the scopes a token here needs (all the
        #: configured ones: the gateway asks for no particular one)
        self.scope = " ".join(svc.config.scopes)

    def matches(self, path_info: str) -> bool:
        """Whether Flask would route this path to the gateway view."""
        return path_info == self.prefix or path_info.startswith(self.prefix + "/")

    def judge(self, environ: dict[str, Any]) -> Passage | Answer:
        """The request to forward, or the answer to give instead."""
        # Route on the raw path, normalised: the decoded one Flask matched on would
        # let `/mcp/%2e%2e/admin` through as `/mcp/../admin`.
        try:
            path = normalize_path(environ.get("REQUEST_URI") or environ.get("PATH_INFO", ""))
        except InvalidPath:
            return json_error(400, "invalid_request", "The request path is not a valid URI path.")
        if not within(path, self.prefix):
            return json_error(404, "not_found", "Nothing is served at this path.")
        if environ.get("REQUEST_METHOD") == "OPTIONS":
            return (
                PREFLIGHT,
                list(gateway_preflight(environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")).items()),
                [],
            )
        result = check_bearer(self.services, environ, self.resource, self.target)
        if isinstance(result, Refusal):
            return challenge(
                self.config, self.resource, replace(result, scope=result.scope or self.scope), GATEWAY_HEADERS
            )
        return Passage(path[len(self.prefix) :], result, grant_of(environ))

    def target(self, environ: dict[str, Any]) -> tuple[str, str]:
        """The method and public URL of a gateway request (`htm`, `htu`: RFC 9449
        §4.3): the issuer's origin and the path as sent (app.forwarded.IssuerOrigin)."""
        path = environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")
        return environ.get("REQUEST_METHOD", ""), self.config.issuer_origin + path

    def forward(self, environ: dict[str, Any], passage: Passage) -> Answer:
        return self.upstream.forward(environ, passage.rest, passage.identity, self.config, passage.grant)

    def __call__(self, environ: dict[str, Any]) -> Answer | None:
        """The fast front: the upstream's answer, or None for the view to answer."""
        if environ.get("REQUEST_METHOD") not in self.METHODS:
            return None
        length = get_content_length(environ)
        if (length or 0) > MAX_BODY:
            return None
        if length is None and environ.get("HTTP_TRANSFER_ENCODING"):
            return None  # a body of unknown length: Flask reads it under its limit
        passage = ahead(environ, self.judge, environ)
        if not isinstance(passage, Passage):
            return None
        note(endpoint="gateway.proxy")
        return self.forward(environ, passage)


#: a preflight's answer (its headers: app/cors.py)
PREFLIGHT = "204 No Content"


def grant_of(environ: dict[str, Any]) -> str:
    """The `grant_id` of the access token `check_bearer` has just passed ('' when it
    names none)."""
    grant: str = environ.get(VERIFIED_GRANT, "")
    return grant


class AnyPath(PathConverter):
    """Whatever follows the resource path, `//` and dot segments included: the view
    normalises it (Werkzeug's `path` would not match `/mcp//x` at all)."""

    regex = ".*"
    part_isolating = False  # Werkzeug would infer True from a regex without "/"


def init_app(app: Flask, config: Config) -> Gateway | None:
    """The Flask view for every gateway request; the `Gateway` that answers the plain
    ones in front of it (None without OAUTH_UPSTREAM_URL)."""
    if not config.upstream_url:
        return None
    slots = StreamSlots(config.max_streams, config.max_streams_per_grant)
    upstream = Upstream(config.upstream_url, config.upstream_timeout, slots)
    bp = Blueprint("gateway", __name__, url_prefix=config.issuer_path)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]

    app.url_map.converters["anything"] = AnyPath

    @bp.route(config.resource_path, defaults={"rest": ""}, methods=methods, strict_slashes=False)
    @bp.route(f"{config.resource_path}/<anything:rest>", methods=methods)
    def proxy(rest: str) -> Response:
        request.max_content_length = MAX_BODY
        environ = request.environ
        verdict = handed(environ, gateway.judge) or gateway.judge(environ)
        if isinstance(verdict, Passage):
            verdict = gateway.forward(environ, verdict)
        status, headers, body = verdict
        return Response(body, status=status, headers=headers, direct_passthrough=True)

    app.register_blueprint(bp)
    gateway = Gateway(app.extensions["oauth"], upstream, path_of(app, "gateway.proxy"))
    app.extensions["gateway_upstream"] = upstream  # wsgi.py ends its streams at a stop
    return gateway
