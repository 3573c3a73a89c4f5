"""Slow clients (CONTRACT "Holding up on the open internet (round 2)", app/serving.py):
a request's headers within 10 s, its body at a minimal pace, at most
OAUTH_CONNECTIONS_PER_ADDRESS connections per client address, body sizes bounded per
path before the body is read; directly and through the README's nginx example.

Raw sockets against `python wsgi.py`. The trickles take the real 10 s: they all start
with the module's server, in threads, and are judged by the last tests of the module,
while the others run."""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from support.harness import Server, free_port
from support.slow_clients import DEAD_UPSTREAM, KIB, Outcome, ask, connect, head_of, read_to_end

from app.serving import BODY_ALLOWANCE, HEADER_TIMEOUT

GAP = 2.0  # seconds between two bytes of a trickle
GIVE_UP = 16.0  # a trickle still served after this was never cut


def trickle(sock: socket.socket, first: bytes, rest: bytes, gap: float = GAP, size: int = 1) -> Outcome:
    """Send `first`, then `rest` `size` bytes every `gap` seconds, until the server
    answers or closes; the clock starts once `first` is sent."""
    with sock:
        sock.sendall(first)
        start = time.monotonic()
        for offset in range(0, len(rest) + 1, size):
            if select.select([sock], [], [], gap)[0]:
                return Outcome(time.monotonic() - start, read_to_end(sock))
            if time.monotonic() - start > GIVE_UP:
                return Outcome(None)
            try:
                sock.sendall(rest[offset : offset + size])
            except OSError:
                return Outcome(time.monotonic() - start, read_to_end(sock))
        sock.settimeout(GIVE_UP)
        answer = read_to_end(sock)
        return Outcome(time.monotonic() - start, answer)


