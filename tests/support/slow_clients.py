"""Helpers shared by tests/{e2e,http}/test_slow_clients.py."""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
from dataclasses import dataclass

DEAD_UPSTREAM = "http://127.0.0.1:9/mcp"  # gateway mode; nothing here reaches the upstream
KIB = 1024


@dataclass
class Outcome:
    """How a trickle ended: after how many seconds the server closed (None: it never
    did before GIVE_UP), and what it answered."""

    seconds: float | None
    answer: bytes = b""

    @property
    def status(self) -> int | None:
        line = self.answer.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 and line[1].isdigit() else None

    def json(self) -> dict:
        return json.loads(self.answer.split(b"\r\n\r\n", 1)[1])


def connect(port: int, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> socket.socket:
    sock = socket.socket()
    sock.bind((source, 0))
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    if tls is not None:
        from support.tls import TEST_HOST

        sock = tls.wrap_socket(sock, server_hostname=TEST_HOST)
    return sock


def read_to_end(sock: socket.socket) -> bytes:
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def ask(
    port: int, request: bytes, source: str = "127.0.0.1", tls: ssl.SSLContext | None = None, whole: bool = True
) -> Outcome:
    """Send `request` (headers, maybe a body) and read the answer to its end (or, not
    `whole`, its first part)."""
    with connect(port, source, tls) as sock:
        sock.sendall(request)
        return Outcome(0, read_to_end(sock) if whole else sock.recv(65536))


# -- body size per path -----------------------------------------------------------------


def head_of(method: str, path: str, length: int, *extra: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: a", "Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join([*lines, *extra]) + "\r\n\r\n").encode()
