"""The services the endpoints use, built once per app by the factory (app/__init__.py).

Endpoints, the CLI and providers' views reach them through `services()`; nothing below
them imports the factory: the layers underneath get what they need as constructor
arguments.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from .admin import Admin
    from .config import Config
    from .endpoints.metadata import JWKSDocument
    from .keys import KeyManager
    from .oauth2 import AccessTokenVerifier, OAuthServer
    from .pending import PendingAuthorizations
    from .providers.base import IdentityProvider
    from .repositories import ClientRepository, GrantRepository, UserRepository
    from .storage import Store
    from .upstream_tokens import UpstreamTokens


@dataclass
class Services:
    """Everything the endpoints use, created once per app."""

    config: Config
    store: Store
    keys: KeyManager
    clients: ClientRepository
    grants: GrantRepository
    users: UserRepository
    server: OAuthServer
    verifier: AccessTokenVerifier
    pending: PendingAuthorizations
    provider: IdentityProvider
    admin: Admin
    jwks: JWKSDocument
    #: with OAUTH_UPSTREAM_TOKENS (None without: nothing on a hot path asks)
    upstream_tokens: UpstreamTokens | None = None


def services() -> Services:
    """The services of the app handling the current request (or CLI command)."""
    return current_app.extensions["oauth"]
