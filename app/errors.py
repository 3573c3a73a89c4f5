"""Error responses and security headers.

API endpoints answer errors in RFC 6749 §5.2 JSON (`error`, `error_description`);
pages a person sees (their blueprint declared `for_people`, app/routes.py) answer with
a plain HTML page. Never a stack trace.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from urllib.parse import unquote

from flask import Flask, Response, current_app, g, render_template, request
from werkzeug.exceptions import BadRequest, HTTPException, InternalServerError
from werkzeug.http import HTTP_STATUS_CODES

from .routes import Routes
from .storage import StoreError

log = logging.getLogger(__name__)

#: a WSGI answer: status line, headers, body (the paths answered in front of Flask, and
#: the answers a fast front and a Flask view share: app/endpoints/once.py)
Answer = tuple[str, list[tuple[str, str]], Iterable[bytes]]

#: on every response
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'"
#: on a page that runs one of our own scripts (`allow_own_scripts`): the passkey
#: ceremonies' app/static/passkeys.js, which calls back to this server only
CSP_WITH_SCRIPT = CSP + "; script-src 'self'; connect-src 'self'"


def allow_own_scripts() -> None:
    """This response is a page that loads a script from our static files: its CSP
    allows scripts and requests from this origin only (every other page keeps none)."""
    g.own_scripts = True


def _is_page() -> bool:
    """Whether a person sees this answer: its endpoint's blueprint is declared
    `for_people` (app/routes.py); routed nowhere (a 405), whether its path is such an
    endpoint's."""
    routes: Routes = current_app.extensions["routes"]
    rule = request.url_rule
    return rule.endpoint in routes.pages if rule is not None else request.path in routes.page_paths


def _error_code(status: int) -> str:
    return {
        400: "invalid_request",
        401: "invalid_token",
        403: "access_denied",
        404: "not_found",
        405: "invalid_request",
        413: "invalid_request",
        415: "invalid_request",
        429: "temporarily_unavailable",
    }.get(status, "server_error")


def json_error(
    status: int, error: str, description: str, headers: dict[str, str] | None = None
) -> tuple[str, list[tuple[str, str]], list[bytes]]:
    """An RFC 6749 §5.2 JSON error as a WSGI answer (status line, headers, body), for
    the paths answered in front of Flask."""
    body = json.dumps({"error": error, "error_description": description}).encode()
    fields = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Cache-Control": "no-store",
        **SECURITY_HEADERS,
        **(headers or {}),
    }
    return f"{status} {HTTP_STATUS_CODES.get(status, 'Unknown')}", list(fields.items()), [body]


def error_response(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Response:
    """An RFC 6749 §5.2 JSON error."""
    _, fields, body = json_error(status, error, description, headers)
    return Response(body, status=status, headers=fields)


#: bodies whose fields the endpoints read as a form
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


def refuse_nul_parameters() -> None:
    """No OAuth parameter holds NUL (RFC 6749 Appendix A: VSCHAR and friends are
    printable), nor does a name, password or id: a query, form, path or Basic
    credential that holds one is refused where it enters, with 400 in the format of
    the endpoint (JSON, or the error page at /authorize and the forms), before anything
    is looked up or stored (PostgreSQL's text cannot hold NUL). The gateway's
    requests are the upstream's business and are not read here."""
    if request.blueprint == "gateway":
        return
    values = [*request.args.keys(), *request.args.values(), *(request.view_args or {}).values()]
    if request.method == "POST" and request.mimetype in FORMS:
        values += [*request.form.keys(), *request.form.values()]
    if not request.headers.get("Authorization", "").isascii():
        # credentials are base64 or token68 (RFC 9110 §11.4); Werkzeug raises on others
        raise BadRequest("The Authorization header must be ASCII.")
    basic = request.authorization
    if basic is not None and basic.type == "basic":
        # form-urlencoded inside (RFC 6749 §2.3.1): `a%00b` is a NUL too
        values += [unquote(basic.username or ""), unquote(basic.password or "")]
    if any("\x00" in value for value in values if isinstance(value, str)):
        raise BadRequest("A request parameter holds a NUL character.")


def init_app(app: Flask) -> None:
    app.before_request(refuse_nul_parameters)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        if _is_page():
            return (
                render_template("error.html", title=exc.name, error=_error_code(status), message=exc.description),
                status,
            )
        return error_response(status, _error_code(status), exc.description or exc.name)

    @app.errorhandler(StoreError)
    def store_unavailable(exc: StoreError):
        # The disk is full or read-only, or a file was damaged: nothing the client
        # did. 503 tells it to come back; the operator sees the cause in the log.
        log.error("store unavailable on %s %s: %s", request.method, request.path, exc)
        if _is_page():
            return (
                render_template(
                    "error.html",
                    title="Temporarily unavailable",
                    error="temporarily_unavailable",
                    message="The server cannot save anything right now. Try again in a few minutes.",
                ),
                503,
                {"Retry-After": "30"},
            )
        return error_response(
            503, "temporarily_unavailable", "The server cannot save its state right now.", {"Retry-After": "30"}
        )

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        # The type only: a message could carry request data.
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.path, exc_info=exc)
        return http_error(InternalServerError(description="The server hit an unexpected error."))

    @app.after_request
    def security_headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "text/html" and request.blueprint != "gateway":
            response.headers.setdefault("Content-Security-Policy", CSP_WITH_SCRIPT if g.get("own_scripts") else CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
            response.headers.setdefault("Cache-Control", "no-store")
        return response
