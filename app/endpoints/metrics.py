"""GET /metrics: the Prometheus text format (app/observability.py has the metrics),
served only to OAUTH_METRICS_ALLOW. The address is the client's as the trusted proxies
report it, so a scraper behind the same proxy as the internet is told apart from it.

The release (`mcp_oauth_build_info`) and how many clients, grants and users there are
(`mcp_oauth_clients`, `…_grants`, `…_users`) are set here when a scrape asks: a count
each, which the store answers without reading the records (a dict's length in the
file store, one `count(*)` in PostgreSQL), and nothing on any other request."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import error_response
from ..forwarded import address_in, client_address
from ..observability import BUILD_INFO, CLIENTS, GRANTS, USERS
from ..services import services
from ..storage import StoreError

bp = Blueprint("metrics", __name__)

BUILD_INFO.info({"version": __version__})


@bp.get("/metrics")
def metrics() -> Response:
    config = services().config
    if not address_in(client_address(config), config.metrics_allow):
        return error_response(403, "access_denied", "Metrics are not served to this address.")
    store = services().store
    try:
        CLIENTS.set(store.count("clients"))
        GRANTS.set(store.count("grants"))
        USERS.set(store.count("users"))
    except StoreError:
        pass  # the rest is still served (/healthz tells what is wrong)
    return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
