"""The Custom provider: local users (users.json) and our own login page.

On the first start with no users it creates `admin` with a random password, prints the
password once on the console and stores only its scrypt hash.
"""

from __future__ import annotations

import logging
import os
import secrets
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from ..config import Config, ConfigError, Setting
from ..forwarded import client_address, network_key
from ..models import Person
from ..observability import audit
from ..passkeys import Passkeys
from ..pending import PendingAuthorization, PendingAuthorizations
from ..repositories import UserRepository
from ..security import check_csrf
from ..storage.base import SharedState
from ..storage.local import LocalState
from ..throttle import SlidingWindow
from .base import IdentityProvider, browser_id, current_person, login_failed, remember_login

log = logging.getLogger(__name__)

FIRST_USER = "admin"
#: where the first password waits when the log is JSON (in OAUTH_DATA_DIR)
FIRST_PASSWORD_FILE = "first-password"
#: longer inputs fail without a hash: no user name is longer (the CLI's rule), and
#: scrypt of a huge password would only cost CPU
MAX_NAME = 64
MAX_PASSWORD = 1024
#: the shortest password a user may set (the CLI's rule, and the account page's)
MIN_PASSWORD = 8
#: OAUTH_PASSKEYS: passkeys are offered beside passwords, or a user who has one must use it
PASSKEYS_MODES = ("optional", "required")


@dataclass(frozen=True)
class LoginAttempt:
    network: str
    name: str
    at: float


#: how long a network that logged in as a user stays known for that user's name (`LoginThrottle`)
KNOWN_NETWORK_DAYS = 30
#: networks remembered as known at most (only a successful login adds one), and their kind
MAX_KNOWN_NETWORKS = 50_000
KNOWN_KIND = "login-known"


class LoginThrottle:
    """Slows password guessing without letting anyone lock a person out.

    Every limit counts a client by its network (`app.forwarded.network_key`: an IPv4
    address, or the /64 of an IPv6 one, all of which one subscriber may use).

    - Per network and user name: `per_name` failures within `window` seconds, then
      that network waits until the oldest leaves the window.
    - Per network, any names: `per_address` failures (a spray of names).
    - Per user name from everywhere: from `hot` failures on, the name is under
      attack, and its password is checked at most once per `slow_spacing` seconds,
      for all networks together: an attacker with a whole /48 (65,536 networks of
      10 guesses each) still guesses at that pace, not at CPU speed. A network that
      logged in as that user within `known_for` seconds is never held back by the
      others, so a stranger cannot lock a person out of a well-known name like
      `admin` where the person usually logs in from.

    An attempt counts as failed from the moment it starts (`begin`), so concurrent
    guesses, at one instance or several, cannot all pass one check before any is
    recorded; `succeeded` takes it back.
    """

    def __init__(
        self,
        per_name: int = 10,
        per_address: int = 50,
        hot: int = 40,
        window: int = 900,
        slow_spacing: float = 2.0,
        known_for: float = KNOWN_NETWORK_DAYS * 86400,
        state: SharedState | None = None,
    ):
        #: the store's short-lived state (a new in-process one when none is given)
        self.state: SharedState = state if state is not None else LocalState()
        self.pairs = SlidingWindow(per_name, window, self.state, "login-pair")
        self.networks = SlidingWindow(per_address, window, self.state, "login-address")
        self.names = SlidingWindow(hot, window, self.state, "login-name")
        self.slow_lane = SlidingWindow(1, slow_spacing, self.state, "login-slow")
        #: "network name" -> when that network last logged in as that name
        self.state.bound(KNOWN_KIND, MAX_KNOWN_NETWORKS)
        self.known_for = known_for
        self._lock = threading.Lock()

    @staticmethod
    def _pair(network: str, name: str) -> str:
        return f"{network} {name.lower()}"

    def begin(self, network: str, name: str) -> tuple[int, LoginAttempt | None]:
        """(0, the attempt) when the password may be checked now, else (seconds to
        wait, None)."""
        name = name.lower()
        pair = self._pair(network, name)
        now = time.time()
        with self._lock:
            # Each limit is checked and recorded in one step (`hit`; one transaction
            # when instances share the windows), then taken back if a later one says
            # wait: two instances cannot both let through the last allowed guess.
            wait = self.pairs.hit(pair, now)
            if wait:
                return max(wait, self.networks.retry_after(network, now)), None
            wait = self.networks.hit(network, now)
            if not wait and self.names.retry_after(name, now) and self.state.get(KNOWN_KIND, pair) is None:
                wait = self.slow_lane.hit(name, now)
                if wait:
                    self.networks.undo(network, now)
            if wait:
                self.pairs.undo(pair, now)
                return wait, None
            self.names.add(name, now)
            return 0, LoginAttempt(network, name, now)

    def succeeded(self, attempt: LoginAttempt) -> None:
        pair = self._pair(attempt.network, attempt.name)
        with self._lock:
            self.pairs.forget(pair)
            self.networks.undo(attempt.network, attempt.at)
            self.names.undo(attempt.name, attempt.at)
            self.state.put(KNOWN_KIND, pair, attempt.at, attempt.at + self.known_for)


