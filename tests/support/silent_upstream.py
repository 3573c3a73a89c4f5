"""An MCP server that opens event streams and then says nothing: the gateway's upstream
for the stream tests (tests/e2e/test_streams.py) and `make bench`'s idle streams.

Every request is answered with `text/event-stream` headers (chunked, as uvicorn sends
SSE) and then silence, as an MCP server's GET stream with no notification to send, or
a POST whose tool call is still running; a request for a path ending in `/mute` gets
not even headers (an upstream still thinking). It notes when each of its connections is
closed by the gateway. One thread, a selector, any number of connections."""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


@dataclass
class Connection:
    opened: float = field(default_factory=time.monotonic)
    received: bytes = b""
    answered: bool = False
    closed: float | None = None


class SilentUpstream:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=512)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/mcp"
        self.connections: list[Connection] = []
        self._selector = selectors.DefaultSelector()
        self._selector.register(self.listener, selectors.EVENT_READ)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-upstream", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            for key, _ in self._selector.select(0.05):
                if key.fileobj is self.listener:
                    self._accept()
                else:
                    self._read(key.fileobj, key.data)  # type: ignore[arg-type]
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._selector.close()

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except BlockingIOError:
            return
        conn.setblocking(False)
        connection = Connection()
        self.connections.append(connection)
        self._selector.register(conn, selectors.EVENT_READ, connection)

    def _read(self, conn: socket.socket, connection: Connection) -> None:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        if not data:
            connection.closed = time.monotonic()
            self._selector.unregister(conn)
            conn.close()
            return
        connection.received += data
        if not connection.answered and b"\r\n\r\n" in connection.received:
            connection.answered = True
            target = connection.received.split(b" ", 2)[1]
            if not target.split(b"?")[0].endswith(b"/mute"):
                conn.sendall(STREAM_HEAD)

    @property
    def open(self) -> int:
        """Connections the gateway holds open now."""
        return sum(1 for c in self.connections if c.closed is None)

    def wait(self, condition, seconds: float) -> bool:
        """Whether `condition()` came true within `seconds`."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5)
