"""The real deployment: an https issuer for a non-loopback host name behind nginx or
Caddy terminating TLS (a test CA), with the README's gateway-mode examples as written.
The whole flow over it (discovery, register, login, consent, code, token, refresh,
introspect, revoke, /verify) and the official MCP SDK client through the gateway."""

from __future__ import annotations

import asyncio
import json

import pytest
import requests
from support.harness import PASSWORD, Server, free_port, seed_users
from support.mcp import MemoryStorage, PersonAtTheBrowser, call_tools
from support.oauth import Browser, refresh, tokens_for, verify
from support.proxies import tls_proxy
from support.tls import TEST_HOST


@pytest.mark.parametrize(("binary", "example"), [("nginx", "nginx-gateway.conf"), ("caddy", "Caddyfile.gateway")])
def test_https_deployment_behind_a_tls_proxy(tmp_path, upstream, test_ca, binary, example):
    listen, oauth_port = free_port(), free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer, OAUTH_UPSTREAM_URL=upstream)
    seed_users(server.data_dir, {"alice": PASSWORD})
    server.start()
    try:
        with tls_proxy(binary, example, tmp_path, listen, {8000: oauth_port}, test_ca):
            server.base = issuer  # the person's browser, too, only sees the proxy
            metadata = requests.get(issuer + "/.well-known/oauth-authorization-server", timeout=10).json()
            assert metadata["issuer"] == issuer and metadata["token_endpoint"] == issuer + "/token"
            refused = requests.post(issuer + "/mcp", json={}, timeout=10)
            assert refused.status_code == 401
            assert (
                f'resource_metadata="{issuer}/.well-known/oauth-protected-resource/mcp"'
                in (refused.headers["WWW-Authenticate"])
            )

            browser = Browser(server)
            client, tokens = tokens_for(server)
            login = browser.get(issuer + "/login")
            assert "Secure" in login.headers["Set-Cookie"] and "HttpOnly" in login.headers["Set-Cookie"]

            renewed = refresh(server, client, tokens["refresh_token"])
            assert renewed.status_code == 200, renewed.text
            access, refresh_token = renewed.json()["access_token"], renewed.json()["refresh_token"]
            assert verify(server, access).status_code == 200

            resource_server = json.loads(server.cli("add-resource-server", "rs", "--json").stdout)
            seen = requests.post(
                issuer + "/introspect",
                data={"token": access},
                auth=(resource_server["client_id"], resource_server["client_secret"]),
                timeout=10,
            ).json()
            assert seen["active"] is True and seen["iss"] == issuer and seen["aud"] == issuer + "/mcp"

            echoed = requests.post(
                issuer + "/mcp/echo", data=b"{}", headers={"Authorization": f"Bearer {access}"}, timeout=10
            ).json()["headers"]
            assert echoed["x-auth-subject"] == "alice" and "authorization" not in echoed
            assert echoed["x-forwarded-proto"] == "https" and echoed["x-forwarded-host"] == f"{TEST_HOST}:{listen}"

            revoked = requests.post(
                issuer + "/revoke", data={"token": refresh_token, "client_id": client["client_id"]}, timeout=10
            )
            assert revoked.status_code == 200
            assert verify(server, access).status_code == 401

            total, who = asyncio.run(call_tools(server, MemoryStorage(), PersonAtTheBrowser(server)))
            assert total == 42 and who["subject"] == "alice" and who["authorization"] is None
    finally:
        server.stop()
    assert "Traceback" not in server.output
