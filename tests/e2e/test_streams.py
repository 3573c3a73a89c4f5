"""Streams never starve the server (gateway mode): open and idle event streams leave
/token, /authorize, /healthz, /verify and the metadata answering; a stream whose
client has gone is ended, its upstream connection closed, within 5 s of a silent
upstream; OAUTH_MAX_STREAMS and OAUTH_MAX_STREAMS_PER_GRANT bound them, with 429 and
Retry-After beyond. Real `python wsgi.py`, raw client sockets (100 streams open in a
moment), an upstream that opens streams and says nothing (tests/support/
silent_upstream.py), and the README's nginx example for a client that leaves nginx."""

from __future__ import annotations

import json
import re
import socket
import ssl
import time
from collections.abc import Iterator

import pytest
import requests
from support.harness import PASSWORD, Server, free_port, seed_users
from support.oauth import auth_params, pkce_pair, tokens_for
from support.proxies import tls_proxy
from support.silent_upstream import SilentUpstream
from support.tls import TEST_HOST

#: what the contract allows: an answer within 1 s, a gone client's stream ended within 5 s
ANSWER_WITHIN = 1.0
ENDED_WITHIN = 5.0


@pytest.fixture
def silent() -> Iterator[SilentUpstream]:
    upstream = SilentUpstream()
    yield upstream
    upstream.stop()


