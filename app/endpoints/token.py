"""POST /token (RFC 6749 §3.2), /revoke (RFC 7009) and /introspect (RFC 7662),
answered by the server's Authlib endpoints (app/oauth2/)."""

from __future__ import annotations

from flask import Blueprint, Response, request

from .. import services
from ..observability import count_token_error

bp = Blueprint("token", __name__)


@bp.post("/token")
def token() -> Response:
    response = services().server.create_token_response()
    if response.status_code != 200:
        body = response.get_json(silent=True) or {}
        count_token_error(request.form.get("grant_type"), body.get("error"))
    return response


@bp.post("/revoke")
def revoke() -> Response:
    return services().server.create_endpoint_response("revocation")


@bp.post("/introspect")
def introspect() -> Response:
    # A 200 is usually answered in front of Flask (app/hotpath.py); the same
    # endpoint answers here whatever that path leaves.
    return services().server.create_endpoint_response("introspection")
