"""CORS for the endpoints browser-based MCP clients call directly, each declared
`cross_origin` where its route is (discovery, JWKS, registration, token and revocation),
and the gateway's MCP path (its own headers, below). None of them reads a cookie, so any
origin may call them. The pages (login, consent), /verify and introspection get no CORS
headers."""

from __future__ import annotations

import re

from flask import Flask, Response, request

from .routes import Routes

HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    # DPoP: RFC 9449 proofs at /token
    "Access-Control-Allow-Headers": "Authorization, Content-Type, MCP-Protocol-Version, DPoP",
    "Access-Control-Expose-Headers": "WWW-Authenticate",
    "Access-Control-Max-Age": "600",
}

#: The gateway (app/endpoints/gateway/): the request headers of MCP's Streamable HTTP
#: transport (2026-07-28: Mcp-Method, Mcp-Name, Mcp-Param-*; before it, the session
#: and resumption headers) besides the token (and its RFC 9449 proof) and the content
#: negotiation.
GATEWAY_REQUEST_HEADERS = (
    "Authorization", "DPoP", "Content-Type", "Accept", "Mcp-Method", "Mcp-Name", "MCP-Protocol-Version",
    "Mcp-Session-Id", "Last-Event-ID",
)  # fmt: skip
#: One header per tool parameter a server asks to see (`Mcp-Param-<name>`); CORS has no
#: wildcard for a prefix, so a preflight is answered with the ones it asks for.
GATEWAY_HEADER_PREFIX = "mcp-param-"
#: on every gateway answer our server makes (a preflight, a challenge)
GATEWAY_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Expose-Headers": "Mcp-Session-Id, WWW-Authenticate",
}
_GATEWAY_ALLOWED = ", ".join(GATEWAY_REQUEST_HEADERS)
#: an RFC 9110 §5.6.2 token: all a header name may be
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def gateway_preflight(requested: str) -> dict[str, str]:
    """The answer to a gateway preflight whose `Access-Control-Request-Headers` is
    `requested` (Fetch §3.2.3, a comma-separated list): the fixed headers, and those
    asked for that start with `Mcp-Param-`."""
    params = [
        name
        for name in (part.strip() for part in requested.split(","))
        if name.lower().startswith(GATEWAY_HEADER_PREFIX) and _TOKEN.match(name)
    ]
    allowed = ", ".join([_GATEWAY_ALLOWED, *params])
    return {
        **GATEWAY_HEADERS,
        "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
        "Access-Control-Allow-Headers": allowed,
        # The answer depends on the question: a cache must not give it to another.
        "Vary": "Access-Control-Request-Headers",
    }


#: RFC 8615: discovery looks here, and a probe that finds nothing (a 404) must be
#: readable by a browser-based client too, to move on to the next place it looks
WELL_KNOWN = "/.well-known/"


def init_app(app: Flask, routes: Routes) -> None:
    """CORS on the endpoints declared `cross_origin` (app/routes.py), read from the URL
    map once every route is registered."""
    endpoints, paths = routes.cross_origin, routes.cross_origin_paths

    @app.after_request
    def add_cors(response: Response) -> Response:
        rule = request.url_rule
        if rule is not None:
            allowed = rule.endpoint in endpoints
        else:  # routed nowhere: a 404, or a 405 at a path that is routed
            allowed = request.path in paths or WELL_KNOWN in request.path
        if allowed:
            response.headers.update(HEADERS)
        return response
