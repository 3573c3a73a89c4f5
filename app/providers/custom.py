"""The Custom provider: local users (users.json) and our own login page.

On the first start with no users it creates `admin` with a random password, prints the
password once on the console and stores only its scrypt hash.
"""

from __future__ import annotations

import secrets
import sys

from flask import Blueprint, Flask, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..config import Config
from ..pending import PendingAuthorization
from ..repositories import UserRepository
from ..security import check_csrf
from .base import Identity, IdentityProvider, browser_id, current_identity, remember_login

FIRST_USER = "admin"


class CustomProvider(IdentityProvider):
    name = "custom"

    def __init__(self, config: Config, users: UserRepository):
        super().__init__(config)
        self.users = users

    def init_app(self, app: Flask) -> None:
        bp = Blueprint("custom", __name__, url_prefix=self.config.issuer_path)
        bp.add_url_rule("/login", "login", self.login_view, methods=["GET", "POST"])
        app.register_blueprint(bp)

    def on_startup(self) -> None:
        password = secrets.token_urlsafe(12)
        if self.users.all():
            return
        if self.users.set_password(FIRST_USER, password, create=True):
            # Printed once, like Jenkins' first password; only the hash is stored.
            print(
                f"\n  First start: created user '{FIRST_USER}' with password: {password}\n"
                "  Keep it now; it is not shown again. Change it with: flask oauth set-password admin\n",
                file=sys.stdout,
                flush=True,
            )

    def start_login(self, pending: PendingAuthorization) -> ResponseReturnValue:
        return redirect(url_for("custom.login", request_id=pending.id))

    def identity_still_valid(self, identity: Identity) -> bool:
        return self.users.get(identity.subject) is not None

    def login_view(self) -> ResponseReturnValue:
        from .. import services

        request_id = request.values.get("request_id", "")
        pending = services().pending.get(request_id, browser_id())
        if request.method == "GET":
            if pending and current_identity(self):
                return redirect(url_for("authorize.consent", request_id=pending.id))
            return render_template("login.html", request_id=request_id, pending=pending, error=None)

        check_csrf()
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        if not username or not self.users.authenticate(username, password):
            return (
                render_template(
                    "login.html",
                    request_id=request_id,
                    pending=pending,
                    error="Wrong user name or password.",
                    username=username,
                ),
                401,
            )
        remember_login(Identity(subject=username, provider=self.name, name=username))
        if pending:
            return redirect(url_for("authorize.consent", request_id=pending.id))
        return render_template("message.html", title="Signed in", message=f"You are signed in as {username}.")
