"""Google login (OpenID Connect). The subject of our tokens is Google's `sub`; an
email counts for OAUTH_ALLOWED_EMAILS only when `email_verified` is true, and
OAUTH_ALLOWED_DOMAINS is judged by the Workspace `hd` claim (never by the email's
domain, which anyone can put on a Google account)."""

from __future__ import annotations

from typing import Any

from ..config import Setting
from ..models import Person
from .oidc import NotAllowed, OIDCProvider


class GoogleProvider(OIDCProvider):
    name = "google"
    title = "Google"
    SETTINGS = (
        Setting("GOOGLE_CLIENT_ID", required=True),
        Setting("GOOGLE_CLIENT_SECRET", required=True),
        # Anywhere: the tests point it at a local OpenID Provider.
        Setting("GOOGLE_DISCOVERY_URL", "https://accounts.google.com/.well-known/openid-configuration", kind="url"),
    )

    def client_id(self) -> str:
        return self.settings["GOOGLE_CLIENT_ID"]

    def client_secret(self) -> str:
        return self.settings["GOOGLE_CLIENT_SECRET"]

    def discovery_url(self) -> str:
        return self.settings["GOOGLE_DISCOVERY_URL"]

    def offline_params(self) -> dict[str, Any]:
        # Google issues a refresh token only for offline access, and again only when
        # the person is asked to consent (a second login would get none).
        return {"access_type": "offline", "prompt": "consent"}

    def person(self, claims: dict[str, Any]) -> Person:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise NotAllowed("Google sent no subject for this account.")
        email = claims.get("email") if claims.get("email_verified") is True else None
        return Person(subject=subject, provider=self.name, name=claims.get("name") or email or subject, email=email)

    def is_allowed(self, person: Person, claims: dict[str, Any]) -> bool:
        hd = claims.get("hd")
        return self.allowed_by_lists(person.email, hd if isinstance(hd, str) else None)
