"""Discovery: RFC 8414 authorization server metadata, RFC 9728 protected resource
metadata, and the JWKS (RFC 7517).

Clients look for metadata both at the root and path-inserted, so both are served.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, jsonify

from .. import services
from ..config import Config
from ..policy import AUTH_METHODS


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
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
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


def init_app(app: Flask, config: Config) -> None:
    bp = Blueprint("metadata", __name__)
    as_metadata = authorization_server_metadata(config)

    def server_metadata():
        response = jsonify(as_metadata)
        response.headers["Cache-Control"] = "public, max-age=3600"
        return response

    well_known = "/.well-known/oauth-authorization-server"
    paths = {well_known}
    if config.issuer_path:
        paths |= {well_known + config.issuer_path, config.issuer_path + well_known}
    for i, path in enumerate(sorted(paths)):
        bp.add_url_rule(path, f"authorization_server_{i}", server_metadata)

    # RFC 9728: one document per resource of ours, at its path-inserted URL; the bare
    # well-known URL answers for the default resource.
    origin = config.issuer_origin
    served = {"/.well-known/oauth-protected-resource": config.default_resource}
    for resource in config.resources:
        if resource.startswith(origin):
            served[urlsplit(resource_metadata_url(config, resource)).path] = resource
    for i, (path, resource) in enumerate(served.items()):
        document = protected_resource_metadata(config, resource)

        def resource_view(document=document):
            return jsonify(document)

        bp.add_url_rule(path, f"protected_resource_{i}", resource_view)

    @bp.get(f"{config.issuer_path}/jwks.json")
    def jwks():
        response = jsonify(services().keys.public_jwks())
        response.headers["Cache-Control"] = "public, max-age=300"
        return response

    app.register_blueprint(bp)
