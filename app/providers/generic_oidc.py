"""Any OpenID Provider (Authelia, Authentik, Keycloak, Pocket ID, Zitadel, Okta,
Auth0…) found by discovery from OIDC_ISSUER (OpenID Connect Discovery 1.0 §4).

The discovery document must name the issuer configured (§4.3: identical, a trailing
slash aside), and the ID token that issuer and our client id (checked as for Google:
signature, `iss`, `aud`, `exp`, `nonce`; PKCE and `state` on the way). Many providers
keep claims out of the ID token (Authelia, Zitadel by default): when the provider has
a userinfo endpoint, its claims fill in what the ID token lacks, after its `sub` is
checked to be the ID token's (OIDC Core §5.3.4). The subject of our tokens is the
issuer's `sub`; an `email` counts for OAUTH_ALLOWED_EMAILS/_DOMAINS only with
`email_verified` true, and OAUTH_ALLOWED_GROUPS is judged by the `groups` claim.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import ConfigError, Setting
from ..models import Person
from .oidc import NotAllowed, OIDCProvider
from .upstream import SignInFailed


class GenericOIDCProvider(OIDCProvider):
    name = "oidc"
    SETTINGS = (
        Setting("OIDC_ISSUER", required=True, kind="url"),
        Setting("OIDC_CLIENT_ID", required=True),
        Setting("OIDC_CLIENT_SECRET", required=True),
        Setting("OIDC_SCOPES", "openid email profile"),
        # How the provider is named to the person ("Authentik", "Company SSO").
        Setting("OIDC_NAME", "Single sign-on"),
        # Groups (as the `groups` claim names them) whose members may log in.
        Setting("OAUTH_ALLOWED_GROUPS", kind="list"),
    )

    @classmethod
    def read_settings(cls, env: Mapping[str, str]) -> dict[str, Any]:
        settings = super().read_settings(env)
        if "openid" not in settings["OIDC_SCOPES"].split():
            raise ConfigError("OIDC_SCOPES must include openid")
        return settings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.title = self.settings["OIDC_NAME"] or "Single sign-on"

    def upstream_scope(self) -> str:
        return " ".join(self.settings["OIDC_SCOPES"].split())

    def client_id(self) -> str:
        return self.settings["OIDC_CLIENT_ID"]

    def client_secret(self) -> str:
        return self.settings["OIDC_CLIENT_SECRET"]

    def discovery_url(self) -> str:
        return self.settings["OIDC_ISSUER"].rstrip("/") + "/.well-known/openid-configuration"

    def issuer(self) -> str:
        """The discovered issuer, once it is known to be the configured one: another
        issuer (a wrong URL, or a document that is not this provider's) stops the login
        before the person is sent anywhere."""
        discovered = self.client.load_server_metadata().get("issuer")
        configured = self.settings["OIDC_ISSUER"]
        if not isinstance(discovered, str) or discovered.rstrip("/") != configured.rstrip("/"):
            raise SignInFailed(
                502,
                "issuer_mismatch",
                "Sign-in is unavailable",
                f"{self.title} is not set up correctly for this server. Tell its operator.",
                issuer=str(discovered)[:200],
            )
        return discovered

    def authorize_params(self) -> dict[str, Any]:
        self.issuer()
        return super().authorize_params()

    def claims_options(self) -> dict[str, Any]:
        issuer = self.issuer()
        return {**super().claims_options(), "iss": {"essential": True, "validate": lambda c, value: value == issuer}}

    def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        """The ID token's claims, with the userinfo endpoint's filling in the rest."""
        claims = super().claims(token)
        endpoint = self.client.load_server_metadata().get("userinfo_endpoint")
        if not endpoint:
            return claims
        response = self.client.get(endpoint, token=token, timeout=15)
        try:
            userinfo = response.json() if response.status_code == 200 else None
        except ValueError:
            userinfo = None
        if not isinstance(userinfo, dict) or userinfo.get("sub") != claims.get("sub"):
            raise SignInFailed(
                502,
                "userinfo_refused",
                "Sign-in failed",
                f"{self.title} did not confirm who you are. Try again later.",
                http_status=str(response.status_code),
            )
        return {**userinfo, **claims}

    def person(self, claims: dict[str, Any]) -> Person:
        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise NotAllowed(f"{self.title} sent no subject for this account.")
        email = claims.get("email") if claims.get("email_verified") is True else None
        email = email if isinstance(email, str) and "@" in email else None
        name = next((v for v in (claims.get("name"), claims.get("preferred_username")) if isinstance(v, str) and v), "")
        return Person(subject=subject, provider=self.name, name=name or email or subject, email=email)

    @staticmethod
    def groups(claims: dict[str, Any]) -> set[str]:
        """The `groups` claim: a list of names (or one name)."""
        value = claims.get("groups")
        values = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        return {group for group in values if isinstance(group, str)}

    def is_allowed(self, person: Person, claims: dict[str, Any]) -> bool:
        """Empty lists admit anyone the provider logs in; otherwise any list that names
        the person admits them: a listed group, the verified address or its domain."""
        groups = self.settings["OAUTH_ALLOWED_GROUPS"]
        if not groups and not self.settings["OAUTH_ALLOWED_EMAILS"] and not self.settings["OAUTH_ALLOWED_DOMAINS"]:
            return True
        if self.groups(claims) & set(groups):
            return True
        domain = person.email.rsplit("@", 1)[1] if person.email else None
        return self.listed(person.email, domain)
