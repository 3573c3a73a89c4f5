"""The gateway's HTTP/1.1 client: requests to the upstream MCP server (OAUTH_UPSTREAM_URL)
on kept-alive connections, and the relay that streams each answer back (MCP Streamable
HTTP: JSON or SSE responses to POST, long-lived GET SSE streams, DELETE of a session).

What is passed on is filtered both ways: hop-by-hop headers (RFC 9110 §7.6.1, and those
a `Connection` header names), the client's `Authorization` (MCP forbids token
passthrough) and any `access_token` in the query, identity and forwarding headers a
client wrote (only the gateway writes them); set cookies do not come back.

Streams never starve the server. A forwarded request holds a waitress worker thread
until its answer's body ends, which for an MCP server's GET event stream (or a long tool
call's SSE answer to a POST) may be hours of silence. Three things bound that:

- Every forwarded request counts as a stream from the moment it is forwarded until its
  body ends (app/streams.py: OAUTH_MAX_STREAMS in all, OAUTH_MAX_STREAMS_PER_GRANT for
  one grant; beyond either, 429 with Retry-After), and wsgi.py gives waitress
  OAUTH_THREADS + OAUTH_MAX_STREAMS threads in gateway mode, so OAUTH_THREADS always
  remain for /token, /authorize, /healthz, /verify and the rest. Counting at the
  forward, not at the first byte of an event stream, is what makes the bound hold: the
  thread is held while the upstream thinks about its headers too, and whether a POST's
  answer is JSON or SSE is known only then. Taking the streams off the pool instead (a
  relay thread of their own writing into waitress's channels) would mean working
  against waitress's task model for a saving of one idle thread's memory per stream
  (measured in `make bench`: see docs/development.md).
- A stream whose client has gone ends within about CLIENT_CHECK seconds even when the
  upstream is silent: waitress reads a connection while its request is being served
  (wsgi.py sets `channel_request_lookahead`), sees the end of file a client (or nginx,
  for a client that left it) sends, and `waitress.client_disconnected` then says so. The
  relay waits on the upstream socket with a CLIENT_CHECK timeout and asks after each
  silent interval; waiting for the upstream's headers, likewise. Without that, a thread
  learns its client left only when it next writes: never, on a silent stream.
- A clean stop ends every stream at once (`Upstream.end_streams`).

The plain answer (JSON of known length) pays one more `settimeout` than before and no
other system call for this.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Generator, Iterator
from typing import Any
from urllib.parse import unquote_plus, urlsplit

import httptools
from werkzeug.http import HTTP_STATUS_CODES
from werkzeug.wsgi import get_content_length, get_input_stream

from ...config import Config
from ...cors import GATEWAY_HEADERS
from ...errors import SECURITY_HEADERS, Answer, json_error
from ...forwarded import client_address
from ...observability import OPEN_STREAMS, UPSTREAM_ERRORS
from ...policy import encode_query
from ...streams import RETRY_AFTER, StreamSlots

log = logging.getLogger(__name__)

#: RFC 9110 §7.6.1 hop-by-hop headers, plus what we set or must not forward: the
#: token and its RFC 9449 proof, our identity headers, and forwarding headers only we
#: may write.
DROPPED_REQUEST_HEADERS = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te",
    "trailer", "transfer-encoding", "upgrade", "host", "authorization", "cookie", "content-length",
    "dpop", "x-auth-subject", "x-auth-client-id", "x-auth-scope", "x-auth-upstream-token",
    "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
    "x-forwarded-prefix", "x-forwarded-uri", "x-forwarded-server", "x-real-ip",
}  # fmt: skip
DROPPED_RESPONSE_HEADERS = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "set-cookie",
    "x-auth-upstream-token",  # the person's upstream token never reaches the client
})  # fmt: skip
CONNECT_TIMEOUT = 10
MAX_BODY = 32 * 1024 * 1024
CHUNK = 64 * 1024
#: an upstream answer of known length up to this is read whole and sent in one piece
WHOLE_BODY = 1024 * 1024
#: kept-alive upstream connections, and how long one may idle (below the keep-alive
#: timeouts of common servers: uvicorn's is 5 s)
MAX_IDLE_CONNECTIONS = 32
MAX_IDLE = 4.0
#: added to the MCP server's answers unless it set them itself: ours, and CORS, so that a
#: browser-based MCP client reads the answer (and its session id) too
ADDED_RESPONSE_HEADERS = {**SECURITY_HEADERS, **GATEWAY_HEADERS}
#: seconds between two looks at whether a waiting request's client is still there
CLIENT_CHECK = 1.0


class _Message:
    """One upstream response as httptools (llhttp, Node's parser) reports it; a 1xx
    answer before it is forgotten when the real one begins."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.complete = False
        self.status = 0
        self.on_message_begin()

    def on_message_begin(self) -> None:
        if self.complete and self.status >= 200:
            raise _Broken("the upstream sent more than its answer")
        self.headers: list[tuple[str, str]] = []
        self.headers_complete = False
        self.complete = False
        self.body: list[bytes] = []
        self.status = 0
        self.keep_alive = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    # The parser's state is read in its callbacks: once a message is complete, it
    # starts over for the next one.
    def on_headers_complete(self) -> None:
        self.headers_complete = True
        self.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True
        self.keep_alive = self.parser.should_keep_alive()

    def receive(self, sock: socket.socket) -> None:
        data = sock.recv(CHUNK)
        if not data:
            raise _Broken("the upstream closed the connection")
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if not (self.complete and self.status >= 200):
                raise
            self.keep_alive = False  # the answer is whole; what came after it is not ours

    def take_body(self) -> bytes:
        body, self.body = b"".join(self.body), []
        return body


class _Broken(Exception):
    """The upstream closed the connection or sent what is not HTTP."""


class _ClientGone(Exception):
    """The client closed its connection while its answer was awaited."""


#: the answer to a client that has gone (nginx's 499): logged, never received
CLIENT_GONE: Answer = ("499 Client Closed Request", [("Content-Length", "0")], [])


def _client_gone(environ: dict[str, Any]) -> bool:
    """Whether waitress has seen the client close its connection (it reads the
    connection during the request only with `channel_request_lookahead`: wsgi.py)."""
    gone = environ.get("waitress.client_disconnected")
    return gone is not None and gone()


class Upstream:
    """Requests to the upstream MCP server on kept-alive HTTP/1.1 connections (a new
    TCP connection per MCP request would cost more than the whole token check). The
    request is written whole here; the response is parsed by httptools and streamed.
    (http.client cost 4 to 8 times the CPU for the same exchange: it parses headers
    with the email package.)"""

    def __init__(self, base_url: str, response_timeout: int, slots: StreamSlots | None = None):
        parts = urlsplit(base_url)
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.host_header = parts.netloc.rpartition("@")[2]
        self.base_path = parts.path.rstrip("/")
        self.response_timeout = response_timeout
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None
        self._idle: list[tuple[float, socket.socket]] = []
        #: connections whose body is being streamed to a client (an SSE stream may idle
        #: for as long as it lives)
        self._streaming: set[socket.socket] = set()
        self.stopping = False
        self._lock = threading.Lock()
        self.slots = slots or StreamSlots(Config.max_streams, Config.max_streams_per_grant)

    def connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=CONNECT_TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # requests are written whole
        return self.tls.wrap_socket(sock, server_hostname=self.host) if self.tls else sock

    def _checkout(self) -> socket.socket:
        """An idle kept-alive connection, or a new one. One the upstream may have
        closed meanwhile (idle too long, or readable: EOF) is not reused, so that a
        request is never sent into a dead connection and never needs a retry."""
        now = time.monotonic()
        while True:
            with self._lock:
                if not self._idle:
                    break
                since, sock = self._idle.pop()
            if now - since < MAX_IDLE and not _readable(sock):
                return sock
            sock.close()
        return self.connect()

    def checkin(self, sock: socket.socket, keep_alive: bool) -> None:
        """Keep a connection whose response was read to its end, unless either side
        said it closes."""
        if keep_alive:
            with self._lock:
                if len(self._idle) < MAX_IDLE_CONNECTIONS:
                    self._idle.append((time.monotonic(), sock))
                    return
        sock.close()

    def end_streams(self) -> None:
        """At a stop: end every stream now. A thread waiting on an idle upstream would
        otherwise hold the stop for waitress's whole shutdown timeout. Each stream's
        client gets the end of its response, as when the upstream closes."""
        with self._lock:
            self.stopping = True
            streaming = list(self._streaming)
        for sock in streaming:
            with contextlib.suppress(OSError):  # closed meanwhile
                sock.shutdown(socket.SHUT_RDWR)  # its reader wakes to an end of file

    def _request_head(self, method: str, target: str, headers: dict[str, str]) -> bytes:
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host_header}"]
        # A value that could end its line is dropped, never sent (RFC 9110 §5.5).
        lines += [f"{name}: {value}" for name, value in headers.items() if not _ENDS_A_LINE.search(value)]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def forward(
        self, environ: dict[str, Any], rest: str, auth_headers: dict[str, str], config: Config, grant: str = ""
    ) -> Answer:
        """Forward the request; `rest` is the normalised, encoded path below the
        resource path ('' or '/…'). It holds one of `grant`'s stream slots until
        its answer's body ends."""
        target = (self.base_path + rest) or "/"
        query = without_access_token(environ.get("QUERY_STRING", ""))
        if query:
            target += "?" + encode_query(query)
        if _ENDS_A_LINE.search(target) or " " in target:
            return json_error(400, "invalid_request", "The request path is not a valid URI path.")
        # RFC 9110 §7.6.1: headers the client named in Connection are hop-by-hop too.
        hop_by_hop = {name.strip().lower() for name in environ.get("HTTP_CONNECTION", "").split(",")}
        headers = {}
        for key, value in environ.items():
            name = _forwarded_name(key)
            if name is not None and (value or key != "CONTENT_TYPE") and name.lower() not in hop_by_hop:
                headers[name] = value
        headers.update(auth_headers)
        headers["X-Forwarded-For"] = client_address(config, environ)
        headers["X-Forwarded-Host"] = config.issuer_netloc
        headers["X-Forwarded-Proto"] = config.issuer_scheme
        method = environ["REQUEST_METHOD"]
        length = get_content_length(environ)
        stream = None
        if length:
            headers["Content-Length"] = str(length)
            stream = get_input_stream(environ, max_content_length=MAX_BODY)
        elif environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked":
            headers["Transfer-Encoding"] = "chunked"  # a body of unknown length, chunked again
            stream = get_input_stream(environ, max_content_length=MAX_BODY)
        elif method in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = "0"
        head = self._request_head(method, target, headers)

        refused = self.slots.take(grant)
        if refused is not None:
            # Readable by a browser-based MCP client, as the 401 challenge is.
            limited = {"Retry-After": str(RETRY_AFTER), **GATEWAY_HEADERS}
            return json_error(429, "temporarily_unavailable", refused, limited)
        answer: Answer | None = None
        try:
            answer = self._exchange(environ, method, head, stream, length, grant)
            return answer
        finally:
            if answer is None or not isinstance(answer[2], _Relay):
                self.slots.give_back(grant)  # else the relay does, when the body ends

    def _exchange(
        self, environ: dict[str, Any], method: str, head: bytes, stream: Any, length: int | None, grant: str
    ) -> Answer:
        """Send the request, wait for the answer's headers; its body whole (a small
        answer of known length) or as a `_Relay`."""
        sock = None
        try:
            sock = self._checkout()
            sock.settimeout(self.response_timeout)
            if stream is None:
                sock.sendall(head)
            elif length and length <= WHOLE_BODY:
                # A small body goes out with the headers in one write.
                sock.sendall(head + stream.read())
            else:
                sock.sendall(head)
                _send_body(sock, stream, chunked=not length)
            # From here on the socket wakes every CLIENT_CHECK to ask after the client.
            sock.settimeout(CLIENT_CHECK)
            message = _Message()
            while not message.headers_complete or message.status < 200:
                self._receive(sock, message, environ)
        except _ClientGone:
            if sock is not None:
                sock.close()
            return CLIENT_GONE
        except TimeoutError:
            if sock is not None:
                sock.close()
            UPSTREAM_ERRORS.labels("timeout").inc()
            return json_error(504, "gateway_timeout", "The MCP server did not answer in time.")
        except (OSError, _Broken, httptools.HttpParserError) as exc:
            if sock is not None:
                sock.close()
            UPSTREAM_ERRORS.labels("unreachable").inc()
            log.warning("upstream %s:%s unreachable: %s", self.host, self.port, type(exc).__name__)
            return json_error(502, "bad_gateway", "The MCP server is unreachable.")

        dropped = _dropped_response_headers(message.headers)
        response_headers = [(k, v) for k, v in message.headers if k.lower() not in dropped]
        present = {name.lower() for name, _ in response_headers}
        response_headers += [(k, v) for k, v in ADDED_RESPONSE_HEADERS.items() if k.lower() not in present]
        status = f"{message.status} {HTTP_STATUS_CODES.get(message.status, 'Unknown')}"
        if method == "HEAD":  # no body follows, whatever the headers say
            sock.close()
            return status, response_headers, []
        fields = {name.lower(): value for name, value in message.headers}
        answer_length = fields.get("content-length")
        small = answer_length is not None and answer_length.isdigit() and int(answer_length) <= WHOLE_BODY
        if message.complete or small:
            # A small answer of known length (a JSON-RPC response): read it at once,
            # under the response timeout, and give the connection back.
            try:
                while not message.complete:
                    self._receive(sock, message, environ)
            except _ClientGone:
                sock.close()
                return CLIENT_GONE
            except (OSError, _Broken, httptools.HttpParserError):
                sock.close()
                UPSTREAM_ERRORS.labels("broken").inc()
                return json_error(502, "bad_gateway", "The MCP server's answer broke off.")
            self.checkin(sock, message.keep_alive)
            return status, response_headers, [message.take_body()]

        # Headers are in: from now on the body may idle for as long as the stream
        # lives (an SSE stream waiting for server notifications).
        is_event_stream = fields.get("content-type", "").startswith("text/event-stream") and answer_length is None
        # RFC 9112 §6.3: with neither length nor chunked coding, the body ends when
        # the connection does.
        ends_at_close = answer_length is None and "chunked" not in fields.get("transfer-encoding", "").lower()
        relay = _Relay(self, sock, message, environ, grant, is_event_stream, ends_at_close)
        return status, response_headers, relay

    def _receive(self, sock: socket.socket, message: _Message, environ: dict[str, Any]) -> None:
        """More of an awaited answer, within the response timeout; `_ClientGone` as
        soon as a silent CLIENT_CHECK interval finds the client gone."""
        waited = 0.0
        while True:
            try:
                message.receive(sock)
                return
            except TimeoutError:
                if _client_gone(environ):
                    raise _ClientGone from None
                waited += CLIENT_CHECK
                if waited >= self.response_timeout:
                    raise


