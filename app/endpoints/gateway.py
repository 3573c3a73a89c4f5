"""Gateway mode: OAUTH_RESOURCE_PATH and below, checked like /verify, then proxied to
OAUTH_UPSTREAM_URL as a stream in both directions (MCP Streamable HTTP: JSON or SSE
responses to POST, long-lived GET SSE streams, DELETE of a session).

Every MCP request passes here, so the plain case (GET, POST or DELETE with a token
that passes) is answered in front of Flask (`GatewayPath`, called by app/hotpath.py),
at the WSGI level; everything else (a refused token, a bad path, OPTIONS, HEAD, a body
too large) goes on to the Flask view, which answers it in full. Both forward through
`Upstream.forward`, which works on the WSGI environ.

The client's `Authorization` header is never passed upstream (MCP forbids token
passthrough); the upstream gets `X-Auth-Subject`, `X-Auth-Client-Id` and `X-Auth-Scope`
instead, and any such headers the client sent are dropped. Each open stream holds one
waitress thread, so OAUTH_THREADS must exceed the number of concurrent streams.
"""

from __future__ import annotations

import http.client
import logging
import select
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, request
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.routing import PathConverter
from werkzeug.wsgi import get_content_length, get_input_stream

from .. import services
from ..config import Config
from ..errors import SECURITY_HEADERS, error_response, json_error
from ..forwarded import client_address
from ..observability import OPEN_STREAMS, UPSTREAM_ERRORS, note
from ..policy import InvalidPath, encode_query, normalize_path, same_resource, within
from .verify import Refusal, challenge, check_bearer

if TYPE_CHECKING:
    from .. import Services

log = logging.getLogger(__name__)

#: a WSGI answer: status line, headers, body
Answer = tuple[str, list[tuple[str, str]], Iterable[bytes]]

#: RFC 9110 §7.6.1 hop-by-hop headers, plus what we set or must not forward: the
#: token, our identity headers, and forwarding headers only we may write.
DROPPED_REQUEST_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "authorization", "cookie", "content-length",
    "x-auth-subject", "x-auth-client-id", "x-auth-scope",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
    "x-forwarded-prefix", "x-forwarded-uri", "x-forwarded-server", "x-real-ip",
}  # fmt: skip
DROPPED_RESPONSE_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "set-cookie",
}  # fmt: skip
CONNECT_TIMEOUT = 10
MAX_BODY = 32 * 1024 * 1024
CHUNK = 64 * 1024
#: an upstream answer of known length up to this is read whole and sent in one piece
WHOLE_BODY = 1024 * 1024
#: kept-alive upstream connections, and how long one may idle (below the keep-alive
#: timeouts of common servers: uvicorn's is 5 s)
MAX_IDLE_CONNECTIONS = 32
MAX_IDLE = 4.0
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
    return next((r for r in config.resources if same_resource(r, own)), config.default_resource)


