"""RFC 7592 client configuration (GET, PUT, DELETE /register/<client_id>).

The registration access token is bound to its client: the token of client A never
reads, changes or deletes B.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.oauth2.rfc7591 import InvalidClientMetadataError
from authlib.oauth2.rfc7592 import ClientConfigurationEndpoint
from flask import request as flask_request

from ..models import Client
from ..observability import audit
from ..security import bearer_token, secret_matches
from .rfc7591 import InvalidTokenError, RegistrationMixin

if TYPE_CHECKING:
    from .server import OAuthServer


class _RegistrationToken:
    """The registration access token of one client (RFC 7592)."""

    def __init__(self, client_id: str):
        self.client_id = client_id

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id


class ConfigurationEndpoint(RegistrationMixin, ClientConfigurationEndpoint):
    server: OAuthServer

    @staticmethod
    def _client_id(request: Any) -> str:
        return (flask_request.view_args or {}).get("client_id", "")

    def authenticate_token(self, request: Any) -> _RegistrationToken:
        # The token is checked against the client named in the URL only, so a token
        # of another client can never match.
        client_id = self._client_id(request)
        client = self.server.clients.get(client_id)
        presented = bearer_token()
        if client is None or not secret_matches(presented, client.record.get("registration_access_token_hash")):
            raise InvalidTokenError("The registration access token is missing or invalid for this client.")
        return _RegistrationToken(client.client_id)

    def authenticate_client(self, request: Any) -> Client | None:
        return self.server.clients.get(self._client_id(request))

    def check_permission(self, client: Client, request: Any) -> bool:
        return True

    def revoke_access_token(self, request: Any, token: Any) -> None:
        """The client is gone, and its token with it."""

    def generate_client_registration_info(self, client: Client, request: Any) -> dict[str, str]:
        return {
            "registration_client_uri": self.server.config.url(f"/register/{client.client_id}"),
            "registration_access_token": bearer_token() or "",
        }

    def introspect_client(self, client: Client) -> dict[str, Any]:
        return {**client.client_metadata, **client.client_info}

    def update_client(self, client: Client, client_metadata: dict[str, Any], request: Any) -> Client:
        if client_metadata.get("token_endpoint_auth_method") != client.auth_method:
            raise InvalidClientMetadataError("token_endpoint_auth_method cannot be changed; register a new client.")
        updated = self.server.clients.update_metadata(client.client_id, client_metadata)
        if updated is None:
            raise InvalidTokenError("The client no longer exists.")
        audit("client.updated", client_id=client.client_id, by="registration_access_token")
        return updated

    def delete_client(self, client: Client, request: Any) -> None:
        self.server.clients.delete(client.client_id)
        audit("client.deleted", client_id=client.client_id, by="registration_access_token")
        self.server.codes.discard_for_client(client.client_id)
