"""Serve the authorization server with waitress: `python wsgi.py` (what `make run` runs).

Start-up problems (bad configuration, an unreadable store file) end the process with
one line naming the cause, and exit status 2.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Any

from flask import Flask

from app import create_app
from app.config import Config, ConfigError, environment, parse_log_format
from app.endpoints.gateway import MAX_BODY as MAX_REQUEST_BODY
from app.observability import configure_logging
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
    # A clean stop (Ctrl-C, SIGTERM from systemd or a container) compacts the store's
    # journals into its JSON files, so that those alone are the whole truth.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
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
        "max_request_body_size": MAX_REQUEST_BODY,
    }


def _serve(app: Flask, config: Config) -> None:
    from waitress import serve

    serve(app, **waitress_options(config))


if __name__ == "__main__":
    sys.exit(main())
