"""Gateway mode: OAUTH_RESOURCE_PATH and below, checked like /verify, then proxied to
OAUTH_UPSTREAM_URL as a stream in both directions (MCP Streamable HTTP: JSON or SSE
responses to POST, long-lived GET SSE streams, DELETE of a session).

The client's `Authorization` header is never passed upstream (MCP forbids token
passthrough); the upstream gets `X-Auth-Subject`, `X-Auth-Client-Id` and `X-Auth-Scope`
instead, and any such headers the client sent are dropped. Each open stream holds one
waitress thread, so OAUTH_THREADS must exceed the number of concurrent streams.
"""

from __future__ import annotations

import http.client
import logging
from collections.abc import Iterator
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, jsonify, request

from ..config import Config
from .verify import check_request

log = logging.getLogger(__name__)

#: RFC 9110 §7.6.1 hop-by-hop headers, plus what we set or must not forward.
DROPPED_REQUEST_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "authorization", "cookie", "content-length",
    "x-auth-subject", "x-auth-client-id", "x-auth-scope",
}  # fmt: skip
DROPPED_RESPONSE_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "set-cookie",
}  # fmt: skip
CONNECT_TIMEOUT = 10
MAX_BODY = 32 * 1024 * 1024
CHUNK = 64 * 1024
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, Accept, Mcp-Session-Id, MCP-Protocol-Version, "
    "Last-Event-ID",
    "Access-Control-Expose-Headers": "Mcp-Session-Id, WWW-Authenticate",
}


def gateway_resource(config: Config) -> str:
    """The resource URI the gateway path stands for."""
    own = config.issuer + config.resource_path
    return next((r for r in config.resources if r.rstrip("/") == own), config.default_resource)


def _error(status: int, error: str, description: str) -> Response:
    response = jsonify(error=error, error_description=description)
    response.status_code = status
    return response


class Upstream:
    """One request to the upstream MCP server over http.client, streamed."""

    def __init__(self, base_url: str, response_timeout: int):
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.response_timeout = response_timeout

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        return cls(self.host, self.port, timeout=CONNECT_TIMEOUT)

    def forward(self, rest: str, auth_headers: dict[str, str]) -> Response:
        path = self.base_path + (f"/{rest}" if rest else "")
        if request.query_string:
            path += "?" + request.query_string.decode("latin-1")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROPPED_REQUEST_HEADERS}
        headers.update(auth_headers)
        headers["X-Forwarded-For"] = request.remote_addr or ""
        headers["X-Forwarded-Host"] = request.host
        body = None
        if request.content_length:
            headers["Content-Length"] = str(request.content_length)
            body = request.stream
        elif request.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = request.stream  # http.client re-chunks a body of unknown length

        conn = self.connect()
        try:
            conn.connect()
            conn.sock.settimeout(self.response_timeout)
            conn.request(request.method, path, body=body, headers=headers)
            upstream = conn.getresponse()
        except TimeoutError:
            conn.close()
            return _error(504, "gateway_timeout", "The MCP server did not answer in time.")
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            log.warning("upstream %s:%s unreachable: %s", self.host, self.port, type(exc).__name__)
            return _error(502, "bad_gateway", "The MCP server is unreachable.")

        # Headers are in: from now on the body may idle for as long as the stream
        # lives (an SSE stream waiting for server notifications).
        if conn.sock is not None:
            conn.sock.settimeout(None)
        response_headers = [(k, v) for k, v in upstream.getheaders() if k.lower() not in DROPPED_RESPONSE_HEADERS]
        is_event_stream = (upstream.getheader("Content-Type") or "").startswith(
            "text/event-stream"
        ) and upstream.getheader("Content-Length") is None
        return Response(
            _stream(conn, upstream, open_event_stream=is_event_stream),
            status=upstream.status,
            headers=response_headers,
            direct_passthrough=True,
        )


def _stream(
    conn: http.client.HTTPConnection, upstream: http.client.HTTPResponse, open_event_stream: bool
) -> Iterator[bytes]:
    """The upstream body, passed on as it arrives (read1 returns what is there)."""
    try:
        if open_event_stream:
            # A WSGI server sends the headers with the first non-empty chunk (PEP 3333),
            # but an SSE stream may carry no event for a long time while the client
            # waits for its headers. An SSE comment line is ignored by every parser.
            yield b":\n\n"
        while True:
            try:
                chunk = upstream.read1(CHUNK)
            except (TimeoutError, OSError, http.client.HTTPException):
                return
            if not chunk:
                return
            yield chunk
    finally:
        conn.close()


def init_app(app: Flask, config: Config) -> None:
    if not config.upstream_url:
        return
    upstream = Upstream(config.upstream_url, config.upstream_timeout)
    resource = gateway_resource(config)
    bp = Blueprint("gateway", __name__, url_prefix=config.issuer_path)
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]

    @bp.route(config.resource_path, defaults={"rest": ""}, methods=methods, strict_slashes=False)
    @bp.route(f"{config.resource_path}/<path:rest>", methods=methods)
    def proxy(rest: str) -> Response:
        if request.method == "OPTIONS":
            return Response(status=204, headers=CORS_HEADERS)
        request.max_content_length = MAX_BODY
        result = check_request(resource)
        if isinstance(result, Response):
            result.headers["Access-Control-Allow-Origin"] = "*"
            result.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
            return result
        return upstream.forward(rest, result)

    app.register_blueprint(bp)
