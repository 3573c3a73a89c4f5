"""Serve the authorization server with waitress: `python wsgi.py` (what `make run` runs).

Start-up problems (bad configuration, an unreadable store file) end the process with
one line naming the cause, and exit status 2.
"""

from __future__ import annotations

import logging
import sys

from app import create_app
from app.config import Config, ConfigError
from app.storage import StoreError


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = Config.from_env()
        app = create_app(config)
    except (ConfigError, StoreError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2

    from waitress import serve

    print(f"Serving {config.issuer} on http://{config.host}:{config.port} ({config.provider} provider)", flush=True)
    serve(
        app,
        host=config.host,
        port=config.port,
        threads=config.threads,
        ident="mcp-oauth",
        # /verify reads X-Forwarded-Host/-Uri (ForwardAuth); they only pick the resource to check.
        clear_untrusted_proxy_headers=False,
        channel_timeout=300,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
