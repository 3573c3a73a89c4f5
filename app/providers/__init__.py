"""Identity providers: who logs the person in (Custom, Google or Azure).

Each is an `IdentityProvider` (base.py) registered here under its OAUTH_PROVIDER
name; a new one is a module with a subclass and a line in `REGISTRY`.
"""

from __future__ import annotations

import importlib

from ..config import Config
from ..repositories import UserRepository
from .base import IdentityProvider

#: OAUTH_PROVIDER -> "module:class" (imported only when chosen)
REGISTRY = {
    "custom": "app.providers.custom:CustomProvider",
    "google": "app.providers.google:GoogleProvider",
    "azure": "app.providers.azure:AzureProvider",
}


def load_provider(config: Config, users: UserRepository) -> IdentityProvider:
    module_name, _, class_name = REGISTRY[config.provider].partition(":")
    provider_class: type[IdentityProvider] = getattr(importlib.import_module(module_name), class_name)
    return provider_class.create(config, users)


__all__ = ["REGISTRY", "IdentityProvider", "load_provider"]
