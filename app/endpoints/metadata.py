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
from ..oauth2.rfc7523 import ALGORITHMS, ID_JAG_PROFILE, JWT_BEARER
from ..oauth2.rfc9449 import ALGORITHMS as DPOP_ALGORITHMS
from ..policy import AUTH_METHODS, CONFIDENTIAL_AUTH_METHODS, TOKEN_AUTH_METHODS
from ..routes import cross_origin, path_of
from ..services import services

#: RFC 8414 §2: the endpoints the metadata names, by the Flask endpoint that serves each
#: (their URLs are read from the URL map: `endpoint_urls`)
ENDPOINTS = {
    "authorization_endpoint": "authorize.authorize",
    "token_endpoint": "token.token",
    "registration_endpoint": "registration.register",
    "revocation_endpoint": "token.revoke",
    "introspection_endpoint": "token.introspect",
    "jwks_uri": "metadata.jwks",
}


def endpoint_urls(app: Flask, config: Config) -> dict[str, str]:
    """RFC 8414 member -> the absolute URL Flask routes to its endpoint."""
    return {member: config.issuer_origin + path_of(app, endpoint) for member, endpoint in ENDPOINTS.items()}


def authorization_server_metadata(config: Config, urls: dict[str, str]) -> dict:
    # private_key_jwt is for metadata-document clients, ID-JAGs for trusted IdPs' (RFC 7523)
    client_auth = TOKEN_AUTH_METHODS if config.cimd else AUTH_METHODS
    assertions: dict = {"token_endpoint_auth_signing_alg_values_supported": ALGORITHMS} if config.cimd else {}
    if config.trusted_idps:
        assertions["authorization_grant_profiles_supported"] = [ID_JAG_PROFILE]
    return {
        "issuer": config.issuer,
        **urls,
        "scopes_supported": list(config.scopes),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", *([JWT_BEARER] * bool(config.trusted_idps))],
        "token_endpoint_auth_methods_supported": client_auth,
        "revocation_endpoint_auth_methods_supported": client_auth,
        "introspection_endpoint_auth_methods_supported": CONFIDENTIAL_AUTH_METHODS,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": True,
        "resource_indicators_supported": True,
        "client_id_metadata_document_supported": config.cimd,
        **assertions,
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),  # RFC 9449 §5.1
    }


def protected_resource_metadata(config: Config, resource: str) -> dict:
    return {
        "resource": resource,
        "authorization_servers": [config.issuer],
        "scopes_supported": list(config.scopes),
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": list(DPOP_ALGORITHMS),  # RFC 9728 §2, RFC 9449
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


def document_paths(config: Config) -> dict[str, str | None]:
    """Path -> the resource whose RFC 9728 metadata it serves, None for RFC 8414
    metadata: that at the root and path-inserted (clients look in both places), and
    one per resource of ours at its path-inserted URL, the bare well-known URL
    answering for the default resource."""
    well_known = "/.well-known/oauth-authorization-server"
    paths: dict[str, str | None] = {well_known: None}
    if config.issuer_path:
        paths[well_known + config.issuer_path] = None
        paths[config.issuer_path + well_known] = None
    paths["/.well-known/oauth-protected-resource"] = config.default_resource
    for resource in config.resources:
        if resource.startswith(config.issuer_origin):
            paths[urlsplit(resource_metadata_url(config, resource)).path] = resource
    return paths


def static_documents(config: Config, urls: dict[str, str]) -> dict[str, Document]:
    """Path -> document, for everything in discovery that never changes while the
    server runs (`document_paths`); `urls` are the endpoints' (`endpoint_urls`)."""
    server = json_document(authorization_server_metadata(config, urls), "public, max-age=3600")
    return {
        path: server if resource is None else json_document(protected_resource_metadata(config, resource))
        for path, resource in document_paths(config).items()
    }


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


def init_app(app: Flask, config: Config) -> dict[str, Document]:
    """Register discovery, once the endpoints it names are registered (their URLs are
    read from the URL map); the documents, path -> bytes and headers, are returned for
    the fast front (app/hotpath.py), which serves their GETs."""
    bp = Blueprint("metadata", __name__)
    documents: dict[str, Document] = {}  # filled below, once every rule is in the map

    @bp.get(f"{config.issuer_path}/jwks.json")
    @cross_origin
    def jwks() -> Response:
        body, headers = services().jwks.get()
        return Response(body, headers=headers)

    for i, path in enumerate(document_paths(config)):

        @cross_origin
        def document(path: str = path) -> Response:
            body, headers = documents[path]
            return Response(body, headers=headers)

        bp.add_url_rule(path, f"document_{i}", document)

    app.register_blueprint(bp)
    documents.update(static_documents(config, endpoint_urls(app, config)))
    return documents