class _Relay:
    """A streamed answer's body, passed on as it arrives: a PEP 3333 iterable whose
    `close` (which the WSGI server calls, however the answer ended, iterated or not)
    gives back the upstream connection and the stream's slot.

    It ends with the upstream's body, when the upstream breaks off, at a clean stop
    (`Upstream.end_streams` shuts its socket), or when its client has gone: a silent
    upstream is waited on CLIENT_CHECK at a time, and the client asked after between
    (an upstream still sending meets the gone client at waitress's next write)."""

    def __init__(
        self,
        upstream: Upstream,
        sock: socket.socket,
        message: _Message,
        environ: dict[str, Any],
        grant: str,
        open_event_stream: bool,
        ends_at_close: bool,
    ):
        self.upstream = upstream
        self.sock = sock
        self.message = message
        self.environ = environ
        self.grant = grant
        self.finished = False
        self.closed = False
        OPEN_STREAMS.inc()
        with upstream._lock:
            upstream._streaming.add(sock)
            if upstream.stopping:  # started as the server stops: ends like the others
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.chunks = self._relay(open_event_stream, ends_at_close)

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def _relay(self, open_event_stream: bool, ends_at_close: bool) -> Generator[bytes, None, None]:
        message, sock = self.message, self.sock
        if open_event_stream:
            # A WSGI server sends the headers with the first non-empty chunk (PEP
            # 3333), but an SSE stream may carry no event for a long time while the
            # client waits for its headers. An SSE comment line is ignored by
            # every parser.
            yield b":\n\n"
        while True:
            body = message.take_body()
            if body:
                yield body
            if message.complete:
                self.finished = True
                return
            try:
                message.receive(sock)
            except TimeoutError:
                if _client_gone(self.environ):
                    return
            except (_Broken, OSError, httptools.HttpParserError) as exc:
                # The body's end when the connection ends it, or ours at a stop;
                # else the upstream broke off. Either way it is not reused.
                if not (self.upstream.stopping or (ends_at_close and isinstance(exc, _Broken))):
                    UPSTREAM_ERRORS.labels("broken").inc()
                return

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.chunks.close()
        upstream = self.upstream
        with upstream._lock:
            upstream._streaming.discard(self.sock)
        OPEN_STREAMS.dec()
        # Read to its end: the connection can carry the next request. Cut short
        # (the client went away mid-stream): it cannot.
        if self.finished:
            upstream.checkin(self.sock, self.message.keep_alive)
        else:
            self.sock.close()
        upstream.slots.give_back(self.grant)


