"""The passkey endpoints of the Custom provider (the ceremonies are app/passkeys.py).

- `POST /passkeys/register/options`, `POST /passkeys/register`: a logged-in person adds
  a passkey (from /account, with app/static/passkeys.js);
- `POST /passkeys/login/options`, `POST /passkeys/login`: a person signs in with one
  (from /login), which completes a pending authorization as a password login does;
- `POST /passkeys/<credential id>/remove`: a form on /account.

The four ceremony endpoints take and answer JSON (errors as RFC 6749 §5.2 JSON, which
the script shows), and each checks the session's CSRF token, sent by the script in the
`X-CSRF-Token` header. A failed passkey sign-in counts in the login throttle as a
failed password does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..errors import allow_own_scripts, error_response
from ..forwarded import client_address, network_key
from ..models import Person
from ..observability import audit, note
from ..passkeys import MAX_CREDENTIAL_ID_CHARS, PasskeyError, credential_id_of, json_body
from ..providers.base import browser_id, current_person, login_failed, remember_login
from ..security import check_csrf, csrf_valid
from ..services import services

if TYPE_CHECKING:
    from ..providers.custom import CustomProvider

bp = Blueprint("passkeys", __name__)

#: the header the script sends the session's CSRF token in
CSRF_HEADER = "X-CSRF-Token"
#: the throttle's name for a sign-in with a credential no user holds (no user name has
#: parentheses or spaces, app/records.py USERNAME)
UNKNOWN_PASSKEY = "(unknown passkey)"
#: where the person's account page is, once it exists (app/endpoints/account.py)
ACCOUNT_ENDPOINT = "account.account"


def init_app(app: Flask, provider: CustomProvider) -> None:
    app.register_blueprint(bp, url_prefix=f"{provider.config.issuer_path}/passkeys")
    app.add_template_global(passkeys_script)
    app.add_template_global(passkeys_of)


def passkeys_script() -> str:
    """The URL of app/static/passkeys.js, for a page that uses it (its CSP then allows it)."""
    allow_own_scripts()
    return url_for("static", filename="passkeys.js")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC") if ts else ""


def passkeys_of(person: Person) -> list[dict[str, Any]]:
    """The person's passkeys for their account page (account_passkeys.html)."""
    rows = _provider().passkeys.of(person.subject)
    return [{**row, "created": _when(row["created_at"]), "last_used": _when(row["last_used_at"])} for row in rows]


def _provider() -> CustomProvider:
    return services().provider  # type: ignore[return-value]  # only the Custom provider registers these


def _account_url() -> str | None:
    return url_for(ACCOUNT_ENDPOINT) if ACCOUNT_ENDPOINT in current_app.view_functions else None


def _ceremony_body() -> dict[str, Any] | Response:
    """The JSON object a ceremony endpoint was sent, after its CSRF check; or the error."""
    if not csrf_valid(request.headers.get(CSRF_HEADER, "")):
        return error_response(400, "invalid_request", "The page expired or was not sent from this site. Reload it.")
    if request.mimetype != "application/json":
        return error_response(415, "invalid_request", "Send JSON.")
    body = json_body(request.get_data(cache=False))
    if body is None:
        return error_response(400, "invalid_request", "The body must be a JSON object.")
    return body


def _options(json_text: str) -> Response:
    return Response(json_text, mimetype="application/json", headers={"Cache-Control": "no-store"})


def _registering() -> tuple[dict[str, Any], CustomProvider, Person] | Response:
    """A registration step's body, provider and signed-in person; or the error."""
    body = _ceremony_body()
    if isinstance(body, Response):
        return body
    provider = _provider()
    person = current_person(provider)
    if person is None:
        return error_response(401, "login_required", "Sign in first.")
    return body, provider, person


@bp.post("/register/options")
def register_options() -> ResponseReturnValue:
    step = _registering()
    if isinstance(step, Response):
        return step
    _, provider, person = step
    try:
        return _options(provider.passkeys.registration_options(person.subject, browser_id()))
    except PasskeyError as exc:
        return error_response(400, "invalid_request", str(exc))


@bp.post("/register")
def register() -> ResponseReturnValue:
    step = _registering()
    if isinstance(step, Response):
        return step
    body, provider, person = step
    try:
        credential_id = provider.passkeys.register(person.subject, browser_id(), body.get("credential"))
    except PasskeyError as exc:
        audit("passkey.refused", subject=person.subject, ceremony="register", reason=str(exc))
        return error_response(400, "invalid_request", str(exc))
    note(subject=person.subject)
    audit("passkey.added", subject=person.subject, credential_id=credential_id, address=client_address(provider.config))
    return jsonify(redirect=_account_url(), message="Passkey added.")


@bp.post("/login/options")
def login_options() -> ResponseReturnValue:
    body = _ceremony_body()
    if isinstance(body, Response):
        return body
    return _options(_provider().passkeys.authentication_options(browser_id()))


@bp.post("/login")
def login() -> ResponseReturnValue:
    body = _ceremony_body()
    if isinstance(body, Response):
        return body
    provider = _provider()
    config = provider.config
    address = client_address(config)
    credential = body.get("credential")
    owner = provider.passkeys.owner_of(credential_id_of(credential))
    subject: str | None = owner["username"] if owner else None
    name = subject or UNKNOWN_PASSKEY
    # Counted as a failure from here on, as a password is (LoginThrottle.begin).
    wait, attempt = provider.throttle.begin(network_key(config), name)
    if attempt is None:
        login_failed(provider.name, "throttled", subject=subject, address=address, method="passkey")
        return error_response(
            429,
            "temporarily_unavailable",
            f"Too many failed attempts. Try again in {wait} second(s).",
            {"Retry-After": str(wait)},
        )
    try:
        signed_in = provider.passkeys.authenticate(browser_id(), credential, owner)
    except PasskeyError as exc:
        login_failed(provider.name, "passkey_refused", subject=subject, address=address, detail=str(exc))
        return error_response(401, "access_denied", str(exc))
    provider.throttle.succeeded(attempt)
    audit("passkey.login", subject=signed_in.username, credential_id=signed_in.credential_id, address=address)
    person = Person(subject=signed_in.username, provider=provider.name, name=signed_in.username)
    request_id = body.get("request_id")
    pending = provider.pending.get(request_id, browser_id()) if isinstance(request_id, str) and request_id else None
    if pending is not None:
        # As a password login: on to consent for the request the person came with.
        answer = provider.logged_in(person, pending)
        return jsonify(redirect=answer.location if isinstance(answer, Response) else None)
    remember_login(person)
    return jsonify(redirect=_account_url(), message=f"You are signed in as {signed_in.username}.")


@bp.post("/<credential_id>/remove")
def remove(credential_id: str) -> ResponseReturnValue:
    """A form on /account: remove one of this person's passkeys."""
    check_csrf()
    provider = _provider()
    person = current_person(provider)
    account = _account_url()
    if person is None:
        return redirect(account or url_for("custom.login"), 303)
    removed = len(credential_id) <= MAX_CREDENTIAL_ID_CHARS and provider.passkeys.remove(person.subject, credential_id)
    if removed:
        note(subject=person.subject)
        audit(
            "passkey.removed",
            subject=person.subject,
            credential_id=credential_id,
            address=client_address(provider.config),
        )
    if account is not None:
        return redirect(account, 303)
    message = "The passkey was removed." if removed else "There was no such passkey to remove."
    return render_template("message.html", title="Passkeys", message=message)
