"""Serve the authorization server with waitress: `mcp-oauth serve`, `python wsgi.py` and
`make run` all come here.

A start-up either serves or ends with one line naming the cause and exit status 2 (a
bad configuration, a port in use, a data folder that cannot be read or written): the
address is bound and the store read and written once *before* the start-up line, so
that no "Serving" line ever precedes a failure. The start-up line names the issuer,
the listen address, the store and the data folder as an absolute path, so that a
server started from another directory (a relative OAUTH_DATA_DIR) says where it keeps
its state.
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from . import __version__, create_app
from .config import Config, ConfigError, environment, parse_log_format
from .observability import configure_logging
from .storage import COLLECTIONS, StoreError

log = logging.getLogger("mcp_oauth")


class StartupError(Exception):
    """A start-up that cannot go on; the message is the one line the operator sees."""


def main() -> int:
    try:
        log_format = parse_log_format(environment())
    except ConfigError:
        log_format = "text"  # reported below, with the rest of the configuration
    configure_logging(log_format)
    try:
        config = Config.from_env()
        log_format = config.log_format
        check_listen(config.host, config.port)
        new_store = config.store == "file" and is_new_store(config.data_dir)
        app = create_app(config)  # checks that the store can be read and written
        server = bind(app, config)
    except (ConfigError, StoreError, StartupError) as exc:
        report_error(log_format, exc)
        return 2

    data_dir = config.data_dir.absolute()
    listen = listen_address(server)
    store = "file" if config.store == "file" else "postgresql"
    where = f"in {data_dir}" if store == "file" else f"at {database_location(config.store)}"
    log.info(
        "Serving %s on %s (mcp-oauth %s, %s store %s, %s provider)",
        config.issuer,
        listen,
        __version__,
        store,
        where,
        config.provider,
        extra={
            "event": "server.started",
            "fields": {
                "issuer": config.issuer,
                "listen": listen,
                "store": store,
                "data_dir": str(data_dir),
                "provider": config.provider,
                "version": __version__,
            },
        },
    )
    if new_store:
        log.warning(
            "New store: there was none in %s, so an empty one was made there "
            "(OAUTH_DATA_DIR names the folder; a relative one is taken from the current directory)",
            data_dir,
            extra={"event": "store.created", "fields": {"data_dir": str(data_dir)}},
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
        _serve(server)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            backend = app.extensions["oauth"].store
            backend.stop_upkeep()
            backend.compact()
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


def check_listen(host: str, port: int) -> None:
    """Bind each address HOST names and let go at once, as waitress will bind them
    (SO_REUSEADDR): a port in use, or an address this machine does not have, is told
    before the store is opened (a first start would otherwise make the store and its
    first password for a server that never serves)."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (HOST, PORT)") from None
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                raise StartupError(f"cannot listen on {_show(address)}: {exc.strerror or exc}") from None


def bind(app: Any, config: Config) -> Any:
    """waitress's server, bound (wsgi.create_server: its settings and its channel)."""
    from wsgi import create_server  # shipped beside the package (pyproject.toml)

    try:
        return create_server(app, config)
    except OSError as exc:  # taken between check_listen and now
        raise StartupError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None


def listen_address(server: Any) -> str:
    """The bound addresses as URLs (a HOST may name several)."""
    listening = getattr(server, "effective_listen", None) or [(server.effective_host, server.effective_port)]
    return ", ".join(f"http://{_show((host, port))}" for host, port in listening)


def _show(address: tuple[Any, ...]) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"


def is_new_store(data_dir: Path) -> bool:
    """No store file in the folder yet (or no folder): this start makes an empty store."""
    try:
        names = {p.name for p in data_dir.iterdir()}
    except OSError:
        return True  # none there (an unreadable one is reported when the store opens it)
    return not any(name in names or f"{name}.journal" in names for name in COLLECTIONS.values())


def database_location(url: str) -> str:
    """host:port/database of a postgresql:// URL: never its user or password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}{f':{parts.port}' if parts.port else ''}{parts.path or '/'}"


def _serve(server: Any) -> None:
    server.run()
