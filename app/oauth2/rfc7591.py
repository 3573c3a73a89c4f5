"""RFC 7591 dynamic client registration (POST /register), with this server's rules
for client metadata.

Registration is open, as MCP clients expect; a client that never completes an
authorization is dropped after OAUTH_UNUSED_CLIENT_TTL.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7591.errors import InvalidRedirectURIError
from joserfc.errors import InvalidClaimError

from ..config import Config
from ..forwarded import network_key
from ..observability import audit
from ..policy import AUTH_METHODS, MAX_REDIRECT_URIS, UnacceptableMetadata, accepted_redirect_uris, check_bounds

if TYPE_CHECKING:
    from .server import OAuthServer

DEFAULT_GRANT_TYPES = ["authorization_code", "refresh_token"]
#: What one anonymous registration may send (RFC 7591 §3 leaves limits to the server).
MAX_BODY = 16 * 1024
MAX_TEXT = 300


class InvalidTokenError(OAuth2Error):
    """RFC 6750 §3.1, as RFC 7592 §2 asks for a bad registration access token."""

    error = "invalid_token"
    status_code = 401

    def get_headers(self) -> list[tuple[str, str]]:
        return [*super().get_headers(), ("WWW-Authenticate", 'Bearer error="invalid_token"')]


class MCPClientMetadataClaims(ClientMetadataClaims):
    """RFC 7591 metadata with this server's rules for redirect URIs and types."""

    config: Config

    def validate_redirect_uris(self) -> None:
        """Keep the URIs this server accepts; refuse only when none is left (Cursor
        registers a `cursor://`, an https and a loopback URI at once, and a server
        that refuses one should still serve the others). The response lists the
        URIs kept (RFC 7591 §3.2.1: the server may replace values)."""
        uris = self.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            raise InvalidRedirectURIError("redirect_uris must be a non-empty array of URIs.")
        if len(uris) > MAX_REDIRECT_URIS:
            raise InvalidRedirectURIError(f"At most {MAX_REDIRECT_URIS} redirect URIs may be registered.")
        kept, problems = accepted_redirect_uris(uris, self.config)
        if not kept:
            raise InvalidRedirectURIError(f"Invalid redirect URI: {_ascii(problems[0])}.")
        self["redirect_uris"] = kept

    def validate_grant_types(self) -> None:
        value = self.get("grant_types")
        if value is None:
            self["grant_types"] = list(DEFAULT_GRANT_TYPES)
        elif not isinstance(value, list) or "authorization_code" not in value:
            raise InvalidClaimError("grant_types")

    def validate_response_types(self) -> None:
        value = self.get("response_types")
        if value is None:
            self["response_types"] = ["code"]
        elif not isinstance(value, list) or value != ["code"]:
            raise InvalidClaimError("response_types")

    def validate_client_name(self) -> None:
        name = self.get("client_name")
        if name is not None and (not isinstance(name, str) or len(name) > MAX_TEXT):
            raise InvalidClaimError("client_name")

    def validate_scope(self) -> None:
        scope = self.get("scope")
        if scope is not None and not isinstance(scope, str):
            raise InvalidClaimError("scope")


def _ascii(text: str) -> str:
    """error_description allows only printable ASCII without quote or backslash."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


def claims_class(config: Config) -> type[MCPClientMetadataClaims]:
    return type("ConfiguredClaims", (MCPClientMetadataClaims,), {"config": config})


def _server_metadata() -> dict[str, Any]:
    # What registration checks metadata against (scope is not checked: unknown
    # scopes are simply never granted).
    return {
        "response_types_supported": ["code"],
        "grant_types_supported": DEFAULT_GRANT_TYPES,
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
    }


def _clean(metadata: dict[str, Any]) -> dict[str, Any]:
    """No nulls in what we store and return (Claude rejects a response with them)."""
    return {k: v for k, v in metadata.items() if v is not None}


class RegistrationMixin:
    def get_server_metadata(self) -> dict[str, Any]:
        return _server_metadata()

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        if not request.payload.data:
            problem = getattr(request.payload, "problem", "")
            raise InvalidClientMetadataError(f"{problem} The body must be a JSON object of client metadata.".strip())
        try:
            check_bounds(request.payload.data)
        except UnacceptableMetadata as exc:
            raise InvalidClientMetadataError(str(exc)) from None
        return _clean(super().extract_client_metadata(request))  # type: ignore[misc]


class RegistrationEndpoint(RegistrationMixin, ClientRegistrationEndpoint):
    server: OAuthServer

    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration, as MCP clients expect

    def create_registration_response(self, request: Any) -> tuple[int, dict, list]:
        metadata = self.extract_client_metadata(request)
        # Counted as it is stored, in the same statement on a shared store: over the
        # rate, LimitReached; past a client cap, RegistrationRefused; the endpoint
        # answers both with 429. Both count the client's network (an IPv6 /64).
        network = network_key(self.server.config)
        rate = self.server.registration_rate
        counted = (rate, network) if self.server.config.registration_rate else None
        client, secret, registration_token = self.server.clients.create(
            metadata, counted=counted, registered_from=network
        )
        body: dict[str, Any] = {**metadata, **client.client_info}
        if secret:
            body["client_secret"] = secret
        body["registration_access_token"] = registration_token
        body["registration_client_uri"] = self.server.config.url(f"/register/{client.client_id}")
        audit(
            "client.registered",
            client_id=client.client_id,
            client_name=str(metadata.get("client_name", ""))[:200] or None,
            auth_method=client.auth_method,
        )
        return 201, body, [*default_json_headers]
