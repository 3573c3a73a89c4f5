"""POST /register (RFC 7591) and GET, PUT, DELETE /register/<client_id> (RFC 7592):
the limits an open registration endpoint needs on the internet, then Authlib's
endpoints (app/oauth2/rfc7591.py, rfc7592.py)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response
from flask import request as flask_request
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import error_response
from ..forwarded import network_key
from ..oauth2.rfc7591 import MAX_BODY
from ..observability import REGISTRATIONS, audit
from ..repositories import RegistrationRefused
from ..routes import cross_origin
from ..services import services
from ..throttle import LimitReached

bp = Blueprint("registration", __name__)

TOO_LARGE = f"The registration body may be at most {MAX_BODY} bytes."


def body_too_large() -> bool:
    """Whether the request body exceeds MAX_BODY (read at most that much)."""
    flask_request.max_content_length = MAX_BODY
    try:
        flask_request.get_data(cache=True)
    except RequestEntityTooLarge:
        return True
    return False


@bp.post("/register")
@cross_origin
def register() -> Response:
    svc = services()
    config = svc.config
    if body_too_large():
        REGISTRATIONS.labels("invalid_metadata").inc()
        return error_response(400, "invalid_client_metadata", TOO_LARGE)
    # Past the network's rate, refused before the metadata is read or a client made,
    # as far as this instance knows already; the rate itself is counted as the client
    # is stored (app/oauth2/rfc7591.py), where the rest of a flood is refused. The
    # client caps are checked there too, once the metadata is valid: an invalid
    # registration never evicts anyone.
    network = network_key(config)
    wait = svc.server.registration_rate.wait_known_here(network) if config.registration_rate else 0
    if wait:
        return rate_limited(network, wait)
    try:
        response = svc.server.create_endpoint_response("client_registration")
    except LimitReached as reached:  # the network's rate, checked as the client is stored
        return rate_limited(reached.key, reached.wait)
    except RegistrationRefused as cap:
        refused(cap.reason, network)
        return error_response(429, "temporarily_unavailable", cap.description, {"Retry-After": str(cap.retry_after)})
    REGISTRATIONS.labels("accepted" if response.status_code == 201 else "invalid_metadata").inc()
    return response


def rate_limited(address: str, wait: int) -> Response:
    refused("rate_limited", address)
    return error_response(
        429, "temporarily_unavailable", "Too many registrations from this address.", {"Retry-After": str(wait)}
    )


def refused(reason: str, address: str) -> None:
    """A registration refused by a limit (not by its metadata): worth an audit line."""
    REGISTRATIONS.labels(reason).inc()
    audit("client.registration_refused", logging.WARNING, reason=reason, address=address)


@bp.route("/register/<client_id>", methods=["GET", "PUT", "DELETE"])
@cross_origin
def configure(client_id: str) -> Response:
    if body_too_large():
        return error_response(400, "invalid_client_metadata", TOO_LARGE)
    response = services().server.create_endpoint_response("client_configuration")
    response.headers["Cache-Control"] = "no-store"
    return response
