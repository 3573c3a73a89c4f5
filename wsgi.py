"""Serve the authorization server with waitress: `python wsgi.py` (what `make run` runs).

Start-up problems (bad configuration, an unreadable store file) end the process with
one line naming the cause, and exit status 2.
"""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask
from waitress.task import WSGITask

from app import create_app
from app.config import Config, ConfigError, environment, parse_log_format
from app.endpoints.gateway import MAX_BODY as MAX_REQUEST_BODY
from app.observability import configure_logging
from app.serving import CHECK_INTERVAL, PacedChannel
from app.serving import create_server as guarded_server
from app.storage import StoreError

#: seconds an idle connection is kept open
IDLE_TIMEOUT = 60


log = logging.getLogger("mcp_oauth")


def main() -> int:
    try:
        log_format = parse_log_format(environment())
    except ConfigError:
        log_format = "text"  # reported below, with the rest of the configuration
    configure_logging(log_format)
    try:
        config = Config.from_env()
        app = create_app(config)
    except (ConfigError, StoreError) as exc:
        report_error(log_format, exc)
        return 2

    listen = f"http://{config.host}:{config.port}"
    store = "file" if config.store == "file" else "postgresql"
    log.info(
        "Serving %s on %s (%s provider)",
        config.issuer,
        listen,
        config.provider,
        extra={"event": "server.started", "fields": {"issuer": config.issuer, "listen": listen, "store": store}},
    )

    # A clean stop (Ctrl-C, SIGTERM from systemd or a container) ends the gateway's
    # open streams, so that waitress need not wait out its shutdown timeout for their
    # threads, then compacts the store's journals into its JSON files, so that those
    # alone are the whole truth.
    def stop(signum: int, _frame: object) -> None:
        upstream = app.extensions.get("gateway_upstream")
        if upstream is not None:
            upstream.end_streams()
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        _serve(app, config)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            app.extensions["oauth"].store.compact()
        except StoreError as exc:
            report_error(config.log_format, exc)
    return 0


def report_error(log_format: str, exc: Exception) -> None:
    """One line: `Error: …` for a person at a terminal, a JSON object for a log
    collector."""
    if log_format == "json":
        log.error("%s", exc, extra={"event": "server.error", "fields": {"error": str(exc)}})
    else:
        print(f"Error: {exc}", file=sys.stderr)


def waitress_options(config: Config) -> dict[str, Any]:
    """How waitress serves the app (the tests' in-thread server uses the same)."""
    return {
        "host": config.host,
        "port": config.port,
        "threads": config.threads,
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
        "max_request_body_size": MAX_REQUEST_BODY,
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


def _serve(app: Flask, config: Config) -> None:
    server = create_server(app, config)
    server.print_listen("Serving on http://{}:{}")
    server.run()


if __name__ == "__main__":
    sys.exit(main())
