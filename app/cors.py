"""CORS for the endpoints browser-based MCP clients call directly: discovery, JWKS,
registration, token and revocation, and the gateway's MCP path. None of them reads a
cookie, so any origin may call them. The pages (login, consent) and /verify get no
CORS headers."""

from __future__ import annotations

import re

from flask import Flask, Response, request

from .config import Config

HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, MCP-Protocol-Version",
    "Access-Control-Expose-Headers": "WWW-Authenticate",
    "Access-Control-Max-Age": "600",
}

#: The gateway (app/endpoints/gateway/): the request headers of MCP's Streamable HTTP
#: transport (2026-07-28: Mcp-Method, Mcp-Name, Mcp-Param-*; before it, the session
#: and resumption headers) besides the token and the content negotiation.
GATEWAY_REQUEST_HEADERS = (
    "Authorization", "Content-Type", "Accept", "Mcp-Method", "Mcp-Name", "MCP-Protocol-Version",
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


def init_app(app: Flask, config: Config) -> None:
    prefix = config.issuer_path
    api = tuple(prefix + p for p in ("/register", "/token", "/revoke", "/jwks.json"))

    @app.after_request
    def add_cors(response: Response) -> Response:
        path = request.path
        if "/.well-known/" in path or path.startswith(api):
            response.headers.update(HEADERS)
        return response
