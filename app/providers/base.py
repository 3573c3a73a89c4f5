"""The boundary between "who is this person" and the OAuth machinery.

A provider logs a person in (locally or upstream) and reports a `Person`; it never
touches tokens, codes or the store's internals. Everything after that (consent, the
code, tokens) is the same whichever provider is configured.

A provider owns its configuration: it declares the variables it reads (`SETTINGS`, its
bases' included), which are read and checked before anything else starts
(`read_settings`), and it is built from them and what the factory hands it (`create`):
it imports nothing of the factory's.
"""

from __future__ import annotations

import logging
import secrets
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, ClassVar

from flask import Flask, redirect, session, url_for
from flask.typing import ResponseReturnValue

from ..config import Setting, read_settings
from ..models import Person
from ..observability import LOGINS, audit, note
from ..pending import FOR_ACCOUNT
from ..security import CSRF_FIELD

if TYPE_CHECKING:
    from ..config import Config
    from ..pending import PendingAuthorization, PendingAuthorizations
    from ..repositories import UserRepository

#: the session's key for the logged-in person (its value, "identity", is what sessions
#: issued before carry)
PERSON_KEY = "identity"
BROWSER_KEY = "browser_id"


class IdentityProvider(ABC):
    name: ClassVar[str]
    #: the variables this class reads; a subclass adds its own (`declared_settings`)
    SETTINGS: ClassVar[tuple[Setting, ...]] = ()

    def __init__(self, config: Config, settings: Mapping[str, Any], pending: PendingAuthorizations):
        self.config = config
        #: the declared variables' values, by name (`read_settings`)
        self.settings = settings
        #: the authorization requests waiting for a login (the provider's views resume them)
        self.pending = pending

    @classmethod
    def declared_settings(cls) -> tuple[Setting, ...]:
        """Every variable this provider reads: its bases' first, then its own."""
        return tuple(s for klass in reversed(cls.__mro__) for s in vars(klass).get("SETTINGS", ()))

    @classmethod
    def read_settings(cls, env: Mapping[str, str]) -> dict[str, Any]:
        """This provider's variables from the environment, checked: a bad or missing
        one raises `ConfigError` with one line naming it. Pure, so that the factory
        calls it before it touches any file."""
        return read_settings(env, cls.declared_settings(), f"when OAUTH_PROVIDER is {cls.name}")

    @classmethod
    def create(
        cls, config: Config, settings: Mapping[str, Any], *, users: UserRepository, pending: PendingAuthorizations
    ) -> IdentityProvider:
        """The provider for this configuration and its `read_settings` (the local one
        also needs the users)."""
        return cls(config, settings, pending)

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
        """On to what the login was for: the consent page of an authorization request,
        or back to the account page that asked for it."""
        if pending.then == FOR_ACCOUNT:
            return redirect(url_for("account.account", request_id=pending.id))
        return redirect(url_for("authorize.consent", request_id=pending.id))

    def person_still_valid(self, person: Person) -> bool:
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


def remember_login(person: Person) -> None:
    LOGINS.labels(person.provider, "succeeded").inc()
    note(subject=person.subject)
    audit("login.succeeded", provider=person.provider, subject=person.subject)
    session.permanent = True
    session[PERSON_KEY] = {**asdict(person), "login_at": time.time()}
    # A fresh CSRF token after login (the pre-login one may have been seen by others).
    session.pop(CSRF_FIELD, None)


def renew_login(person: Person) -> None:
    """This session's login counts from now (after it changed the password: the other
    sessions of the user end, this one goes on)."""
    data = session.get(PERSON_KEY)
    if isinstance(data, dict) and data.get("subject") == person.subject:
        session[PERSON_KEY] = {**data, "login_at": time.time()}


def end_login() -> None:
    """Sign out: the whole session goes (the login, its CSRF token, the browser id its
    pending authorizations are bound to)."""
    session.clear()


def current_person(provider: IdentityProvider) -> Person | None:
    """The person this browser's session is logged in as, if that login still counts."""
    data = session.get(PERSON_KEY)
    if not isinstance(data, dict) or data.get("provider") != provider.name:
        return None
    person = Person(
        subject=data["subject"],
        provider=data["provider"],
        name=data.get("name", ""),
        email=data.get("email"),
        login_at=float(data.get("login_at", 0)),
    )
    if not provider.person_still_valid(person):
        session.pop(PERSON_KEY, None)
        return None
    return person