@dataclass
class Site:
    server: Server
    pool: ThreadPoolExecutor
    trickles: dict[str, Future] = field(default_factory=dict)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """One gateway-mode server, and the direct trickles started at once."""
    tmp = tmp_path_factory.mktemp("slow")
    server = Server(tmp / "data", tmp, OAUTH_UPSTREAM_URL=DEAD_UPSTREAM).start()
    pool = ThreadPoolExecutor(8)
    port = server.port
    get = b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
    post = b"POST /token HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    site = Site(server, pool)
    site.trickles = {
        # Addresses of their own: the connection-limit test counts 127.0.0.3.
        "headers": pool.submit(trickle, connect(port, "127.0.0.6"), b"", get),
        "nothing": pool.submit(trickle, connect(port, "127.0.0.7"), b"", b""),
        "headers in 8 s": pool.submit(trickle, connect(port, "127.0.0.8"), b"", get, gap=8 / 4, size=len(get) // 4 + 1),
        "body": pool.submit(trickle, connect(port, "127.0.0.9"), post + b"Content-Length: 1000\r\n\r\n", b"a=" * 500),
        "body at 2 KiB/s": pool.submit(
            trickle,
            connect(port, "127.0.0.10"),
            post + f"Content-Length: {24 * KIB}\r\nConnection: close\r\n\r\n".encode(),
            b"x" * 24 * KIB,
            gap=0.5,
            size=KIB,
        ),
    }
    try:
        yield site
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        server.stop()


@pytest.fixture(scope="module")
def proxied(site, tmp_path_factory) -> Iterator[tuple[int, ssl.SSLContext]]:
    """examples/nginx-gateway.conf (it streams bodies) in front of the module's server,
    with its own header trickle started at once: (its port, a TLS context for it)."""
    from support.proxies import tls_proxy
    from support.tls import TEST_HOST, make_ca, resolving

    tmp = tmp_path_factory.mktemp("nginx")
    ca = make_ca(tmp / "ca", TEST_HOST)
    listen = free_port()
    tls = ssl.create_default_context(cafile=str(ca.ca_file))
    with pytest.MonkeyPatch.context() as env, resolving(TEST_HOST):
        env.setenv("REQUESTS_CA_BUNDLE", str(ca.ca_file))
        with tls_proxy("nginx", "nginx-gateway.conf", tmp, listen, {8000: site.server.port}, ca):
            get = f"GET /healthz HTTP/1.1\r\nHost: {TEST_HOST}\r\nConnection: close\r\n\r\n".encode()
            site.trickles["nginx headers"] = site.pool.submit(trickle, connect(listen, "127.0.0.11", tls), b"", get)
            yield listen, tls
            site.trickles["nginx headers"].result(GIVE_UP + 5)  # before nginx stops


def held(port: int, source: str, tls: ssl.SSLContext | None = None, host: str = "a") -> socket.socket:
    """A connection that was served once and is kept open."""
    sock = connect(port, source, tls)
    sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    assert sock.recv(65536).startswith(b"HTTP/1.1 200"), source
    return sock


def refused(sock: socket.socket, request: bytes) -> bool:
    """Whether the server closes `sock` without answering `request`."""
    try:
        sock.sendall(request)
        return sock.recv(65536) == b""
    except OSError:
        return True


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"


# -- through nginx (first, so that its trickle runs while the rest is tested) -------------


def test_through_nginx_one_address_holds_at_most_50_connections(site, proxied):
    from support.tls import TEST_HOST

    listen, tls = proxied
    # nginx counts connections with a request under way: bodies promised, not sent.
    pending = f"POST /token HTTP/1.1\r\nHost: {TEST_HOST}\r\nContent-Length: 10\r\n\r\n".encode()
    flood = []
    try:
        for _ in range(50):
            sock = connect(listen, "127.0.0.3", tls)
            sock.sendall(pending)
            flood.append(sock)
        time.sleep(0.5)  # nginx has read every request's headers
        over = ask(listen, pending, "127.0.0.3", tls, whole=False)
        assert over.status == 429, over.answer[:200]
        other = ask(
            listen,
            f"GET /healthz HTTP/1.1\r\nHost: {TEST_HOST}\r\nConnection: close\r\n\r\n".encode(),
            "127.0.0.2",
            tls,
        )
        assert other.status == 200, other.answer[:200]
    finally:
        for sock in flood:
            sock.close()


# -- connections per address ----------------------------------------------------------


def test_one_address_holds_at_most_50_connections_a_trusted_proxy_more(site):
    port = site.server.port
    flood = [held(port, "127.0.0.3") for _ in range(50)]
    proxy = []
    try:
        assert refused(connect(port, "127.0.0.3"), HEALTHZ)  # the 51st
        assert held(port, "127.0.0.2")  # another address is served meanwhile
        # 127.0.0.1 is a trusted proxy (the default): it carries everyone's requests.
        proxy = [held(port, "127.0.0.1") for _ in range(55)]
        flood.pop().close()  # a slot is free again
        deadline = time.monotonic() + 5
        while refused(connect(port, "127.0.0.3"), HEALTHZ):
            assert time.monotonic() < deadline, "a closed connection still counts"
            time.sleep(0.1)
    finally:
        for sock in flood + proxy:
            sock.close()


@pytest.mark.parametrize(
    ("method", "path", "limit"),
    [
        ("POST", "/register", 16 * KIB),
        ("PUT", "/register/some-client", 16 * KIB),
        ("POST", "/token", 64 * KIB),
        ("POST", "/revoke", 64 * KIB),
        ("POST", "/introspect", 64 * KIB),
        ("POST", "/login", 64 * KIB),
        ("POST", "/consent", 64 * KIB),
        ("POST", "/mcpx", 64 * KIB),  # not below the gateway's path
    ],
)
def test_a_body_over_its_path_limit_is_refused_before_it_is_sent(site, method, path, limit):
    port = site.server.port
    # Headers only, the body never sent: the answer comes at once (a 100-continue
    # client gets no `100 Continue` first).
    for extra in ((), ("Expect: 100-continue",)):
        with connect(port, "127.0.0.4") as sock:
            sock.settimeout(5)
            sock.sendall(head_of(method, path, limit + 1, *extra))
            answer = Outcome(0, read_to_end(sock))
        assert answer.status == 413, answer.answer[:300]
        assert answer.json()["error"] == "invalid_request"
        assert str(limit) in answer.json()["error_description"]
    # At the limit, the body is read and the app answers.
    at_limit = ask(port, head_of(method, path, limit, "Connection: close") + b"x" * limit, "127.0.0.4")
    assert at_limit.status not in (413, None), at_limit.answer[:300]


def test_a_chunked_body_is_cut_off_past_its_path_limit(site):
    with connect(site.server.port, "127.0.0.4") as sock:
        sock.sendall(b"POST /token HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):  # the server may close while we send
            for _ in range(17):  # 68 KiB
                sock.sendall(b"1000\r\n" + b"a" * 4096 + b"\r\n")
        answer = Outcome(0, read_to_end(sock))
    assert answer.status == 413 and answer.json()["error"] == "invalid_request", answer.answer[:300]


def test_the_gateway_path_takes_large_bodies(site):
    body = b"x" * (1024 * KIB)
    answer = ask(site.server.port, head_of("POST", "/mcp/echo", len(body), "Connection: close") + body, "127.0.0.4")
    assert answer.status == 401, answer.answer[:300]  # read whole, then refused for its missing token


# -- the trickles, started with the module ----------------------------------------------


def _cut_in_time(outcome: Outcome, allowance: float) -> None:
    assert outcome.seconds is not None, "never cut"
    assert allowance - 1 <= outcome.seconds <= allowance + 5, outcome.seconds


def test_headers_must_arrive_within_10_s(site):
    for name in ("headers", "nothing"):  # a trickle; a connection that sends nothing
        outcome = site.trickles[name].result(GIVE_UP + 5)
        _cut_in_time(outcome, HEADER_TIMEOUT)
        assert outcome.status == 408 and outcome.json()["error"] == "invalid_request", (name, outcome.answer)
    slow_but_in_time = site.trickles["headers in 8 s"].result(GIVE_UP + 5)
    assert slow_but_in_time.status == 200, slow_but_in_time.answer[:300]


def test_a_body_must_keep_pace(site):
    outcome = site.trickles["body"].result(GIVE_UP + 5)
    _cut_in_time(outcome, BODY_ALLOWANCE)
    assert outcome.status == 408 and outcome.json()["error"] == "invalid_request", outcome.answer
    phone = site.trickles["body at 2 KiB/s"].result(GIVE_UP + 5)  # 12 s for 24 KiB: answered
    assert phone.status not in (408, None), phone.answer[:300]


def test_through_nginx_headers_must_arrive_within_10_s(site, proxied):
    outcome = site.trickles["nginx headers"].result(GIVE_UP + 5)
    _cut_in_time(outcome, HEADER_TIMEOUT)


def test_nothing_was_left_behind(site):
    """The server is still whole after all this (and logged no traceback)."""
    assert ask(site.server.port, b"GET /healthz HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").status == 200
    assert "Traceback" not in site.server.output
