"""Serve the authorization server with waitress: `python wsgi.py` (what `make run` runs;
the same as `mcp-oauth serve`, app/serve.py).

Here: how waitress serves the app (its settings and its channel), which app/serve.py
and the tests' in-thread server use. The wheel ships this module beside the package.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import Any

from waitress.task import WSGITask

from app.config import Config
from app.endpoints.gateway import MAX_BODY as MAX_REQUEST_BODY
from app.serve import main
from app.serving import CHECK_INTERVAL, PacedChannel
from app.serving import create_server as guarded_server

#: seconds an idle connection is kept open
IDLE_TIMEOUT = 60


def waitress_options(config: Config) -> dict[str, Any]:
    """How waitress serves the app (the tests' in-thread server uses the same)."""
    gateway = config.upstream_url is not None
    return {
        "host": config.host,
        "port": config.port,
        # In gateway mode a forwarded request holds its thread until its answer ends,
        # and at most OAUTH_MAX_STREAMS are forwarded at once (app/streams.py): the
        # OAUTH_THREADS beside them are always there for everything else.
        "threads": config.threads + (config.max_streams if gateway else 0),
        # Read a connection while its request is served, so that a client that leaves
        # an idle stream is seen (`waitress.client_disconnected`): one request ahead.
        "channel_request_lookahead": 1 if gateway else 0,
        "ident": "mcp-oauth",
        # Forwarded headers are judged by the app against OAUTH_TRUSTED_PROXIES
        # (app/forwarded.py); waitress's own proxy handling stays off.
        "clear_untrusted_proxy_headers": False,
        # Sized for the internet: a request is read by waitress's event loop before a
        # worker thread sees it, so half-sent requests only hold a connection slot,
        # and an idle connection gives its slot back after a minute.
        "connection_limit": config.connection_limit,
        "channel_timeout": IDLE_TIMEOUT,
        # How often the header deadline and the body's pace are checked (app/serving.py).
        "cleanup_interval": CHECK_INTERVAL,
        # waitress refuses a body of this size or more; the gateway takes MAX_BODY itself
        # (each path's own limit is applied before this one: app/serving.py).
        "max_request_body_size": MAX_REQUEST_BODY + 1,
    }


class HeadWithBodyTask(WSGITask):
    """waitress sends a response's head with one `send` and its body with another: with
    TCP_NODELAY, two segments, two wake-ups of the client and two system calls for every
    small answer (an MCP call through the gateway, a /verify). A body of known length
    goes out here in the same `send` as the head; any other answer as waitress sends it."""

    wrote_header: bool

    def write(self, data: bytes) -> None:
        if self.wrote_header or not data or not self.complete:
            super().write(data)
            return
        head = self.build_response_header()  # decides has_body, chunking and length
        self.wrote_header = True
        if not self.has_body or self.chunked_response or self.content_length is None:
            self.channel.write_soon(head)
            super().write(data)
            return
        body = data[: self.content_length]
        self.content_bytes_written = len(body)
        self.channel.write_soon(head + body)
        if len(body) < len(data):
            super().write(data[len(body) :])  # more than Content-Length: waitress drops it and warns


class HeadWithBodyChannel(PacedChannel):
    task_class = HeadWithBodyTask


def create_server(app: Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]], config: Config) -> Any:
    """waitress's server for the app (what `python wsgi.py` runs, and the tests'
    in-thread server), held to the slow-client rules (app/serving.py), its connections
    served by `HeadWithBodyTask`."""
    return guarded_server(app, config, waitress_options(config), HeadWithBodyChannel)


if __name__ == "__main__":
    sys.exit(main())
