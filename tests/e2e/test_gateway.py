"""Gateway mode end to end, with parts no one here wrote: an MCP server built with the
official Python SDK as the upstream, and the SDK's client with its OAuth support
(`OAuthClientProvider`) discovering, registering, logging in and calling a tool, then
doing it again after our server restarts, without registering again."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import http.server
import itertools
import json
import re
import signal
import socket
import threading
import time

import httpx
import pytest
import requests
from support.harness import free_port
from support.mcp import MemoryStorage, PersonAtTheBrowser, call_tools
from support.oauth import tokens_for


@pytest.fixture
def gateway(make_server, upstream):
    return make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_THREADS="8", OAUTH_UPSTREAM_TIMEOUT="2")


def test_mcp_sdk_client_through_gateway_and_after_restart(gateway):
    storage = MemoryStorage()
    person = PersonAtTheBrowser(gateway)
    total, who = asyncio.run(call_tools(gateway, storage, person))
    assert total == 42
    assert who["subject"] == "alice" and who["scope"] == "mcp"
    assert who["client_id"] == storage.client_info.client_id
    assert who["authorization"] is None  # no token passthrough
    assert person.visits == 1

    gateway.restart()
    total, _ = asyncio.run(call_tools(gateway, storage, person))
    assert total == 42
    assert person.visits == 1  # no new login
    clients = json.loads(gateway.cli("list-clients", "--json").stdout)
    assert len(clients) == 1  # no new registration


def test_gateway_challenges_without_a_valid_token(gateway):
    response = requests.post(gateway.url("/mcp"), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}, timeout=5)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert f'resource_metadata="{gateway.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    bad = requests.post(gateway.url("/mcp"), headers={"Authorization": "Bearer nope"}, json={}, timeout=5)
    assert bad.status_code == 401 and bad.json()["error"] == "invalid_token"


def test_sse_stream_flows_while_other_requests_are_served(gateway):
    _, tokens = tokens_for(gateway)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    arrivals: list[tuple[float, str]] = []

    def read_stream():
        with httpx.stream("GET", gateway.url("/mcp/ticks?count=6&interval=0.4"), headers=auth, timeout=10) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    arrivals.append((time.monotonic(), line))

    reader = threading.Thread(target=read_stream)
    reader.start()
    time.sleep(0.5)
    # While the stream is open, other requests are answered at once.
    for _ in range(5):
        started = time.monotonic()
        assert requests.get(gateway.url("/verify"), headers=auth, timeout=5).status_code == 200
        assert time.monotonic() - started < 1
    reader.join(15)
    assert [line for _, line in arrivals] == [f"data: tick {i}" for i in range(6)]
    # Events arrived as they were sent, not all at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 1.5


def test_request_body_query_and_headers_reach_upstream(gateway):
    _, tokens = tokens_for(gateway)
    body = b"x" * 300_000
    response = requests.post(
        gateway.url("/mcp/echo?a=1&b=two"),
        data=body,
        timeout=10,
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            "X-Auth-Subject": "mallory",
            "Mcp-Session-Id": "abc123",
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["length"] == len(body)
    assert echoed["query"] == "a=1&b=two"
    assert echoed["headers"]["x-auth-subject"] == "alice"  # the client's spoofed header was dropped
    assert echoed["headers"]["mcp-session-id"] == "abc123"
    assert "authorization" not in echoed["headers"]


def test_a_large_request_body_reaches_upstream_whole(gateway):
    """A body above the size sent with the headers goes out in blocks."""
    _, tokens = tokens_for(gateway)
    auth = {"Authorization": f"Bearer {tokens['access_token']}", "Content-Type": "application/octet-stream"}
    large = bytes(range(256)) * 10_000  # 2.5 MB
    response = requests.post(gateway.url("/mcp/echo"), data=large, headers=auth, timeout=20)
    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["length"] == len(large) and echoed["sha256"] == hashlib.sha256(large).hexdigest()


class ScriptedUpstream:
    """A TCP server that answers each request with the next scripted answer, sent
    verbatim. A connection is kept, as HTTP/1.1 keeps it, until the answer says
    `Connection: close` or the gateway closes it: closing after every answer would race
    the gateway reusing the connection."""

    def __init__(self, answers: list[bytes]):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.answers = iter(answers)
        self.lock = threading.Lock()
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            received = b""
            while True:
                while b"\r\n\r\n" not in received:
                    data = conn.recv(65536)
                    if not data:
                        return
                    received += data
                head, _, received = received.partition(b"\r\n\r\n")
                length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
                while length and len(received) < int(length.group(1)):
                    received += conn.recv(65536)
                received = received[int(length.group(1)) if length else 0 :]
                with self.lock:
                    answer = next(self.answers)
                conn.sendall(answer)
                if b"Connection: close" in answer:
                    return


def test_upstream_answers_of_every_framing_are_passed_on_and_junk_is_502(make_server):
    """A 1xx before the answer is skipped; a body that ends when the connection does
    (RFC 9112 §6.3) is passed on whole; bytes after a whole answer are not taken for
    it; what is not HTTP is a 502."""
    upstream = ScriptedUpstream(
        [
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad",
            b"SMTP ready\r\n\r\n",
        ]
    )
    server = make_server(OAUTH_UPSTREAM_URL=f"http://127.0.0.1:{upstream.port}/mcp")
    _, tokens = tokens_for(server)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    answers = [requests.post(server.url("/mcp"), headers=auth, json={}, timeout=10) for _ in range(5)]
    assert [(a.status_code, a.content) for a in answers[:4]] == [
        (200, b"hello"),
        (200, b"until the end"),
        (200, b"hello world"),
        (200, b"ok"),  # and what followed it is dropped with the connection
    ]
    assert answers[4].status_code == 502 and answers[4].json()["error"] == "bad_gateway"
    # Kept alive from the first to the second (which closes), and from the third to the
    # fourth, whose extra bytes drop it: the fifth needs a third connection.
    assert upstream.connections == 3


def test_slow_upstream_is_504(gateway):
    _, tokens = tokens_for(gateway)
    started = time.monotonic()
    response = requests.get(
        gateway.url("/mcp/slow?seconds=5"), timeout=10, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 504 and response.json()["error"] == "gateway_timeout"
    assert time.monotonic() - started < 4


def test_upstream_down_is_502(make_server):
    server = make_server(OAUTH_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}/mcp")
    _, tokens = tokens_for(server)
    response = requests.post(
        server.url("/mcp"), json={}, timeout=10, headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert response.status_code == 502 and response.json()["error"] == "bad_gateway"


class CountingUpstream:
    """A keep-alive HTTP/1.1 server that numbers its connections and answers every
    POST with the number of the connection that carried it."""

    def __init__(self, port: int, first_number: int = 1):
        counter = itertools.count(first_number)
        sockets = self.sockets = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection_number = next(counter)
                sockets.append(self.connection)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.dumps({"connection": self.connection_number}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        """Stop, closing the kept-alive connections too (as a process exit would)."""
        self.server.shutdown()
        self.server.server_close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


def test_upstream_connections_are_kept_alive_and_a_restart_breaks_nothing(make_server):
    """Consecutive requests ride one kept-alive upstream connection; after the
    upstream restarts (every kept connection dead), the next request still gets
    through, on a new connection, with no error."""
    port = free_port()
    server = make_server(OAUTH_UPSTREAM_URL=f"http://127.0.0.1:{port}/mcp")
    _, tokens = tokens_for(server)
    bearer = {"Authorization": f"Bearer {tokens['access_token']}"}

    def connection() -> int:
        response = requests.post(server.url("/mcp"), headers=bearer, json={"n": 1}, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()["connection"]

    first = CountingUpstream(port)
    assert [connection() for _ in range(5)] == [1] * 5
    first.stop()
    second = CountingUpstream(port, first_number=101)
    try:
        assert connection() == 101  # no error, and not the dead connection
        assert connection() == 101
    finally:
        second.stop()


def test_the_flask_view_forwards_alike_what_is_not_taken_in_front_of_it(gateway):
    """A GET with a good token is forwarded in front of Flask (app/hotpath.py); a
    HEAD goes on to the Flask view, which forwards it the same way."""
    _, tokens = tokens_for(gateway)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    get = requests.get(gateway.url("/mcp/path/a%20b"), headers=auth, timeout=10)
    head = requests.head(gateway.url("/mcp/path/a%20b"), headers=auth, timeout=10)
    assert get.status_code == head.status_code == 200, get.text
    assert get.json()["raw_path"] == "/mcp/path/a%20b" and head.content == b""
    for response in (get, head):
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["X-Content-Type-Options"] == "nosniff" and response.headers["X-Request-Id"]
    refused = requests.head(gateway.url("/mcp/path/a"), headers={"Authorization": "Bearer nope"}, timeout=10)
    assert refused.status_code == 401 and "WWW-Authenticate" in refused.headers


@pytest.mark.parametrize("stop", ["SIGTERM", "SIGINT"])
def test_a_stop_ends_open_streams_at_once(make_server, upstream, stop):
    """A clean stop with an SSE stream idling through the gateway ends that stream (its
    client gets the response's end, not a reset) and exits at once, with the store
    compacted, rather than after waitress's 5 s shutdown timeout."""
    server = make_server(OAUTH_UPSTREAM_URL=upstream)
    _, tokens = tokens_for(server)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    events: list[str] = []
    opened = threading.Event()

    def read_stream() -> None:
        url = server.url("/mcp/ticks?count=2&interval=60")  # one event, then a minute of quiet
        with httpx.stream("GET", url, headers=auth, timeout=30) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(line)
                    opened.set()
        events.append("ended")

    reader = threading.Thread(target=read_stream)
    reader.start()
    assert opened.wait(10)
    started = time.monotonic()
    server.proc.send_signal(getattr(signal, stop))
    assert server.proc.wait(10) == 0
    took = time.monotonic() - started
    reader.join(10)
    assert events == ["data: tick 0", "ended"]  # a whole response, cut where the stream stood
    assert took < 3, f"the stop took {took:.1f} s"  # waitress alone waits 5 s for the stream's thread
    journal = (server.data_dir / "clients.json.journal").read_text()
    assert len(journal.splitlines()) == 1, journal  # the stop went on to compact: a header alone
