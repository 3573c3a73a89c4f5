"""Identity providers: who logs the person in (Custom, Google, Azure, GitHub or any
OpenID Provider).

Each is an `IdentityProvider` (base.py) registered here under its OAUTH_PROVIDER name:
a new one is one module (its class declares and reads its own variables, see
`IdentityProvider.SETTINGS`) and one line in `REGISTRY`, the one list of providers
(app/config.py checks OAUTH_PROVIDER against it).

The bases a provider builds on: `base.IdentityProvider` (what every provider does),
`upstream.UpstreamProvider` (a login at an upstream OAuth 2 authorization server) and
`oidc.OIDCProvider` on it (an OpenID Provider: discovery, the ID token).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import IdentityProvider

#: OAUTH_PROVIDER -> "module:class" (imported only when chosen)
REGISTRY = {
    "custom": "app.providers.custom:CustomProvider",
    "google": "app.providers.google:GoogleProvider",
    "azure": "app.providers.azure:AzureProvider",
    "github": "app.providers.github:GitHubProvider",
    "oidc": "app.providers.generic_oidc:GenericOIDCProvider",
}


def provider_class(name: str) -> type[IdentityProvider]:
    """The class registered under this OAUTH_PROVIDER name."""
    module_name, _, class_name = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module_name), class_name)


__all__ = ["REGISTRY", "provider_class"]
