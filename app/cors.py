"""CORS for the endpoints browser-based MCP clients call directly: discovery, JWKS,
registration, token and revocation. None of them reads a cookie, so any origin may
call them. The pages (login, consent) and /verify get no CORS headers."""

from __future__ import annotations

from flask import Flask, Response, request

from .config import Config

HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, MCP-Protocol-Version",
    "Access-Control-Expose-Headers": "WWW-Authenticate",
    "Access-Control-Max-Age": "600",
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
