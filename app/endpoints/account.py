"""The person's side: the front page, their account (the apps they connected, with a
Disconnect for each; with the Custom provider, their password) and sign-out.

Every page is plain HTML without script, unframeable (app/errors.py's CSP), and every
form carries the session's CSRF token. `/account` shows and changes only what belongs
to the person logged in: their approvals and grants (app/connections.py).
"""

from __future__ import annotations

from flask import Blueprint, flash, get_flashed_messages, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..connections import connected_apps, disconnect, when
from ..forwarded import client_address, network_key
from ..models import Person
from ..observability import audit, note
from ..pending import FOR_ACCOUNT, TooManyPending
from ..providers.base import browser_id, current_person, end_login, renew_login
from ..providers.custom import MIN_PASSWORD, CustomProvider
from ..routes import for_people
from ..security import check_csrf
from ..services import services

bp = for_people(Blueprint("account", __name__))

#: a client id as a form may name it: longer ones are no client's
MAX_CLIENT_ID = 2000


@bp.get("/")
def front() -> ResponseReturnValue:
    """What this server is, for whoever opens its address (never a JSON 404)."""
    svc = services()
    # An upstream provider's name on the button (Google, GitHub, OIDC_NAME): who the
    # person will sign in with.
    upstream = getattr(svc.provider, "title", None)
    return render_template(
        "front.html", issuer=svc.config.issuer, person=current_person(svc.provider), upstream=upstream
    )


def _login_first() -> ResponseReturnValue:
    """Not logged in: the provider's login, then back to /account (a pending login
    with nothing to authorize, bound to this browser like any other)."""
    svc = services()
    try:
        pending = svc.pending.create({}, browser_id(), network_key(svc.config), then=FOR_ACCOUNT)
    except TooManyPending as refused:
        return (
            render_template(
                "error.html",
                title="Too many sign-ins in progress",
                error="temporarily_unavailable",
                message="Too many sign-ins are in progress from your network. Try again in a few minutes.",
            ),
            429,
            {"Retry-After": str(refused.wait)},
        )
    return svc.provider.start_login(pending)


def _person() -> Person | None:
    person = current_person(services().provider)
    if person is not None:
        note(subject=person.subject)
    return person


@bp.get("/account")
def account() -> ResponseReturnValue:
    svc = services()
    person = _person()
    if person is None:
        return _login_first()
    # Back from the login this page started: that pending login is done.
    pending = svc.pending.get(request.args.get("request_id"), browser_id())
    if pending is not None and pending.then == FOR_ACCOUNT:
        svc.pending.finish(pending.id)
    return _page(person)


def _page(person: Person, status: int = 200, password_error: str | None = None) -> ResponseReturnValue:
    svc = services()
    return (
        render_template(
            "account.html",
            person=person,
            issuer=svc.config.issuer,
            apps=connected_apps(svc.clients, svc.grants, person),
            when=when,
            local_users=isinstance(svc.provider, CustomProvider),
            min_password=MIN_PASSWORD,
            password_error=password_error,
            messages=get_flashed_messages(),
        ),
        status,
    )


@bp.post("/account/disconnect")
def disconnect_app() -> ResponseReturnValue:
    """Take this person's access back from one app (their grants and approval only)."""
    check_csrf()
    svc = services()
    person = _person()
    if person is None:
        return redirect(url_for("account.account"), 303)
    client_id = request.form.get("client_id", "")[:MAX_CLIENT_ID]
    forgot, removed = disconnect(svc.clients, svc.grants, person, client_id) if client_id else (False, 0)
    if forgot or removed:
        note(client_id=client_id)
        audit("account.disconnected", client_id=client_id, subject=person.subject, grants_revoked=removed)
        client = svc.clients.get(client_id)
        flash(f"Disconnected {client.client_name if client else client_id}: it has no access any more.")
    else:
        flash("That app had no access to disconnect.")
    return redirect(url_for("account.account"), 303)


@bp.post("/account/password")
def change_password() -> ResponseReturnValue:
    """With the Custom provider: the person's own password (the current one first)."""
    check_csrf()
    svc = services()
    person = _person()
    if person is None:
        return redirect(url_for("account.account"), 303)
    if not isinstance(svc.provider, CustomProvider):
        return _page(person, 400, "Passwords are kept by your sign-in provider, not here.")
    new = request.form.get("new_password", "")
    if new != request.form.get("new_password_again", ""):
        return _page(person, 400, "The two new passwords differ.")
    status, problem = svc.provider.change_password(person, request.form.get("current_password", ""), new)
    if problem is not None:
        return _page(person, status, problem)
    renew_login(person)  # every other session of this user ended; this one goes on
    flash("Password changed. Other browsers signed in as you have been signed out.")
    return redirect(url_for("account.account"), 303)


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """Sign out: the login session ends (the next /authorize asks for a login again)."""
    check_csrf()
    person = _person()
    end_login()
    if person is not None:
        audit("account.signed_out", subject=person.subject, address=client_address(services().config))
    return render_template("message.html", title="Signed out", message="You are signed out. You can close this window.")
