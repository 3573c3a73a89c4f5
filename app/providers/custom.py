"""The Custom provider: local users (users.json) and our own login page.

On the first start with no users it creates `admin` with a random password, prints the
password once on the console and stores only its scrypt hash.
"""

from __future__ import annotations

import secrets
import sys
import threading
import time

from flask import Blueprint, Flask, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from .. import services
from ..config import Config
from ..pending import PendingAuthorization
from ..repositories import UserRepository
from ..security import check_csrf
from .base import Identity, IdentityProvider, browser_id, current_identity, remember_login

FIRST_USER = "admin"


class LoginThrottle:
    """Slows password guessing, in memory: after `limit` failures for a user name from
    one address within `window` seconds (or 4 x `limit` for the name from anywhere),
    further tries for it are refused until the oldest failure leaves the window."""

    def __init__(self, limit: int = 10, window: int = 900):
        self.limit = limit
        self.window = window
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: tuple[str, str], now: float) -> list[float]:
        times = [t for t in self._failures.get(key, []) if now - t < self.window]
        if times:
            self._failures[key] = times
        else:
            self._failures.pop(key, None)
        return times

    def retry_after(self, address: str, username: str) -> int:
        """Seconds until this address may try this name again (0 = now)."""
        now = time.time()
        name = username.lower()
        with self._lock:
            waits = []
            for key, limit in (((address, name), self.limit), (("*", name), 4 * self.limit)):
                times = self._recent(key, now)
                if len(times) >= limit:
                    waits.append(int(times[-limit] + self.window - now) + 1)
            return max(waits, default=0)

    MAX_KEYS = 50_000

    def failed(self, address: str, username: str) -> None:
        now = time.time()
        name = username.lower()
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:  # a spray of names: forget the stale
                for key in list(self._failures):
                    self._recent(key, now)
            for key in ((address, name), ("*", name)):
                self._failures.setdefault(key, []).append(now)

    def succeeded(self, address: str, username: str) -> None:
        with self._lock:
            self._failures.pop((address, username.lower()), None)


class CustomProvider(IdentityProvider):
    name = "custom"

    def __init__(self, config: Config, users: UserRepository):
        super().__init__(config)
        self.users = users
        self.throttle = LoginThrottle()

    def init_app(self, app: Flask) -> None:
        bp = Blueprint("custom", __name__, url_prefix=self.config.issuer_path)
        bp.add_url_rule("/login", "login", self.login_view, methods=["GET", "POST"])
        app.register_blueprint(bp)

    def on_startup(self) -> None:
        if self.users.all():
            return
        password = secrets.token_urlsafe(12)
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
        """The user still exists and the password did not change since this login."""
        user = self.users.get(identity.subject)
        return user is not None and user.get("password_changed_at", 0) <= identity.login_at

    def login_view(self) -> ResponseReturnValue:
        request_id = request.values.get("request_id", "")
        pending = services().pending.get(request_id, browser_id())
        if request.method == "GET":
            if pending and current_identity(self):
                return redirect(url_for("authorize.consent", request_id=pending.id))
            return render_template("login.html", request_id=request_id, pending=pending, error=None)

        check_csrf()
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        address = request.remote_addr or "?"
        wait = self.throttle.retry_after(address, username)
        if wait:
            minutes = (wait + 59) // 60
            return (
                render_template(
                    "login.html",
                    request_id=request_id,
                    pending=pending,
                    error=f"Too many failed attempts. Try again in {minutes} minute(s).",
                    username=username,
                ),
                429,
                {"Retry-After": str(wait)},
            )
        if not username or not self.users.authenticate(username, password):
            self.throttle.failed(address, username)
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
        self.throttle.succeeded(address, username)
        remember_login(Identity(subject=username, provider=self.name, name=username))
        if pending:
            return redirect(url_for("authorize.consent", request_id=pending.id))
        return render_template("message.html", title="Signed in", message=f"You are signed in as {username}.")
