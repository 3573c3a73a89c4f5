"""The boundary between "who is this person" and the OAuth machinery.

A provider logs a person in (locally or upstream) and reports a `Person`; it never
touches tokens, codes or the store's internals. Everything after that (consent, the
code, tokens) is the same whichever provider is configured.
"""

from __future__ import annotations

import logging
import secrets
import time
from abc import ABC, abstractmethod
from dataclasses import asdict
from typing import TYPE_CHECKING, ClassVar

from flask import Flask, redirect, session, url_for
from flask.typing import ResponseReturnValue

from ..models import Person
from ..observability import LOGINS, audit, note
from ..security import CSRF_FIELD

if TYPE_CHECKING:
    from ..config import Config
    from ..pending import PendingAuthorization
    from ..repositories import UserRepository

IDENTITY_KEY = "identity"
BROWSER_KEY = "browser_id"


class IdentityProvider(ABC):
    name: ClassVar[str]

    def __init__(self, config: Config):
        self.config = config

    @classmethod
    def create(cls, config: Config, users: UserRepository) -> IdentityProvider:
        """The provider for this configuration (the local one also needs the users)."""
        return cls(config)

    def init_app(self, app: Flask) -> None:
        """Register the provider's own routes (login page, upstream callback)."""

    def on_startup(self) -> None:
        """Called once when the server (not the CLI) starts."""

    @abstractmethod
    def start_login(self, pending: PendingAuthorization) -> ResponseReturnValue:
        """Send the person to log in; once they have, call `logged_in`."""

    def logged_in(self, person: Person, pending: PendingAuthorization) -> ResponseReturnValue:
        """Remember the login in the session and hand the person on to consent for
        the authorization request they came with."""
        remember_login(person)
        return self.to_consent(pending)

    @staticmethod
    def to_consent(pending: PendingAuthorization) -> ResponseReturnValue:
        return redirect(url_for("authorize.consent", request_id=pending.id))

    def identity_still_valid(self, identity: Person) -> bool:
        """Whether a remembered login may still be used (e.g. the user still exists)."""
        return True


def login_failed(provider: str, reason: str, **fields: str | None) -> None:
    """Count and audit a login that did not succeed (never with what was typed as
    a password)."""
    LOGINS.labels(provider, "throttled" if reason == "throttled" else "failed").inc()
    audit("login.failed", logging.WARNING, provider=provider, reason=reason, **fields)


def browser_id() -> str:
    """A random id of this browser session, to bind pending requests to it."""
    value = session.get(BROWSER_KEY)
    if not value:
        value = session[BROWSER_KEY] = secrets.token_urlsafe(18)
    return value


def remember_login(identity: Person) -> None:
    LOGINS.labels(identity.provider, "succeeded").inc()
    note(subject=identity.subject)
    audit("login.succeeded", provider=identity.provider, subject=identity.subject)
    session.permanent = True
    session[IDENTITY_KEY] = {**asdict(identity), "login_at": time.time()}
    # A fresh CSRF token after login (the pre-login one may have been seen by others).
    session.pop(CSRF_FIELD, None)


def current_identity(provider: IdentityProvider) -> Person | None:
    data = session.get(IDENTITY_KEY)
    if not isinstance(data, dict) or data.get("provider") != provider.name:
        return None
    identity = Person(
        subject=data["subject"],
        provider=data["provider"],
        name=data.get("name", ""),
        email=data.get("email"),
        login_at=float(data.get("login_at", 0)),
    )
    if not provider.identity_still_valid(identity):
        session.pop(IDENTITY_KEY, None)
        return None
    return identity
