"""How wsgi.py serves: waitress, with a response's head and a body of known length sent
together (`HeadWithBodyTask`). Real waitress on a loopback port, read with a raw socket,
so that what goes on the wire is what is checked."""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from support.harness import InThread
from waitress.channel import HTTPChannel

from app.config import Config
from wsgi import create_server


def _answers(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """A small WSGI app with one answer of each framing waitress distinguishes."""
    path = environ["PATH_INFO"]
    if path == "/known":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [b"hello"]
    if path == "/too-long":  # says 5, writes 11: waitress sends 5
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
        return [b"hello world"]
    if path == "/unknown-length":  # waitress chunks it (HTTP/1.1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"hello", b" world"]
    start_response("204 No Content", [])
    return [b"ignored"]


@contextlib.contextmanager
def _serving(stock: bool = False) -> Iterator[int]:
    """`_answers` served by wsgi.py's waitress (or, `stock`, by waitress's own channel);
    its port."""
    server = create_server(_answers, Config(host="127.0.0.1", port=0, threads=2))
    if stock:
        server.channel_class = HTTPChannel
    running = InThread(server, "serving")
    try:
        yield server.effective_port
    finally:
        running.stop()


@pytest.fixture
def served() -> Iterator[int]:
    with _serving() as port:
        yield port


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """(what the first `recv` returned, the whole answer up to the end of its body of
    known length)."""
    first = data = sock.recv(65536)
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"\r\nContent-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return first, head + b"\r\n\r\n" + body


def test_a_small_answer_leaves_in_one_send_with_its_head(served):
    """Sent in two, the head alone reaches the first `recv` about half the time on
    loopback; sent together, never."""
    with socket.create_connection(("127.0.0.1", served), timeout=10) as sock:
        for _ in range(30):
            sock.sendall(b"GET /known HTTP/1.1\r\nHost: x\r\n\r\n")
            first, whole = _read_answer(sock)
            assert first == whole and whole.startswith(b"HTTP/1.1 200 OK\r\n") and whole.endswith(b"\r\n\r\nhello")


def _exchange(port: int, request_line: bytes) -> bytes:
    """The server's whole answer to one request on a connection it then closes, its
    Date left out."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request_line + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return re.sub(rb"\r\nDate: [^\r]*", b"", answer)


@pytest.mark.parametrize(
    "request_line",
    [
        b"GET /known HTTP/1.1",
        b"GET /too-long HTTP/1.1",  # cut to its Content-Length
        b"GET /unknown-length HTTP/1.1",  # chunked
        b"GET /none HTTP/1.1",  # a 204 has no body
        b"HEAD /known HTTP/1.1",
        b"GET /known HTTP/1.0",
    ],
)
def test_every_answer_is_byte_for_byte_what_waitress_sends(request_line):
    with _serving() as ours, _serving(stock=True) as stock:
        answer = _exchange(ours, request_line)
        assert answer.startswith(b"HTTP/1.")
        assert answer == _exchange(stock, request_line)
