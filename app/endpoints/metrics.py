"""GET /metrics: the Prometheus text format (app/observability.py has the metrics),
served only to OAUTH_METRICS_ALLOW. The address is the client's as the trusted proxies
report it, so a scraper behind the same proxy as the internet is told apart from it."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import services
from ..errors import error_response
from ..forwarded import address_in, client_address

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
def metrics() -> Response:
    config = services().config
    if not address_in(client_address(config), config.metrics_allow):
        return error_response(403, "access_denied", "Metrics are not served to this address.")
    return Response(generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST, "Cache-Control": "no-store"})