def send_request(port: int, token: str, method: str = "GET", path: str = "/mcp") -> socket.socket:
    """A raw connection carrying one gateway request: a GET event stream, or a POST
    (a tool call whose answer is an event stream)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/call"}' if method == "POST" else b""
    sock.sendall(
        f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        f"Accept: application/json, text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, what followed the head in the same reads)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, rest


def open_stream(port: int, token: str, method: str = "GET") -> socket.socket:
    sock = send_request(port, token, method)
    status, headers, _ = read_head(sock)
    assert status == 200 and headers["content-type"].startswith("text/event-stream"), (status, headers)
    return sock


def refused_stream(port: int, token: str) -> tuple[dict[str, str], dict]:
    """A stream request that must be refused: its headers and JSON body."""
    with send_request(port, token) as sock:
        status, headers, body = read_head(sock)
        assert status == 429, (status, headers, body)
        while len(body) < int(headers["content-length"]):
            body += sock.recv(65536)
    return headers, json.loads(body)


def open_streams_gauge(server: Server) -> float:
    metrics = requests.get(server.url("/metrics"), timeout=5).text
    return float(re.search(r"(?m)^mcp_oauth_gateway_open_streams (\S+)$", metrics).group(1))  # type: ignore[union-attr]


def test_a_hundred_idle_streams_leave_every_endpoint_answering(make_server, silent):
    """With OAUTH_MAX_STREAMS (100) streams open and silent, waitress still has its
    OAUTH_THREADS for everything else. (Before: 16 threads for everything, each stream
    holding one, and no answer at all for anyone once 16 streams were open.)"""
    server = make_server(
        OAUTH_UPSTREAM_URL=silent.url,
        OAUTH_MAX_STREAMS_PER_GRANT="100",
        OAUTH_CONNECTIONS_PER_ADDRESS="1000",  # 100 streams from one test address
    )
    client, tokens = tokens_for(server)
    access = tokens["access_token"]
    streams = [send_request(server.port, access, "POST" if i % 10 == 0 else "GET") for i in range(100)]
    try:
        assert silent.wait(lambda: silent.open == 100, 10), f"the upstream saw {silent.open} streams, not 100"
        for sock in streams:
            assert read_head(sock)[0] == 200

        def timed(method: str, path: str, **kw) -> requests.Response:
            started = time.monotonic()
            response = requests.request(method, server.url(path), timeout=5, **kw)
            took = time.monotonic() - started
            assert took < ANSWER_WITHIN, f"{method} {path} took {took:.2f} s with 100 streams open"
            return response

        assert timed("GET", "/healthz").status_code == 200
        assert timed("GET", "/.well-known/oauth-authorization-server").status_code == 200
        assert timed("GET", "/verify", headers={"Authorization": f"Bearer {access}"}).status_code == 200
        _, challenge = pkce_pair()
        authorize = timed("GET", "/authorize", params=auth_params(client, challenge), allow_redirects=False)
        assert authorize.status_code == 302 and "/login" in authorize.headers["Location"]
        grant = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
        renewed = timed("POST", "/token", data={**grant, "client_id": client["client_id"]})
        assert renewed.status_code == 200, renewed.text
        assert silent.open == 100  # and the streams are still open
    finally:
        for sock in streams:
            sock.close()


def test_a_stream_whose_client_left_is_ended_with_its_upstream_connection(make_server, silent):
    """Clients that open streams (a GET stream, a POST's SSE answer, a request whose
    upstream has not yet sent its headers) and vanish: each upstream connection is
    closed within 5 s although the upstream never writes, and every slot is given back."""
    server = make_server(OAUTH_UPSTREAM_URL=silent.url, OAUTH_MAX_STREAMS="3")
    _, tokens = tokens_for(server)
    access = tokens["access_token"]
    streams = [open_stream(server.port, access), open_stream(server.port, access, "POST")]
    streams.append(send_request(server.port, access, path="/mcp/mute"))  # no headers yet
    assert silent.wait(lambda: silent.open == 3, 5)
    assert open_streams_gauge(server) == 2  # the two whose bodies are being relayed
    left = time.monotonic()
    for sock in streams:
        sock.close()
    assert silent.wait(lambda: silent.open == 0, ENDED_WITHIN + 1), f"{silent.open} upstream connections left open"
    took = max(c.closed for c in silent.connections) - left  # type: ignore[type-var]
    assert took < ENDED_WITHIN, f"the last upstream connection closed {took:.1f} s after its client left"
    assert open_streams_gauge(server) == 0
    # Each slot is back: the cap (3) admits three new streams.
    again = [open_stream(server.port, access) for _ in range(3)]
    for sock in again:
        sock.close()


def test_the_per_grant_and_total_caps_answer_429_and_a_slot_comes_back(make_server, silent):
    """OAUTH_MAX_STREAMS_PER_GRANT (default 8) of one grant, OAUTH_MAX_STREAMS (here 10)
    in all; a POST whose answer is an event stream counts; a stream's end gives its slot
    back."""
    server = make_server(OAUTH_UPSTREAM_URL=silent.url, OAUTH_MAX_STREAMS="10")
    first = tokens_for(server)[1]["access_token"]
    second = tokens_for(server)[1]["access_token"]
    mine = [open_stream(server.port, first, "POST" if i == 0 else "GET") for i in range(8)]
    headers, error = refused_stream(server.port, first)  # the grant's 9th
    assert int(headers["retry-after"]) > 0 and headers["content-type"] == "application/json"
    assert error["error"] == "temporarily_unavailable" and "grant" in error["error_description"]

    theirs = [open_stream(server.port, second) for _ in range(2)]  # another grant: 9th and 10th in all
    headers, error = refused_stream(server.port, second)  # 11th in all, 3rd of its grant
    assert int(headers["retry-after"]) > 0
    assert error["error"] == "temporarily_unavailable" and "server" in error["error_description"]

    mine.pop().close()  # a stream ends: its slot comes back
    deadline = time.monotonic() + ENDED_WITHIN
    while True:
        with send_request(server.port, second) as sock:
            status = read_head(sock)[0]
        if status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert status == 200
    for sock in mine + theirs:
        sock.close()


def test_a_client_that_leaves_nginx_ends_its_stream(tmp_path, silent, test_ca):
    """Behind the README's nginx example (examples/nginx-gateway.conf), a client's
    leaving reaches us as nginx closing its connection: the stream still ends, and its
    upstream connection is closed, within 5 s."""
    listen, oauth_port = free_port(), free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(
        tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer, OAUTH_UPSTREAM_URL=silent.url
    )
    seed_users(server.data_dir, {"alice": PASSWORD})
    server.start()
    try:
        with tls_proxy("nginx", "nginx-gateway.conf", tmp_path, listen, {8000: oauth_port}, test_ca):
            server.base = issuer
            access = tokens_for(server)[1]["access_token"]
            context = ssl.create_default_context(cafile=str(test_ca.ca_file))
            raw = socket.create_connection(("127.0.0.1", listen), timeout=5)
            with context.wrap_socket(raw, server_hostname=TEST_HOST) as sock:
                sock.sendall(
                    f"GET /mcp HTTP/1.1\r\nHost: {TEST_HOST}:{listen}\r\nAuthorization: Bearer {access}\r\n"
                    "Accept: text/event-stream\r\n\r\n".encode()
                )
                status, headers, _ = read_head(sock)
                assert status == 200 and headers["content-type"].startswith("text/event-stream")
                assert silent.open == 1
            left = time.monotonic()
            assert silent.wait(lambda: silent.open == 0, ENDED_WITHIN + 1), "the upstream connection stayed open"
            assert silent.connections[0].closed - left < ENDED_WITHIN  # type: ignore[operator]
    finally:
        server.stop()
