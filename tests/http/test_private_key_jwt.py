"""`private_key_jwt` (RFC 7523 §2.2) for metadata-document clients: a document that
offers it and publishes keys makes a client that signs at /token, through the whole
flow and refresh; ChatGPT's and Claude's document shapes are accepted. Documents and
key sets are served for real over https (tests/support/docserver.py); the client
signs its assertions with joserfc."""

from __future__ import annotations

import requests


def test_metadata_lists_private_key_jwt_and_its_algorithms(server):
    metadata = requests.get(server.url("/.well-known/oauth-authorization-server"), timeout=10).json()
    assert "private_key_jwt" in metadata["token_endpoint_auth_methods_supported"]
    assert metadata["token_endpoint_auth_signing_alg_values_supported"] == ["RS256", "ES256", "EdDSA"]
