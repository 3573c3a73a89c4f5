"""POST /token (RFC 6749 §3.2), /revoke (RFC 7009) and /introspect (RFC 7662),
answered by the server's Authlib endpoints (app/oauth2/)."""

from __future__ import annotations

from urllib.parse import unquote

from flask import Blueprint, Response, request

from ..observability import count_token_error
from ..repositories import grant_named_by
from ..routes import authenticates_clients, cross_origin
from ..services import services
from ..storage import StaleRead
from .once import handed

bp = authenticates_clients(Blueprint("token", __name__))


def _what_a_refresh_reads() -> list[tuple[str, str]]:
    """A refresh reads its client, then the grant its token names: read together."""
    form = request.form
    grant_id = grant_named_by(form.get("refresh_token", "")) if form.get("grant_type") == "refresh_token" else None
    # the client id as client authentication will take it (RFC 6749 §2.3.1)
    basic = request.authorization
    client_id = form.get("client_id") or (unquote(basic.username or "") if basic else "")
    return [("clients", client_id), ("grants", grant_id)] if grant_id and client_id else []


@bp.post("/token")
@cross_origin
def token() -> Response:
    app = services()
    wanted = _what_a_refresh_reads()
    try:
        # This instance most likely served the grant's last refresh too: the client and
        # grant as it then saw them, checked when the grant is rewritten (base.py).
        with app.store.read_ahead(wanted, assume_known=True):
            response = app.server.create_token_response()
    except StaleRead:
        # Another instance changed one since, and nothing was written: read them now.
        with app.store.read_ahead(wanted):
            response = app.server.create_token_response()
    if response.status_code != 200:
        body = response.get_json(silent=True) or {}
        count_token_error(request.form.get("grant_type"), body.get("error"))
    return response


@bp.post("/revoke")
@cross_origin
def revoke() -> Response:
    return services().server.create_endpoint_response("revocation")


@bp.post("/introspect")
def introspect() -> Response:
    server = services().server
    answer = handed(request.environ, server.introspect) or server.introspect(server.create_oauth2_request(None))
    return server.handle_response(*answer)
