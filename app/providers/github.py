"""GitHub login (an OAuth App or a GitHub App's user authorization).

GitHub is plain OAuth 2: no ID token, so the person is read from its REST API with
the access token: `GET /user` (the numeric id, which never changes, and the login,
which can), `GET /user/emails` (only the primary address, and only when GitHub has
verified it, counts), and for OAUTH_ALLOWED_ORGS `GET /user/memberships/orgs/{org}`
(an `active` membership; a pending invitation is none). The subject of our tokens is
`github:` + the numeric id.

Scopes asked: `read:user user:email`, plus `read:org` only when OAUTH_ALLOWED_ORGS is
set (the membership endpoint needs it for an OAuth App; a GitHub App ignores scopes
and needs the read permissions "Email addresses" and "Members" instead). An OAuth
App's token never expires; a GitHub App's expires after 8 hours and comes with a
refresh token: the login needs neither, the whole token response goes to
`upstream_token_received`. GitHub supports PKCE (S256), sent as to every upstream.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ..config import ConfigError, Setting
from ..models import Person
from .upstream import NotAllowed, SignInFailed, UpstreamProvider

log = logging.getLogger(__name__)

#: GitHub's organization names: letters, digits and single hyphens
ORG_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38})$")
API_HEADERS = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}


class GitHubProvider(UpstreamProvider):
    name = "github"
    title = "GitHub"
    scope = "read:user user:email"
    # GitHub documents client_id and client_secret as parameters of the token request.
    token_endpoint_auth_method = "client_secret_post"
    SETTINGS = (
        Setting("GITHUB_CLIENT_ID", required=True),
        Setting("GITHUB_CLIENT_SECRET", required=True),
        # GitHub Enterprise Server: https://HOST and https://HOST/api/v3 (the tests: a stand-in).
        Setting("GITHUB_URL", "https://github.com", kind="url"),
        Setting("GITHUB_API_URL", "https://api.github.com", kind="url"),
        # Logins (or numeric user ids), and organizations, whose members may log in.
        Setting("OAUTH_ALLOWED_USERS", kind="list", lower=True),
        Setting("OAUTH_ALLOWED_ORGS", kind="list", lower=True),
    )

    @classmethod
    def read_settings(cls, env: Mapping[str, str]) -> dict[str, Any]:
        settings = super().read_settings(env)
        for org in settings["OAUTH_ALLOWED_ORGS"]:
            if not ORG_NAME.match(org):
                raise ConfigError(f"OAUTH_ALLOWED_ORGS: {org!r} is not a GitHub organization name")
        return settings

    def client_id(self) -> str:
        return self.settings["GITHUB_CLIENT_ID"]

    def client_secret(self) -> str:
        return self.settings["GITHUB_CLIENT_SECRET"]

    def upstream_scope(self) -> str:
        return f"{self.scope} read:org" if self.settings["OAUTH_ALLOWED_ORGS"] else self.scope

    def endpoints(self) -> dict[str, Any]:
        site = self.settings["GITHUB_URL"].rstrip("/")
        return {
            "authorize_url": f"{site}/login/oauth/authorize",
            "access_token_url": f"{site}/login/oauth/access_token",
            "api_base_url": self.settings["GITHUB_API_URL"].rstrip("/") + "/",
        }

    # -- who the person is --------------------------------------------------------------

    def _api(self, token: dict[str, Any], path: str) -> tuple[int, Any]:
        """GET an API path with the person's token: (status, JSON body or None)."""
        url = self.settings["GITHUB_API_URL"].rstrip("/") + path
        response = self.client.get(url, token=token, headers=API_HEADERS, timeout=15)
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        return response.status_code, body

    def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        status, user = self._api(token, "/user")
        user_id = user.get("id") if isinstance(user, dict) else None
        login = user.get("login") if isinstance(user, dict) else None
        if type(user_id) is not int or not isinstance(login, str) or not login:
            raise SignInFailed(
                502, "upstream_api_error", "Sign-in failed", "GitHub did not say who you are. Try again later.",
                http_status=str(status),
            )  # fmt: skip
        name = user.get("name")
        return {
            "sub": f"github:{user_id}",
            "id": user_id,
            "login": login,
            "name": name if isinstance(name, str) else "",
            "email": self._verified_primary_email(token),
            "orgs": self._listed_orgs_of(token, login),
        }

    def _verified_primary_email(self, token: dict[str, Any]) -> str | None:
        """The account's primary address when GitHub has verified it (a GitHub App
        without the "Email addresses" permission gets none)."""
        status, emails = self._api(token, "/user/emails")
        if not isinstance(emails, list):
            log.warning("github: /user/emails answered %s: no email for the allow-lists", status)
            return None
        for entry in emails:
            if isinstance(entry, dict) and entry.get("primary") is True:
                email = entry.get("email")
                verified = entry.get("verified") is True
                return email if verified and isinstance(email, str) and "@" in email else None
        return None

    def _listed_orgs_of(self, token: dict[str, Any], login: str) -> list[str]:
        """The first organization of OAUTH_ALLOWED_ORGS the person is an active member
        of (as a list; empty when none, or when no organization is listed)."""
        if not self.settings["OAUTH_ALLOWED_ORGS"] or login.lower() in self.settings["OAUTH_ALLOWED_USERS"]:
            return []
        for org in self.settings["OAUTH_ALLOWED_ORGS"]:
            status, membership = self._api(token, f"/user/memberships/orgs/{quote(org)}")
            if isinstance(membership, dict) and membership.get("state") == "active":
                return [org]
            if status == 403:
                # The organization restricts OAuth App access, or the token lacks read:org.
                log.warning("github: membership of %s could not be read (403): approve the app for it", org)
        return []

    def person(self, claims: dict[str, Any]) -> Person:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise NotAllowed("GitHub sent no user id for this account.")
        email = claims.get("email")
        return Person(subject=subject, provider=self.name, name=claims.get("name") or claims["login"], email=email)

    def is_allowed(self, person: Person, claims: dict[str, Any]) -> bool:
        """Empty lists admit any GitHub account; otherwise any list that names the
        person admits them: the login or numeric id, an active membership of a listed
        organization, the verified primary address or its domain."""
        settings = self.settings
        if not any(settings[key] for key in ("OAUTH_ALLOWED_USERS", "OAUTH_ALLOWED_ORGS",
                                             "OAUTH_ALLOWED_EMAILS", "OAUTH_ALLOWED_DOMAINS")):  # fmt: skip
            return True
        users = settings["OAUTH_ALLOWED_USERS"]
        if claims["login"].lower() in users or str(claims["id"]) in users:
            return True
        if claims["orgs"]:
            return True
        domain = person.email.rsplit("@", 1)[1] if person.email else None
        return self.listed(person.email, domain)
