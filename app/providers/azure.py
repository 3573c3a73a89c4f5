"""Azure / Microsoft Entra ID login (OpenID Connect v2.0 endpoints).

Authority: `{AZURE_AUTHORITY}/{AZURE_TENANT_ID}/v2.0`, discovery under it. The subject of
our tokens is `tid:oid` (Entra's `sub` differs per application, `oid` does not). The ID
token's issuer must name the token's own tenant. With a tenant id configured, `tid` must
be that id and `iss` that tenant's issuer `{AZURE_AUTHORITY}/{tenant}/v2.0`, whatever the
discovery document says; for the multi-tenant authorities (`common`, `organizations`,
`consumers`) the discovered issuer is a template with `{tenantid}`, filled with `tid`.
Entra ID tokens carry no `email_verified`: `email`, else `preferred_username`, is what
the allow-lists see.
"""

from __future__ import annotations

from typing import Any

from ..config import Setting
from ..models import Person
from .oidc import NotAllowed, OIDCProvider

MULTI_TENANT = {"common", "organizations", "consumers"}


class AzureProvider(OIDCProvider):
    name = "azure"
    title = "Microsoft"
    SETTINGS = (
        Setting("AZURE_CLIENT_ID", required=True),
        Setting("AZURE_CLIENT_SECRET", required=True),
        Setting("AZURE_TENANT_ID", required=True),
        Setting("AZURE_AUTHORITY", "https://login.microsoftonline.com", kind="url"),
    )

    def client_id(self) -> str:
        return self.settings["AZURE_CLIENT_ID"]

    def client_secret(self) -> str:
        return self.settings["AZURE_CLIENT_SECRET"]

    @property
    def authority(self) -> str:
        """`{AZURE_AUTHORITY}/{AZURE_TENANT_ID}/v2.0`: a tenant's issuer, the one a
        pinned tenant's ID tokens must name."""
        return f"{self.settings['AZURE_AUTHORITY'].rstrip('/')}/{self.settings['AZURE_TENANT_ID']}/v2.0"

    def discovery_url(self) -> str:
        return f"{self.authority}/.well-known/openid-configuration"

    def offline_scopes(self) -> tuple[str, ...]:
        return ("offline_access",)  # Microsoft identity platform: a refresh token

    def claims_options(self) -> dict[str, Any]:
        template = self.client.load_server_metadata()["issuer"]
        tenant = self.settings["AZURE_TENANT_ID"].lower()
        pinned = tenant not in MULTI_TENANT
        # A tenant id configured: that tenant's own issuer and nothing else, whatever
        # the discovery document claims (it could name another tenant).
        own_issuer = self.authority

        def issuer_names_token_tenant(claims: dict[str, Any], value: Any) -> bool:
            tid = claims.get("tid")
            if not isinstance(tid, str) or not tid or not isinstance(value, str):
                return False
            if pinned:
                return tid.lower() == tenant and value.lower() == own_issuer.lower()
            return value == template.replace("{tenantid}", tid)

        return {**super().claims_options(), "iss": {"essential": True, "validate": issuer_names_token_tenant}}

    def person(self, claims: dict[str, Any]) -> Person:
        tid, oid = claims.get("tid"), claims.get("oid")
        if not isinstance(tid, str) or not tid or not isinstance(oid, str) or not oid:
            raise NotAllowed("Microsoft sent no tenant or object id for this account.")
        email = claims.get("email") or claims.get("preferred_username")
        email = email if isinstance(email, str) and "@" in email else None
        return Person(subject=f"{tid}:{oid}", provider=self.name, name=claims.get("name") or email or oid, email=email)

    def is_allowed(self, person: Person, claims: dict[str, Any]) -> bool:
        domain = person.email.rsplit("@", 1)[1] if person.email else None
        return self.allowed_by_lists(person.email, domain)
