"""Discovery: RFC 8414 authorization server metadata, RFC 9728 protected resource
metadata, and the JWKS (RFC 7517).

Clients look for metadata both at the root and path-inserted, so both are served.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response

from ..config import Config
from ..cors import HEADERS as CORS_HEADERS
from ..errors import SECURITY_HEADERS
from ..keys import KeyManager
from ..policy import AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS
from ..services import services


def authorization_server_metadata(config: Config) -> dict:
    return {
        "issuer": config.issuer,
        "authorization_endpoint": config.url("/authorize"),
        "token_endpoint": config.url("/token"),
        "registration_endpoint": config.url("/register"),
        "revocation_endpoint": config.url("/revoke"),
        "introspection_endpoint": config.url("/introspect"),
        "jwks_uri": config.url("/jwks.json"),
        "scopes_supported": list(config.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "token_endpoint_auth_methods_supported": AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CONFIDENTIAL_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "resource_indicators_supported": True,
        "client_id_metadata_document_supported": config.cimd,
    }


def protected_resource_metadata(config: Config, resource: str) -> dict:
    return {
        "resource": resource,
        "authorization_servers": [config.issuer],
        "scopes_supported": list(config.scopes),
        "bearer_methods_supported": ["header"],
        "resource_name": "MCP server",
    }


def resource_metadata_url(config: Config, resource: str) -> str:
    """RFC 9728 §3.1: the well-known URI with the resource's path inserted."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path.rstrip('/')}"


Document = tuple[bytes, dict[str, str]]  # body, headers


def json_document(value: object, cache_control: str | None = None) -> Document:
    """A JSON document's bytes and headers, computed once and served as they are (by
    the Flask views and by app/hotpath.py alike)."""
    body = json.dumps(value, separators=(",", ":")).encode() + b"\n"
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    if cache_control:
        headers["Cache-Control"] = cache_control
    # Browser-based MCP clients read discovery directly (app/cors.py).
    headers.update(CORS_HEADERS)
    headers.update(SECURITY_HEADERS)
    return body, headers


def static_documents(config: Config) -> dict[str, Document]:
    """Path -> document, for everything in discovery that never changes while the
    server runs: RFC 8414 metadata (root and path-inserted, since clients look in
    both places) and RFC 9728 metadata, one per resource of ours at its path-inserted
    URL, the bare well-known URL answering for the default resource."""
    documents: dict[str, Document] = {}
    server = json_document(authorization_server_metadata(config), "public, max-age=3600")
    well_known = "/.well-known/oauth-authorization-server"
    documents[well_known] = server
    if config.issuer_path:
        documents[well_known + config.issuer_path] = server
        documents[config.issuer_path + well_known] = server
    origin = config.issuer_origin
    served = {"/.well-known/oauth-protected-resource": config.default_resource}
    for resource in config.resources:
        if resource.startswith(origin):
            served[urlsplit(resource_metadata_url(config, resource)).path] = resource
    for path, resource in served.items():
        documents[path] = json_document(protected_resource_metadata(config, resource))
    return documents


class JWKSDocument:
    """The public keys as a document, rebuilt only when the keys change."""

    def __init__(self, keys: KeyManager):
        self.keys = keys
        self._built: tuple[object, Document] | None = None

    def get(self) -> Document:
        revision = self.keys.revision()
        built = self._built
        if built is None or built[0] != revision:
            built = self._built = (revision, json_document(self.keys.public_jwks(), "public, max-age=300"))
        return built[1]


def init_app(app: Flask, config: Config) -> None:
    bp = Blueprint("metadata", __name__)
    for i, (path, (body, headers)) in enumerate(static_documents(config).items()):

        def view(body: bytes = body, headers: dict[str, str] = headers) -> Response:
            return Response(body, headers=headers)

        bp.add_url_rule(path, f"document_{i}", view)

    @bp.get(f"{config.issuer_path}/jwks.json")
    def jwks() -> Response:
        body, headers = services().jwks.get()
        return Response(body, headers=headers)

    app.register_blueprint(bp)