@functools.lru_cache(maxsize=256)
def _forwarded_name(environ_key: str) -> str | None:
    """The header an environ key stands for, as Werkzeug spells it, if it is passed
    upstream (None for what is not a header, or is dropped)."""
    if environ_key.startswith("HTTP_"):
        name = environ_key[5:].replace("_", "-").title()
    elif environ_key == "CONTENT_TYPE":
        name = "Content-Type"
    else:
        return None
    return None if name.lower() in DROPPED_REQUEST_HEADERS else name


def without_access_token(query: str) -> str:
    """The query with every `access_token` parameter (RFC 6750 §2.3) taken out, the
    rest kept as it was, order included: MCP forbids passing a token upstream, and a
    client may send one in the query as well as in the header."""
    if "access" not in query and "%" not in query:  # the name cannot be there
        return query
    kept = [part for part in query.split("&") if unquote_plus(part.partition("=")[0]) != "access_token"]
    return "&".join(kept)


def _dropped_response_headers(headers: list[tuple[str, str]]) -> frozenset[str]:
    """The upstream's headers not passed on: hop-by-hop ones, and (RFC 9110 §7.6.1)
    those its `Connection` header names, as for the client's on the way up."""
    named = [value for name, value in headers if name.lower() == "connection"]
    if not named:
        return DROPPED_RESPONSE_HEADERS
    return DROPPED_RESPONSE_HEADERS | {token.strip().lower() for value in named for token in value.split(",")}


#: CR, LF or NUL: what would end a request line or header line early
_ENDS_A_LINE = re.compile(r"[\r\n\0]")


def _send_body(sock: socket.socket, stream: Any, chunked: bool) -> None:
    """A large or unknown-length request body, in blocks (RFC 9112 §7.1 when chunked)."""
    while block := stream.read(CHUNK):
        sock.sendall(b"%x\r\n%s\r\n" % (len(block), block) if chunked else block)
    if chunked:
        sock.sendall(b"0\r\n\r\n")


def _readable(sock: socket.socket) -> bool:
    """Whether an idle connection has something to read: only EOF or junk can be
    there, so it must not carry another request."""
    # poll, not select: with many connections open, descriptors pass select's 1024.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
