"""How waitress takes requests from strangers: the rules that hold before the app sees
a byte (CONTRACT "Holding up on the open internet (round 2)", "Slow clients").

waitress reads a whole request (headers and body) in its event loop before a worker
thread runs the app, so a slow or oversized request costs a connection slot and buffer
space, never a worker. These rules bound that cost:

- A request's headers must arrive within `HEADER_TIMEOUT` seconds, counted from its
  first byte (from the opening of the connection for its first request). waitress's
  own `channel_timeout` counts idle time since the last byte, which a trickle of one
  byte every few seconds never reaches.
- Its body must keep pace: at any moment after the headers, at most
  `BODY_ALLOWANCE` seconds plus one second per `MIN_BODY_RATE` bytes received so far
  may have passed (10 s, then at least 1 KiB/s: a phone on a poor link sends a form in
  well under that, a trickle does not).
  Either rule broken: a `408` JSON answer where nothing else is being sent on the
  connection, then it is closed.
- One client network (an IPv4 address, an IPv6 /64: `forwarded.network_of`) holds at
  most OAUTH_CONNECTIONS_PER_ADDRESS connections; more are closed as soon as they are
  accepted. A trusted proxy's connections are not counted: they carry every client's
  requests, and the proxy applies the rule per client itself (examples/nginx*.conf).
- A body's size is bounded by its path before it is read (`BodyLimits`): a larger
  Content-Length is answered `413` at once, a chunked body is cut off where it passes.

The clocks stop while the server itself holds a connection up (a request in a worker,
an answer not yet sent): a client is only judged on how fast it sends while it is read.
The checks run in waitress's `maintenance`, once per `CHECK_INTERVAL`, in its loop.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import MultiSocketServer, TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.utilities import RequestEntityTooLarge

from .config import Config
from .endpoints.gateway import MAX_BODY as GATEWAY_BODY
from .forwarded import address_in, network_of
from .oauth2.rfc7591 import MAX_BODY as REGISTRATION_BODY

log = logging.getLogger("mcp_oauth")

#: seconds in which a request's headers must arrive
HEADER_TIMEOUT = 10.0
#: seconds a body may take before it must average MIN_BODY_RATE
BODY_ALLOWANCE = 10.0
#: bytes per second a body must keep up after BODY_ALLOWANCE
MIN_BODY_RATE = 1024
#: seconds between two checks of every connection (waitress's `cleanup_interval`)
CHECK_INTERVAL = 1
#: seconds a timed-out connection may take to take its 408 before it is closed anyway
CLOSE_GRACE = 5.0
#: bytes of a body at /token, /revoke, /introspect, the forms and any other path
FORM_BODY = 64 * 1024
#: seconds between two warnings about refused connections
WARNING_INTERVAL = 60.0

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _json_answer(status: str, description: str) -> tuple[str, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": "invalid_request", "error_description": description}).encode()
    return status, [("Content-Type", "application/json"), ("Cache-Control", "no-store")], body


def _timeout_answer() -> bytes:
    status, headers, body = _json_answer("408 Request Timeout", "The request took too long to arrive.")
    head = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"HTTP/1.1 {status}\r\n{head}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


REQUEST_TIMEOUT = _timeout_answer()


class BodyTooLarge(RequestEntityTooLarge):
    """waitress's 413, answered in RFC 6749 §5.2 terms."""

    def __init__(self, limit: int):
        super().__init__(f"The request body may be at most {limit} bytes at this path.")

    def to_response(self, ident: str | None = None) -> tuple[str, list[tuple[str, str]], bytes]:
        return _json_answer(f"{self.code} {self.reason}", self.body)


