"""Upstream OpenID Connect login (OIDC Core §3.1), shared by the Google and Azure
providers, on the OAuth 2 base (upstream.py).

What OpenID Connect adds to the OAuth 2 login: the upstream is found by discovery,
the authorization request carries a `nonce`, and the person is who the ID token says,
after full verification (signature by the upstream JWKS, `iss`, `aud`, `exp`, `nonce`;
§3.1.3.7). Nothing is read from the userinfo endpoint.
"""

from __future__ import annotations

import secrets
from typing import Any, ClassVar

from joserfc.errors import JoseError

from .upstream import NotAllowed, SignInFailed, UpstreamProvider

__all__ = ["NotAllowed", "OIDCProvider"]


class OIDCProvider(UpstreamProvider):
    """An upstream OpenID Provider; subclasses say where and who."""

    name: ClassVar[str]
    title: str
    scope = "openid email profile"

    # -- what a subclass provides ---------------------------------------------------

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

    # -- OpenID Connect on the OAuth 2 flow -------------------------------------------

    def endpoints(self) -> dict[str, Any]:
        return {"server_metadata_url": self.discovery_url()}

    def authorize_params(self) -> dict[str, Any]:
        return {"nonce": secrets.token_urlsafe(24)}

    def fetch_token(self) -> dict[str, Any]:
        """The token response, its ID token verified (Authlib parses it into `userinfo`)."""
        try:
            return self.client.authorize_access_token(claims_options=self.claims_options(), leeway=30)
        except JoseError as exc:
            raise SignInFailed(
                401,
                "id_token_refused",
                "Sign-in failed",
                f"The identity token from {self.title} could not be verified.",
                error=str(exc)[:200],
            ) from None

    def claims(self, token: dict[str, Any]) -> dict[str, Any]:
        claims = dict(token.get("userinfo") or {})
        if not claims:
            raise SignInFailed(401, "no_id_token", "Sign-in failed", f"{self.title} sent no identity token.")
        return claims
