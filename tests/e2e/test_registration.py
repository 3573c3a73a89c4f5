"""RFC 7591 registration and RFC 7592 management, with this server's rules."""

from __future__ import annotations

from support.harness import CLAUDE_CALLBACK
from support.registration import post_register


def test_redirect_hosts_allow_list(make_server):
    server = make_server(OAUTH_REDIRECT_HOSTS="claude.ai,chatgpt.com")
    assert post_register(server, {"redirect_uris": [CLAUDE_CALLBACK]}).status_code == 201
    refused = post_register(server, {"redirect_uris": ["https://elsewhere.example/cb"]})
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_redirect_uri"
    assert post_register(server, {"redirect_uris": ["http://localhost:5000/cb"]}).status_code == 201