def _within(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class BodyLimits:
    """The largest body each path takes: 16 KiB at /register and /register/<id>, the
    gateway's 32 MiB at OAUTH_RESOURCE_PATH and below in gateway mode, 64 KiB anywhere
    else. Paths as Flask routes them (decoded, below the issuer's path)."""

    def __init__(self, config: Config):
        self.registration = config.issuer_path + "/register"
        self.gateway = config.issuer_path + config.resource_path if config.upstream_url else None

    def for_path(self, path: str) -> int:
        if self.gateway is not None and _within(path, self.gateway):
            return GATEWAY_BODY
        if _within(path, self.registration):
            return REGISTRATION_BODY
        return FORM_BODY


class PacedRequestParser(HTTPRequestParser):
    """waitress's parser, which also refuses a body larger than its path allows as soon
    as its size is known, and keeps the clock of the body's pace."""

    #: the body's clock: when it started (None before the body), and the bytes then
    body_clock: float | None = None
    body_base = 0
    body_limit: int | None = None
    error: Any = None  # waitress's: an Error to answer instead of the request
    #: waitress sets it once the request line is parsed, but logs it when a client
    #: leaves while a refusal (a malformed or late request) is being sent: without a
    #: default that log line raised AttributeError, a traceback in the server's log
    path = ""

    def __init__(self, adj: Adjustments, channel: PacedChannel):
        super().__init__(adj)
        self.channel = channel
        self.announced = False

    def received(self, data: bytes) -> int:
        consumed: int = super().received(data)
        if self.error is not None:
            if isinstance(self.error, RequestEntityTooLarge) and not isinstance(self.error, BodyTooLarge):
                self.error = BodyTooLarge(self.body_limit or self.adj.max_request_body_size)
            self.expect_continue = False  # no `100 Continue` for a refused request
            return consumed
        if self.headers_finished and not self.empty and not self.announced:
            self.announced = True
            self.channel.header_clock = None  # the headers are in: the next wait starts anew
        if self.body_rcv is None:
            return consumed  # still in the headers, or no body
        if self.body_limit is None:
            self.body_limit = self.channel.body_limits.for_path(self.path)
            self.body_clock = time.monotonic()
        size = self.body_rcv.__len__() if self.chunked else self.content_length
        if size > self.body_limit:
            self.error = BodyTooLarge(self.body_limit)
            self.completed = True
            self.expect_continue = False
            return len(data)  # the rest of this read is body, not another request
        return consumed

    def too_slow(self, now: float) -> bool:
        """Whether the body has fallen behind BODY_ALLOWANCE + 1 s per MIN_BODY_RATE."""
        if self.body_clock is None:
            return False
        late = now - self.body_clock - BODY_ALLOWANCE
        return late > 0 and self.body_bytes_received - self.body_base < MIN_BODY_RATE * late

    def restart_clock(self, now: float) -> None:
        if self.body_clock is not None:
            self.body_clock = now
            self.body_base = self.body_bytes_received


class PacedChannel(HTTPChannel):
    """A connection held to the header deadline, the body's pace and its path's body
    limit, and counted for its client network until it closes."""

    server: GuardedServer
    #: the client network this connection is counted for (None: not counted)
    counted: str | None = None
    #: when the wait for the current request's headers began (None: not waiting)
    header_clock: float | None
    timed_out: float | None = None
    request: PacedRequestParser | None

    def __init__(self, server: GuardedServer, sock: socket.socket, addr: Any, adj: Adjustments, map: Any = None):
        self.header_clock = time.monotonic()  # the first request's clock starts with the connection
        self.body_limits = server.body_limits
        super().__init__(server, sock, addr, adj, map)

    def parser_class(self, adj: Adjustments) -> PacedRequestParser:
        """waitress makes each request's parser with `self.parser_class(adj)`: the first
        byte of a request starts its header clock."""
        if self.header_clock is None:
            self.header_clock = time.monotonic()
        return PacedRequestParser(adj, self)

    def keep_pace(self, now: float) -> None:
        """The header deadline and the body's pace (in waitress's loop)."""
        if self.timed_out is not None:
            if now - self.timed_out > CLOSE_GRACE:
                self.handle_close()  # the client does not even take its 408
            return
        if self.will_close or self.close_when_flushed:
            return
        request = self.request
        if self.requests or self.total_outbufs_len:
            # The server holds the connection up: the waiting request's clocks stop.
            if self.header_clock is not None:
                self.header_clock = now
            if request is not None:
                request.restart_clock(now)
            return
        if request is not None and request.body_clock is not None:
            late = request.too_slow(now)
        elif self.header_clock is not None:
            late = now - self.header_clock > HEADER_TIMEOUT
        else:
            return  # idle between requests: waitress's channel_timeout
        if late:
            self.time_out(now)

    def time_out(self, now: float) -> None:
        """Answer 408 (RFC 9110 §15.5.9) and close once it is sent."""
        self.timed_out = now
        with self.requests_lock:
            if self.request is not None:
                self.request.close()
            with self.outbuf_lock:
                self.outbufs[-1].append(REQUEST_TIMEOUT)
                self.current_outbuf_count += len(REQUEST_TIMEOUT)
                self.total_outbufs_len += len(REQUEST_TIMEOUT)
            self.close_when_flushed = True

    def del_channel(self, map: Any = None) -> None:
        counted, self.counted = self.counted, None
        super().del_channel(map)
        if counted is not None:
            self.server.guard.release(counted)


class ConnectionGuard:
    """Open connections per client network, shared by every listening socket; beyond
    OAUTH_CONNECTIONS_PER_ADDRESS a new one is refused. Accepts and closes happen in
    waitress's loop, but a worker may close a connection too: the counts are locked."""

    def __init__(self, config: Config):
        self.limit = config.connections_per_address
        self.trusted = config.trusted_proxies
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.last_warning = 0.0

    def key_of(self, addr: Any) -> str | None:
        """The network a peer is counted for; None for a trusted proxy (or no address)."""
        host = addr[0] if isinstance(addr, tuple) and addr and isinstance(addr[0], str) else ""
        if not host or address_in(host, self.trusted):
            return None
        return network_of(host)

    def admit(self, key: str) -> bool:
        with self.lock:
            open_now = self.counts.get(key, 0)
            if open_now >= self.limit:
                return False
            self.counts[key] = open_now + 1
            return True

    def release(self, key: str) -> None:
        with self.lock:
            left = self.counts.get(key, 0) - 1
            if left > 0:
                self.counts[key] = left
            else:
                self.counts.pop(key, None)

    def refused(self, key: str) -> None:
        now = time.monotonic()
        if now - self.last_warning >= WARNING_INTERVAL:
            self.last_warning = now
            log.warning(
                "Refusing connections from %s: %d open (OAUTH_CONNECTIONS_PER_ADDRESS)",
                key,
                self.limit,
                extra={"event": "server.connections_refused", "fields": {"network": key, "open": self.limit}},
            )


class GuardedServer(TcpWSGIServer):
    """waitress's TCP server, counting connections per client network at accept and
    checking every connection's pace in its periodic maintenance."""

    def __init__(self, application: WSGIApp, map: Any, *, guard: ConnectionGuard, limits: BodyLimits, **kw: Any):
        self.guard = guard
        self.body_limits = limits
        super().__init__(application, map, **kw)

    def handle_accept(self) -> None:
        # waitress's handle_accept, with the per-network count between accept and channel.
        try:
            pair = self.accept()
            if pair is None:
                return
            conn, addr = pair
            self.set_socket_options(conn)
        except OSError:
            return  # e.g. the peer already left (waitress logs nothing either, by default)
        addr = self.fix_addr(addr)
        key = self.guard.key_of(addr)
        if key is not None and not self.guard.admit(key):
            conn.close()
            self.guard.refused(key)
            return
        try:
            channel = self.channel_class(self, conn, addr, self.adj, map=self._map)
        except BaseException:
            if key is not None:
                self.guard.release(key)
            conn.close()
            raise
        channel.counted = key

    def maintenance(self, now: float) -> None:
        super().maintenance(now)  # waitress: idle connections (channel_timeout)
        clock = time.monotonic()
        for channel in list(self.active_channels.values()):
            if isinstance(channel, PacedChannel):
                channel.keep_pace(clock)


def create_server(app: WSGIApp, config: Config, options: dict[str, Any], channel: type[PacedChannel]) -> Any:
    """waitress's `create_server` for TCP listeners, with `GuardedServer`s serving
    `channel`s: one server per address the host resolves to, one loop, one pool."""
    adj = Adjustments(**options)
    socket_map: dict[int, Any] = {}
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    guard, limits = ConnectionGuard(config), BodyLimits(config)
    servers = []
    for sockinfo in adj.listen:
        server = GuardedServer(
            app, socket_map, guard=guard, limits=limits, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo
        )
        server.channel_class = channel
        servers.append(server)
    if len(servers) == 1:
        return servers[0]
    listening = [(server.effective_host, server.effective_port) for server in servers]
    return MultiSocketServer(socket_map, adj, listening, dispatcher, servers[-1].log_info)