class CustomProvider(IdentityProvider):
    name = "custom"
    SETTINGS = (Setting("OAUTH_PASSKEYS", default="optional", lower=True),)

    @classmethod
    def read_settings(cls, env: Mapping[str, str]) -> dict[str, Any]:
        settings = super().read_settings(env)
        if settings["OAUTH_PASSKEYS"] not in PASSKEYS_MODES:
            mode = settings["OAUTH_PASSKEYS"]
            raise ConfigError(f"OAUTH_PASSKEYS must be {' or '.join(PASSKEYS_MODES)}, not {mode!r}")
        return settings

    @classmethod
    def create(
        cls, config: Config, settings: Mapping[str, Any], *, users: UserRepository, pending: PendingAuthorizations
    ) -> CustomProvider:
        return cls(config, settings, pending, users)

    def __init__(
        self, config: Config, settings: Mapping[str, Any], pending: PendingAuthorizations, users: UserRepository
    ):
        super().__init__(config, settings, pending)
        self.users = users
        self.throttle = LoginThrottle(state=users.store.shared)
        self.passkeys = Passkeys(config, users)
        #: OAUTH_PASSKEYS=required: a user who has a passkey cannot log in with the password alone
        self.passkeys_required = settings.get("OAUTH_PASSKEYS") == "required"

    def init_app(self, app: Flask) -> None:
        from ..endpoints import passkeys

        bp = Blueprint("custom", __name__, url_prefix=self.config.issuer_path)
        bp.add_url_rule("/login", "login", self.login_view, methods=["GET", "POST"])
        app.register_blueprint(bp)
        passkeys.init_app(app, self)

    def on_startup(self) -> None:
        if self.users.all():
            return
        password = secrets.token_urlsafe(12)
        if not self.users.set_password(FIRST_USER, password, create=True):
            return
        audit("user.added", name=FIRST_USER, by="first start")
        if self.config.log_format == "json":
            # A JSON log goes to a collector, and a password must not: it waits in a
            # file only the server's user can read.
            self.config.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.config.data_dir / FIRST_PASSWORD_FILE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(password + "\n")
            log.warning(
                "First start: created user %r; its password is in %s (delete the file once read)",
                FIRST_USER,
                path,
                extra={"event": "user.first_password", "fields": {"name": FIRST_USER, "password_file": str(path)}},
            )
        else:
            # Printed once, like Jenkins' first password; only the hash is stored.
            print(
                f"\n  First start: created user '{FIRST_USER}' with password: {password}\n"
                "  Keep it now; it is not shown again. Change it with: flask oauth set-password admin\n",
                file=sys.stdout,
                flush=True,
            )

    def start_login(self, pending: PendingAuthorization) -> ResponseReturnValue:
        return redirect(url_for("custom.login", request_id=pending.id))

    def person_still_valid(self, person: Person) -> bool:
        """The user still exists and the password did not change since this login."""
        user = self.users.get(person.subject)
        return user is not None and user.get("password_changed_at", 0) <= person.login_at

    def change_password(self, person: Person, current: str, new: str) -> tuple[int, str | None]:
        """A logged-in person changes their own password on the account page: (0, None)
        when it changed, else (the HTTP status, what to tell them). The current password
        is checked as a login is: a wrong one counts as a failed login in the throttle
        (a stolen session cannot guess it at CPU speed) and is audited as one. Every
        other login session of the user ends (`person_still_valid`); the caller renews
        this one."""
        if not MIN_PASSWORD <= len(new) <= MAX_PASSWORD:
            return 400, f"The new password must have {MIN_PASSWORD} to {MAX_PASSWORD} characters."
        address = client_address(self.config)
        wait, attempt = self.throttle.begin(network_key(self.config), person.subject[:MAX_NAME])
        if not attempt:  # throttled
            login_failed(self.name, "throttled", subject=person.subject, address=address)
            return 429, f"Too many failed attempts. Try again in {wait} second(s)."
        if len(current) > MAX_PASSWORD or not self.users.authenticate(person.subject, current):
            login_failed(self.name, "wrong_password", subject=person.subject, address=address)
            return 401, "The current password is wrong."
        self.throttle.succeeded(attempt)
        if not self.users.set_password(person.subject, new, create=False):
            return 400, "This user no longer exists."
        audit("account.password_changed", subject=person.subject, address=address)
        return 0, None

    def _known(self, username: str) -> str | None:
        """The name typed, if it is a user's: what else was typed in the name field
        (a password, by mistake) is never logged."""
        return username if 0 < len(username) <= MAX_NAME and self.users.get(username) else None

    def login_view(self) -> ResponseReturnValue:
        request_id = request.values.get("request_id", "")
        pending = self.pending.get(request_id, browser_id())
        if request.method == "GET":
            if pending and current_person(self):
                return self.to_consent(pending)
            return render_template("login.html", request_id=request_id, pending=pending, error=None)

        check_csrf()
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        address = client_address(self.config)
        wait, attempt = self.throttle.begin(network_key(self.config), username[:MAX_NAME])
        if attempt is None:
            login_failed(self.name, "throttled", subject=self._known(username), address=address)
            later = f"{(wait + 59) // 60} minute(s)" if wait >= 60 else f"{wait} second(s)"
            return (
                render_template(
                    "login.html",
                    request_id=request_id,
                    pending=pending,
                    error=f"Too many failed attempts. Try again in {later}.",
                    username=username,
                ),
                429,
                {"Retry-After": str(wait)},
            )
        plausible = 0 < len(username) <= MAX_NAME and len(password) <= MAX_PASSWORD
        if plausible and self.passkeys_required and self.passkeys.has_passkey(username):
            # Refused before the password is checked: whether it was right is never told.
            login_failed(self.name, "passkey_required", subject=username, address=address)
            return (
                render_template(
                    "login.html",
                    request_id=request_id,
                    pending=pending,
                    error="This account signs in with its passkey: use “Sign in with a passkey”.",
                    username=username,
                ),
                401,
            )
        if not plausible or not self.users.authenticate(username, password):
            known = self._known(username)
            login_failed(self.name, "wrong_password" if known else "unknown_user", subject=known, address=address)
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
        self.throttle.succeeded(attempt)
        person = Person(subject=username, provider=self.name, name=username)
        if pending:
            return self.logged_in(person, pending)
        remember_login(person)
        return render_template("message.html", title="Signed in", message=f"You are signed in as {username}.")
