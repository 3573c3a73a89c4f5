"""Dynamic client registration: RFC 7591 (POST /register) and RFC 7592 (GET, PUT,
DELETE /register/<client_id>), on Authlib's endpoint classes.

Registration is open, as MCP clients expect; a client that never completes an
authorization is dropped after OAUTH_UNUSED_CLIENT_TTL. The registration access token
is bound to its client: the token of client A never reads, changes or deletes B.
"""

from __future__ import annotations

from typing import Any

from authlib.consts import default_json_headers
from authlib.oauth2.rfc6749 import OAuth2Error
from authlib.oauth2.rfc7591 import ClientMetadataClaims, ClientRegistrationEndpoint, InvalidClientMetadataError
from authlib.oauth2.rfc7591.errors import InvalidRedirectURIError
from authlib.oauth2.rfc7592 import ClientConfigurationEndpoint
from flask import Blueprint, Flask
from flask import request as flask_request
from joserfc.errors import InvalidClaimError
from werkzeug.exceptions import RequestEntityTooLarge

from .. import services
from ..config import Config
from ..errors import error_response
from ..forwarded import client_address
from ..models import Client
from ..policy import MAX_REDIRECT_URIS, MetadataTooLarge, accepted_redirect_uris, check_bounds
from ..security import bearer_token, secret_matches
from ..throttle import SlidingWindow
from .metadata import AUTH_METHODS

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


def _claims_class(config: Config) -> type[MCPClientMetadataClaims]:
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


def body_too_large() -> bool:
    """Whether the request body exceeds MAX_BODY (read at most that much)."""
    flask_request.max_content_length = MAX_BODY
    try:
        flask_request.get_data(cache=True)
    except RequestEntityTooLarge:
        return True
    return False


class _RegistrationMixin:
    def get_server_metadata(self) -> dict[str, Any]:
        return _server_metadata()

    def extract_client_metadata(self, request: Any) -> dict[str, Any]:
        if not request.payload.data:
            raise InvalidClientMetadataError("The body must be a JSON object of client metadata.")
        try:
            check_bounds(request.payload.data)
        except MetadataTooLarge as exc:
            raise InvalidClientMetadataError(str(exc)) from None
        return _clean(super().extract_client_metadata(request))  # type: ignore[misc]


class RegistrationEndpoint(_RegistrationMixin, ClientRegistrationEndpoint):
    def authenticate_token(self, request: Any) -> bool:
        return True  # open registration, as MCP clients expect

    def create_registration_response(self, request: Any) -> tuple[int, dict, list]:
        metadata = self.extract_client_metadata(request)
        client, secret, registration_token = services().clients.create(metadata)
        body: dict[str, Any] = {**metadata, **client.client_info}
        if secret:
            body["client_secret"] = secret
        body["registration_access_token"] = registration_token
        body["registration_client_uri"] = services().config.url(f"/register/{client.client_id}")
        return 201, body, [*default_json_headers]


class _RegistrationToken:
    """The registration access token of one client (RFC 7592)."""

    def __init__(self, client_id: str):
        self.client_id = client_id

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id


class ConfigurationEndpoint(_RegistrationMixin, ClientConfigurationEndpoint):
    @staticmethod
    def _client_id(request: Any) -> str:
        return (flask_request.view_args or {}).get("client_id", "")

    def authenticate_token(self, request: Any) -> _RegistrationToken:
        # The token is checked against the client named in the URL only, so a token
        # of another client can never match.
        client_id = self._client_id(request)
        client = services().clients.get(client_id)
        presented = bearer_token()
        if client is None or not secret_matches(presented, client.record.get("registration_access_token_hash")):
            raise InvalidTokenError("The registration access token is missing or invalid for this client.")
        return _RegistrationToken(client.client_id)

    def authenticate_client(self, request: Any) -> Client | None:
        return services().clients.get(self._client_id(request))

    def check_permission(self, client: Client, request: Any) -> bool:
        return True

    def revoke_access_token(self, request: Any, token: Any) -> None:
        """The client is gone, and its token with it."""

    def generate_client_registration_info(self, client: Client, request: Any) -> dict[str, str]:
        return {
            "registration_client_uri": services().config.url(f"/register/{client.client_id}"),
            "registration_access_token": bearer_token() or "",
        }

    def introspect_client(self, client: Client) -> dict[str, Any]:
        return {**client.client_metadata, **client.client_info}

    def update_client(self, client: Client, client_metadata: dict[str, Any], request: Any) -> Client:
        if client_metadata.get("token_endpoint_auth_method") != client.auth_method:
            raise InvalidClientMetadataError("token_endpoint_auth_method cannot be changed; register a new client.")
        updated = services().clients.update_metadata(client.client_id, client_metadata)
        if updated is None:
            raise InvalidTokenError("The client no longer exists.")
        return updated

    def delete_client(self, client: Client, request: Any) -> None:
        services().clients.delete(client.client_id)
        services().server.codes.discard_for_client(client.client_id)


def init_app(app: Flask, config: Config) -> None:
    bp = Blueprint("registration", __name__, url_prefix=config.issuer_path)

    rate = SlidingWindow(config.registration_rate, 60)
    too_large = f"The registration body may be at most {MAX_BODY} bytes."

    @bp.post("/register")
    def register():
        svc = services()
        if body_too_large():
            return error_response(400, "invalid_client_metadata", too_large)
        wait = rate.hit(client_address(config)) if config.registration_rate else 0
        if wait:
            return error_response(
                429, "temporarily_unavailable", "Too many registrations from this address.", {"Retry-After": str(wait)}
            )
        if config.max_clients and svc.clients.count() >= config.max_clients:
            return error_response(
                429,
                "temporarily_unavailable",
                "This server has as many clients as it accepts; try again later.",
                {"Retry-After": "3600"},
            )
        return svc.server.create_endpoint_response("client_registration")

    @bp.route("/register/<client_id>", methods=["GET", "PUT", "DELETE"])
    def configure(client_id: str):
        if body_too_large():
            return error_response(400, "invalid_client_metadata", too_large)
        response = services().server.create_endpoint_response("client_configuration")
        response.headers["Cache-Control"] = "no-store"
        return response

    app.register_blueprint(bp)

    claims = [_claims_class(config)]
    server = app.extensions["oauth"].server
    server.register_endpoint(RegistrationEndpoint(server, claims_classes=claims))
    server.register_endpoint(ConfigurationEndpoint(server, claims_classes=claims))