class Upstream:
    """Requests to the upstream MCP server over http.client, streamed, on kept-alive
    connections (a new TCP connection per MCP request would cost more than the whole
    token check)."""

    def __init__(self, base_url: str, response_timeout: int):
        parts = urlsplit(base_url)
        self.scheme = parts.scheme
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.response_timeout = response_timeout
        self._idle: list[tuple[float, http.client.HTTPConnection]] = []
        self._lock = threading.Lock()

    def connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = cls(self.host, self.port, timeout=CONNECT_TIMEOUT)
        conn.connect()
        if conn.sock is not None:  # requests are written whole; never wait to coalesce
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _checkout(self) -> http.client.HTTPConnection:
        """An idle kept-alive connection, or a new one. One the upstream may have
        closed meanwhile (idle too long, or readable: EOF) is not reused, so that a
        request is never sent into a dead connection and never needs a retry."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                since, conn = self._idle.pop()
            if now - since < MAX_IDLE and conn.sock is not None and not _readable(conn.sock):
                return conn
            conn.close()
        return self.connect()

    def checkin(self, conn: http.client.HTTPConnection, upstream: http.client.HTTPResponse) -> None:
        """Keep a connection whose response was read to its end, unless either side
        said it closes."""
        if upstream.will_close or conn.sock is None:
            conn.close()
            return
        with self._lock:
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append((time.monotonic(), conn))
                return
        conn.close()

    def forward(self, environ: dict[str, Any], rest: str, auth_headers: dict[str, str], config: Config) -> Answer:
        """Forward the request; `rest` is the normalised, encoded path below the
        resource path ('' or '/…')."""
        path = (self.base_path + rest) or "/"
        if environ.get("QUERY_STRING"):
            path += "?" + encode_query(environ["QUERY_STRING"])
        # RFC 9110 §7.6.1: headers the client named in Connection are hop-by-hop too.
        hop_by_hop = {name.strip().lower() for name in environ.get("HTTP_CONNECTION", "").split(",")}
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                name = key[5:].replace("_", "-").title()  # as Werkzeug spells them
            elif key == "CONTENT_TYPE" and value:
                name = "Content-Type"
            else:
                continue
            if name.lower() not in DROPPED_REQUEST_HEADERS and name.lower() not in hop_by_hop:
                headers[name] = value
        headers.update(auth_headers)
        headers["X-Forwarded-For"] = client_address(config, environ)
        headers["X-Forwarded-Host"] = config.issuer_netloc
        headers["X-Forwarded-Proto"] = config.issuer_scheme
        body: Any = None
        length = get_content_length(environ)
        if length:
            headers["Content-Length"] = str(length)
            stream = get_input_stream(environ, max_content_length=MAX_BODY)
            # A small body goes out with the headers in one write: http.client sends a
            # stream's first block separately, and Nagle's algorithm then holds it
            # until the upstream acknowledges the headers.
            body = stream.read() if length <= WHOLE_BODY else stream
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            # http.client re-chunks a body of unknown length
            body = get_input_stream(environ, max_content_length=MAX_BODY)

        conn = None
        try:
            conn = self._checkout()
            assert conn.sock is not None
            conn.sock.settimeout(self.response_timeout)
            conn.request(environ["REQUEST_METHOD"], path, body=body, headers=headers)
            upstream = conn.getresponse()
        except TimeoutError:
            if conn is not None:
                conn.close()
            UPSTREAM_ERRORS.labels("timeout").inc()
            return json_error(504, "gateway_timeout", "The MCP server did not answer in time.")
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            UPSTREAM_ERRORS.labels("unreachable").inc()
            log.warning("upstream %s:%s unreachable: %s", self.host, self.port, type(exc).__name__)
            return json_error(502, "bad_gateway", "The MCP server is unreachable.")

        response_headers = [(k, v) for k, v in upstream.getheaders() if k.lower() not in DROPPED_RESPONSE_HEADERS]
        present = {name.lower() for name, _ in response_headers}
        response_headers += [(k, v) for k, v in SECURITY_HEADERS.items() if k.lower() not in present]
        status = f"{upstream.status} {HTTP_STATUS_CODES.get(upstream.status, 'Unknown')}"
        answer_length = upstream.getheader("Content-Length")
        if answer_length is not None and answer_length.isdigit() and int(answer_length) <= WHOLE_BODY:
            # A small answer of known length (a JSON-RPC response): read it at once,
            # under the response timeout, and give the connection back.
            try:
                content = upstream.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                UPSTREAM_ERRORS.labels("broken").inc()
                return json_error(502, "bad_gateway", "The MCP server's answer broke off.")
            self.checkin(conn, upstream)
            return status, response_headers, [content]

        # Headers are in: from now on the body may idle for as long as the stream
        # lives (an SSE stream waiting for server notifications).
        if conn.sock is not None:
            conn.sock.settimeout(None)
        content_type = upstream.getheader("Content-Type") or ""
        is_event_stream = content_type.startswith("text/event-stream") and answer_length is None
        return status, response_headers, self._stream(conn, upstream, open_event_stream=is_event_stream)

    def _stream(
        self, conn: http.client.HTTPConnection, upstream: http.client.HTTPResponse, open_event_stream: bool
    ) -> Iterator[bytes]:
        """The upstream body, passed on as it arrives (read1 returns what is there)."""
        finished = False
        OPEN_STREAMS.inc()
        try:
            if open_event_stream:
                # A WSGI server sends the headers with the first non-empty chunk (PEP
                # 3333), but an SSE stream may carry no event for a long time while the
                # client waits for its headers. An SSE comment line is ignored by
                # every parser.
                yield b":\n\n"
            while True:
                try:
                    chunk = upstream.read1(CHUNK)
                except (TimeoutError, OSError, http.client.HTTPException):
                    UPSTREAM_ERRORS.labels("broken").inc()
                    return
                if not chunk:
                    finished = True
                    return
                yield chunk
        finally:
            OPEN_STREAMS.dec()
            # Read to its end: the connection can carry the next request. Cut short
            # (the client went away mid-stream): it cannot.
            if finished:
                self.checkin(conn, upstream)
            else:
                conn.close()


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
        return self.upstream.forward(environ, path[len(self.prefix) :], result, self.config)


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: only EOF or junk can be
    there, so it must not carry another request."""
    # poll, not select: with many connections open, descriptors pass select's 1024.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


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
    upstream = Upstream(config.upstream_url, config.upstream_timeout)
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
            return Response(status=204, headers=CORS_HEADERS)
        request.max_content_length = MAX_BODY
        result = check_bearer(services(), request.environ, resource)
        if isinstance(result, Refusal):
            response = challenge(config, resource, result)
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Expose-Headers"] = "WWW-Authenticate"
            return response
        status, headers, body = upstream.forward(request.environ, path[len(prefix) :], result, config)
        return Response(body, status=status, headers=headers, direct_passthrough=True)

    app.register_blueprint(bp)
    return GatewayPath(app.extensions["oauth"], upstream)
