"""A login at an upstream OAuth 2 authorization server, on Authlib's Flask OAuth client:
the base of every provider that sends the person elsewhere to log in (Google, Azure,
any OpenID Provider through `oidc.OIDCProvider`; a plain OAuth 2 one such as GitHub,
whose user is read from its API, directly).

Toward the upstream we are an ordinary confidential client: the authorization code
flow (RFC 6749 §4.1) with `state` (§10.12) and PKCE S256 (RFC 7636), then the code
exchanged at the upstream's token endpoint. What a subclass says: where the upstream
is, how to learn who the person is from the token response (`claims`, `person`), and
who may come in (`is_allowed`; `allowed_by_lists` judges OAUTH_ALLOWED_EMAILS and
OAUTH_ALLOWED_DOMAINS). The upstream login says who the person is: after the
callback the person sees our consent page, and our tokens never depend on upstream
tokens. The upstream's token response goes to `upstream_token_received`: dropped, or
with OAUTH_UPSTREAM_TOKENS kept for the MCP server (app/upstream_tokens.py), for which
the login then also asks the upstream for OAUTH_UPSTREAM_SCOPES and a refresh token
(`offline_scopes`, `offline_params`).

The state data (PKCE verifier, nonce) stays on the server; the browser's session only
marks that it started this login, so a callback is accepted once, from the browser
that started it, before anything is sent upstream.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from authlib.integrations.requests_client import OAuth2Session
from flask import Blueprint, Flask, render_template, session
from flask.typing import ResponseReturnValue

from ..config import Config, Setting
from ..models import Person
from ..pending import PendingAuthorization, PendingAuthorizations
from ..storage.base import SharedState
from ..storage.local import LocalState
from .base import IdentityProvider, browser_id, login_failed

if TYPE_CHECKING:
    from ..repositories import UserRepository
    from ..upstream_tokens import UpstreamTokens

log = logging.getLogger(__name__)

PENDING_KEY = "upstream_pending"


class StateCache:
    """The small cache interface Authlib's client wants for server-side state data,
    over the store's short-lived state: bounded in process (oldest dropped first, since
    anyone can start a login), or in the shared database, where a login may start at
    one instance and come back to another."""

    MAX_ITEMS = 10_000
    KIND = "upstream-login"

    def __init__(self, max_items: int = MAX_ITEMS, state: SharedState | None = None) -> None:
        #: the store's short-lived state (a new in-process one when none is given)
        self.state: SharedState = state if state is not None else LocalState()
        self.state.bound(self.KIND, max_items)

    def get(self, key: str) -> Any:
        return self.state.get(self.KIND, key)

    def set(self, key: str, value: Any, expires: int | None = None) -> None:
        self.state.put(self.KIND, key, value, time.time() + (expires or 600))

    def delete(self, key: str) -> None:
        self.state.pop(self.KIND, key)


class NotAllowed(Exception):
    """The person logged in upstream but may not use this server."""


class SignInFailed(Exception):
    """The upstream's answer cannot be used: shown as a page with `status`, `title` and
    `message`, and counted as a failed login for `reason` (with `fields` in the audit
    event)."""

    def __init__(self, status: int, reason: str, title: str, message: str, **fields: str | None):
        super().__init__(message)
        self.status, self.reason, self.title, self.message, self.fields = status, reason, title, message, fields


class UpstreamProvider(IdentityProvider):
    """An upstream OAuth 2 authorization server that logs the person in; subclasses say
    where it is and who the person is."""

    name: ClassVar[str]
    #: how the upstream is named to the person ("Google", "Microsoft"; a generic one's
    #: is configured)
    title: str
    #: the scopes asked of the upstream
    scope: ClassVar[str] = ""
    #: how we authenticate at the upstream's token endpoint (RFC 6749 §2.3.1)
    token_endpoint_auth_method: ClassVar[str] = "client_secret_basic"
    SETTINGS: ClassVar[tuple[Setting, ...]] = (
        Setting("OAUTH_ALLOWED_EMAILS", kind="list", lower=True),
        Setting("OAUTH_ALLOWED_DOMAINS", kind="list", lower=True),
    )

    def __init__(
        self,
        config: Config,
        settings: Mapping[str, Any],
        pending: PendingAuthorizations,
        cache: StateCache | None = None,
    ):
        super().__init__(config, settings, pending)
        self.oauth = OAuth(cache=cache or StateCache())
        self.client: Any = None

    @classmethod
    def create(
        cls, config: Config, settings: Mapping[str, Any], *, users: UserRepository, pending: PendingAuthorizations
    ) -> IdentityProvider:
        return cls(config, settings, pending, StateCache(state=users.store.shared))

    # -- what a subclass provides ---------------------------------------------------

    def client_id(self) -> str:
        raise NotImplementedError

    def client_secret(self) -> str:
        raise NotImplementedError

    def endpoints(self) -> dict[str, Any]:
        """Where the upstream is, as Authlib's `register` takes it: `server_metadata_url`
        (discovery), or `authorize_url`, `access_token_url` and `api_base_url`."""
        raise NotImplementedError

    def upstream_scope(self) -> str:
        """The scopes asked of the upstream (a subclass may depend on its settings)."""
        return self.scope

    def authorize_params(self) -> dict[str, Any]:
        """Parameters of the authorization request beyond the client's, state and PKCE."""
        return {}

    def fetch_token(self) -> dict[str, Any]:
        """The callback's code exchanged for the upstream's token response (the state
        checked first, by Authlib, against this browser's login)."""
        return self.client.authorize_access_token()

    def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        """What the upstream says about the person, from its token response or its
        API; `SignInFailed` when it says nothing usable."""
        raise NotImplementedError

    def person(self, claims: dict[str, Any]) -> Person:
        """The person the claims name; `NotAllowed` when they name nobody usable."""
        raise NotImplementedError

    def is_allowed(self, person: Person, claims: dict[str, Any]) -> bool:
        raise NotImplementedError

    # -- the person's upstream token (OAUTH_UPSTREAM_TOKENS) --------------------------

    #: set by the factory when OAUTH_UPSTREAM_TOKENS is on
    upstream_tokens: UpstreamTokens | None = None

    def offline_scopes(self) -> tuple[str, ...]:
        """Scopes that make the upstream issue a refresh token (Entra: `offline_access`)."""
        return ()

    def offline_params(self) -> dict[str, Any]:
        """Authorization parameters that make the upstream issue a refresh token
        (Google: `access_type=offline`, `prompt=consent`)."""
        return {}

    def requested_scope(self) -> str:
        """The login's scopes, and with OAUTH_UPSTREAM_TOKENS those the MCP server needs."""
        scopes = self.upstream_scope().split()
        if self.config.upstream_tokens:
            scopes += [*self.offline_scopes(), *self.config.upstream_scopes]
        return " ".join(dict.fromkeys(scopes))

    def upstream_token_received(self, person: Person, token: dict[str, Any]) -> None:
        """The upstream's token response for this person's login (allowed in): kept
        with this browser's login for the grant it will make (app/upstream_tokens.py),
        or dropped."""
        if self.upstream_tokens is not None:
            self.upstream_tokens.received(browser_id(), token)

    def refresh_upstream_token(self, refresh_token: str) -> dict[str, Any]:
        """The upstream's answer to a refresh (RFC 6749 §6), through Authlib's client as
        the login's code exchange (same client authentication); raises `OAuthError` for
        an error answer, `requests.RequestException` when unreachable."""
        url = self.client.access_token_url or self.client.load_server_metadata().get("token_endpoint")
        # A plain requests session, not the Flask client's: the gateway's fast front
        # asks outside any Flask context (whose token-update signal needs one).
        settings = {k: v for k, v in self.client.client_kwargs.items() if k == "token_endpoint_auth_method"}
        with OAuth2Session(self.client_id(), self.client_secret(), **settings) as upstream:
            if self.client.compliance_fix:
                self.client.compliance_fix(upstream)
            upstream.headers["Accept"] = "application/json"  # GitHub answers a form otherwise
            return dict(upstream.refresh_token(url, refresh_token=refresh_token, timeout=15))

    # -- the flow ---------------------------------------------------------------------

    @property
    def callback_path(self) -> str:
        return f"/oauth/{self.name}/callback"

    def init_app(self, app: Flask) -> None:
        self.oauth.init_app(app)
        self.oauth.framework_integration_cls.expires_in = self.config.auth_code_ttl
        self.client = self.oauth.register(
            self.name,
            client_id=self.client_id(),
            client_secret=self.client_secret(),
            client_kwargs={
                "scope": self.requested_scope(),
                "code_challenge_method": "S256",
                "token_endpoint_auth_method": self.token_endpoint_auth_method,
                "timeout": 15,
            },
            **self.endpoints(),
        )
        # Named as before the OAuth 2 base was split off: metrics label requests with it.
        bp = Blueprint(f"oidc_{self.name}", __name__, url_prefix=self.config.issuer_path)
        bp.add_url_rule(self.callback_path, "callback", self.callback_view)
        app.register_blueprint(bp)

    def start_login(self, pending: PendingAuthorization) -> ResponseReturnValue:
        session[PENDING_KEY] = pending.id
        try:
            params = {**self.authorize_params(), **(self.offline_params() if self.config.upstream_tokens else {})}
            return self.client.authorize_redirect(self.config.url(self.callback_path), **params)
        except SignInFailed as exc:
            login_failed(self.name, exc.reason, **exc.fields)
            return self._page(exc.status, exc.title, exc.message)
        except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
            log.warning("%s discovery failed: %s", self.name, type(exc).__name__)
            return self._page(502, "Sign-in is unavailable", f"{self.title} could not be reached. Try again later.")

    def callback_view(self) -> ResponseReturnValue:
        pending = self.pending.get(session.get(PENDING_KEY), browser_id())
        if pending is None:
            return self._page(
                400,
                "This sign-in has expired",
                "The authorization request is unknown or has expired. Go back to your application and connect again.",
            )
        try:
            token = self.fetch_token()
            claims = self.claims(token)
        except MismatchingStateError:
            login_failed(self.name, "state_mismatch")
            return self._page(
                400,
                "This sign-in link is not valid",
                "The sign-in response was already used or "
                "does not belong to this browser. Start again from your application.",
            )
        except OAuthError as exc:
            login_failed(self.name, "upstream_error", error=str(exc.error)[:100])
            if exc.error == "access_denied":
                return self._page(403, "Sign-in was cancelled", f"{self.title} reported that access was denied.")
            return self._page(400, "Sign-in failed", f"{self.title} answered with an error ({exc.error}).")
        except SignInFailed as exc:
            login_failed(self.name, exc.reason, **exc.fields)
            return self._page(exc.status, exc.title, exc.message)
        except requests.RequestException as exc:
            login_failed(self.name, "upstream_unreachable", error=type(exc).__name__)
            return self._page(502, "Sign-in failed", f"{self.title} could not be reached. Try again later.")

        try:
            person = self.person(claims)
        except NotAllowed as exc:
            login_failed(self.name, "not_allowed", subject=str(claims.get("sub", ""))[:200] or None)
            return self._page(403, "Access denied", str(exc))
        if not self.is_allowed(person, claims):
            login_failed(self.name, "not_allowed", subject=person.subject, email=person.email)
            return self._page(
                403, "Access denied", "This account may not use this server. Ask its operator to allow it."
            )
        self.upstream_token_received(person, token)
        session.pop(PENDING_KEY, None)
        self.upstream_token_received(person, token)
        return self.logged_in(person, pending)

    @staticmethod
    def _page(status: int, title: str, message: str) -> ResponseReturnValue:
        return render_template("error.html", title=title, message=message, error=None), status

    def allowed_by_lists(self, email: str | None, domain: str | None) -> bool:
        """Empty lists admit anyone; otherwise the email or the domain must be listed."""
        if not self.settings["OAUTH_ALLOWED_EMAILS"] and not self.settings["OAUTH_ALLOWED_DOMAINS"]:
            return True
        return self.listed(email, domain)

    def listed(self, email: str | None, domain: str | None) -> bool:
        """Whether OAUTH_ALLOWED_EMAILS names the email or OAUTH_ALLOWED_DOMAINS the
        domain (a provider with more allow-lists admits whom any of them names)."""
        emails, domains = self.settings["OAUTH_ALLOWED_EMAILS"], self.settings["OAUTH_ALLOWED_DOMAINS"]
        return bool((email and email.lower() in emails) or (domain and domain.lower() in domains))
