"""Identity providers: who logs the person in (Custom, Google or Azure)."""

from __future__ import annotations

from ..config import Config
from ..repositories import UserRepository
from .base import Identity, IdentityProvider


def load_provider(config: Config, users: UserRepository) -> IdentityProvider:
    if config.provider == "google":
        from .google import GoogleProvider

        return GoogleProvider(config)
    if config.provider == "azure":
        from .azure import AzureProvider

        return AzureProvider(config)
    from .custom import CustomProvider

    return CustomProvider(config, users)


__all__ = ["Identity", "IdentityProvider", "load_provider"]
