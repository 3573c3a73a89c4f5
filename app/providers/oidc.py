"""Upstream OpenID Connect login, shared by the Google and Azure providers, on
Authlib's Flask OAuth client.

Toward the upstream we are an ordinary OIDC relying party: discovery, `state`, `nonce`
and PKCE (S256), then full ID token verification (signature by the upstream JWKS,
`iss`, `aud`, `exp`, `nonce`). The upstream login only says who the person is: after
the callback the person sees our consent page, and our tokens never depend on
upstream tokens (which are dropped).

The state data (nonce, PKCE verifier) stays in server memory; the browser's session
only marks that it started this login, so a callback is accepted once, from the
browser that started it, before anything is sent upstream.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, ClassVar

import requests
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, render_template, session
from flask.typing import ResponseReturnValue
from joserfc.errors import JoseError

from .. import services
from ..config import Config
from ..models import Person
from ..pending import PendingAuthorization
from ..storage.base import SharedState
from ..storage.local import LocalState
from .base import IdentityProvider, browser_id, login_failed

if TYPE_CHECKING:
    from ..repositories import UserRepository

log = logging.getLogger(__name__)

PENDING_KEY = "upstream_pending"


class StateCache:
    """The small cache interface Authlib's client wants for server-side state data,
    over an expiring map: bounded in memory (oldest dropped first, since anyone can
    start a login), or in the shared database, where a login may start at one
    instance and come back to another."""

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


class OIDCProvider(IdentityProvider):
    """An upstream OIDC identity provider; subclasses say where and who."""

    name: ClassVar[str]
    title: ClassVar[str]
    scope = "openid email profile"

    def __init__(self, config: Config, cache: StateCache | None = None):
        super().__init__(config)
        self.oauth = OAuth(cache=cache or StateCache())
        self.client: Any = None

    @classmethod
    def create(cls, config: Config, users: UserRepository) -> IdentityProvider:
        return cls(config, StateCache(state=users.store.shared))

    # -- what a subclass provides ---------------------------------------------------

    def client_id(self) -> str:
        raise NotImplementedError

    def client_secret(self) -> str:
        raise NotImplementedError

    def discovery_url(self) -> str:
        raise NotImplementedError

    def claims_options(self) -> dict[str, Any]:
        """The ID token checks beyond signature, `exp` and `nonce`: `iss` is the
        discovered issuer, and `aud` must contain our client id (Authlib alone only
        checks `azp` when `aud` differs)."""
        issuer = self.client.load_server_metadata()["issuer"]
        return {
            "iss": {"essential": True, "validate": lambda claims, value: value == issuer},
            "aud": {"essential": True, "validate": self._audience_is_us},
        }

    def _audience_is_us(self, claims: dict[str, Any], value: Any) -> bool:
        audiences = value if isinstance(value, list) else [value]
        return self.client_id() in audiences

    def identity(self, claims: dict[str, Any]) -> Person:
        raise NotImplementedError

    def is_allowed(self, identity: Person, claims: dict[str, Any]) -> bool:
        raise NotImplementedError

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
            server_metadata_url=self.discovery_url(),
            client_kwargs={"scope": self.scope, "code_challenge_method": "S256", "timeout": 15},
        )
        bp = Blueprint(f"oidc_{self.name}", __name__, url_prefix=self.config.issuer_path)
        bp.add_url_rule(self.callback_path, "callback", self.callback_view)
        app.register_blueprint(bp)

    def start_login(self, pending: PendingAuthorization) -> ResponseReturnValue:
        session[PENDING_KEY] = pending.id
        try:
            return self.client.authorize_redirect(self.config.url(self.callback_path), nonce=secrets.token_urlsafe(24))
        except (requests.RequestException, AuthlibBaseError, ValueError) as exc:
            log.warning("%s discovery failed: %s", self.name, type(exc).__name__)
            return self._page(502, "Sign-in is unavailable", f"{self.title} could not be reached. Try again later.")

    def callback_view(self) -> ResponseReturnValue:
        pending = services().pending.get(session.get(PENDING_KEY), browser_id())
        if pending is None:
            return self._page(
                400,
                "This sign-in has expired",
                "The authorization request is unknown or has expired. Go back to your application and connect again.",
            )
        try:
            token = self.client.authorize_access_token(claims_options=self.claims_options(), leeway=30)
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
        except JoseError as exc:
            login_failed(self.name, "id_token_refused", error=str(exc)[:200])
            return self._page(401, "Sign-in failed", f"The identity token from {self.title} could not be verified.")
        except requests.RequestException as exc:
            login_failed(self.name, "upstream_unreachable", error=type(exc).__name__)
            return self._page(502, "Sign-in failed", f"{self.title} could not be reached. Try again later.")

        claims = dict(token.get("userinfo") or {})
        if not claims:
            login_failed(self.name, "no_id_token")
            return self._page(401, "Sign-in failed", f"{self.title} sent no identity token.")
        try:
            identity = self.identity(claims)
        except NotAllowed as exc:
            login_failed(self.name, "not_allowed", subject=str(claims.get("sub", ""))[:200] or None)
            return self._page(403, "Access denied", str(exc))
        if not self.is_allowed(identity, claims):
            login_failed(self.name, "not_allowed", subject=identity.subject, email=identity.email)
            return self._page(
                403, "Access denied", "This account may not use this server. Ask its operator to allow it."
            )
        session.pop(PENDING_KEY, None)
        return self.logged_in(identity, pending)

    @staticmethod
    def _page(status: int, title: str, message: str) -> ResponseReturnValue:
        return render_template("error.html", title=title, message=message, error=None), status

    def _allowed_by_lists(self, email: str | None, domain: str | None) -> bool:
        """Empty lists admit anyone; otherwise the email or the domain must be listed."""
        emails, domains = self.config.allowed_emails, self.config.allowed_domains
        if not emails and not domains:
            return True
        return bool((email and email.lower() in emails) or (domain and domain.lower() in domains))
