"""The person's upstream token for the MCP server (OAUTH_UPSTREAM_TOKENS), end to end
against the stand-in OpenID Provider (tests/oidc_idp.py, here as Google: it issues
refresh tokens and short-lived access tokens) and the SDK-built MCP server, whose echo
route shows the headers it got: through the gateway and through /verify behind nginx.

The MCP server sees the person's current upstream token, also once it was refreshed;
the MCP client never sees it; the data folder and the log never hold it in clear; a
deleted grant takes it along; a failed refresh means no header, a metric and an audit
event, and the MCP request still served."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from support.harness import Server, free_port, helper_process
from support.oauth import Browser, auth_params, exchange, pkce_pair, redirect_params, register, verify
from support.proxies import tls_proxy
from support.tls import TEST_HOST

CLIENT_ID = "our-client-id"
SECRET = "idp-secret"
CALENDAR = "https://www.googleapis.com/auth/calendar.readonly"
USER = {"sub": "g-42", "email": "alice@example.com", "email_verified": True, "name": "Alice"}
#: the stand-in's access tokens live this long: refreshed (REFRESH_AHEAD = 60 s) a few
#: seconds after they were issued
SHORT = 64


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    for port in helper_process("oidc_idp.py", tmp_path_factory.mktemp("idp")):
        yield f"http://127.0.0.1:{port}"


def control(idp: str, **state) -> None:
    body = {"user": USER, "mode": "ok", "expires_in": 3600, "refresh_mode": "ok", **state}
    requests.post(f"{idp}/_control", json=body, timeout=5).raise_for_status()


def stats(idp: str) -> dict:
    return requests.get(f"{idp}/_stats", timeout=5).json()


def google_env(idp: str, **env: str) -> dict[str, str]:
    return {
        "OAUTH_PROVIDER": "google",
        "GOOGLE_CLIENT_ID": CLIENT_ID,
        "GOOGLE_CLIENT_SECRET": SECRET,
        "GOOGLE_DISCOVERY_URL": f"{idp}/.well-known/openid-configuration",
        "OAUTH_UPSTREAM_TOKENS": "1",
        "OAUTH_UPSTREAM_SCOPES": CALENDAR,
        **env,
    }


class PageKeepingBrowser(Browser):
    """A browser that keeps every page it was shown."""

    def __init__(self, server, idp):
        super().__init__(server)
        self.also_follow = [idp]
        self.pages: list[str] = []

    def get(self, url, **kw):
        response = super().get(url, **kw)
        self.pages.append(response.text)
        return response


def connect(server, idp: str) -> tuple[dict, dict, PageKeepingBrowser]:
    """Register, log in at the stand-in Google, approve, exchange: (client, tokens, browser)."""
    client = register(server)
    verifier, challenge = pkce_pair()
    browser = PageKeepingBrowser(server, idp)
    result = redirect_params(browser.authorize(auth_params(client, challenge)))
    response = exchange(server, client, result["code"], verifier)
    assert response.status_code == 200, response.text
    return client, response.json(), browser


def echo(url: str, access_token: str, **headers: str) -> requests.Response:
    response = requests.post(
        url, data=b"{}", headers={"Authorization": f"Bearer {access_token}", **headers}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response


def never_in(upstream_tokens: list[str], *texts: str) -> None:
    for text in texts:
        for token in upstream_tokens:
            assert token not in text


def files_text(data_dir: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in sorted(data_dir.rglob("*")) if p.is_file())


def upstream_token_grants(server) -> set[str]:
    """The grant ids `upstream_tokens` holds, as a backup shows them."""
    made = server.cli("backup", "--output", str(server.workdir / "backups"))
    assert made.returncode == 0, made.stderr
    newest = max((server.workdir / "backups").glob("oauth-backup-*.json"), key=lambda p: p.stat().st_mtime)
    return set(json.loads(newest.read_text())["upstream_tokens"])


def test_gateway_passes_the_upstream_token_and_the_client_never_sees_it(make_server, idp, upstream):
    control(idp)
    # /verify called by anyone but a trusted proxy (here: the test itself) never gets it
    server = make_server(users={}, **google_env(idp, OAUTH_UPSTREAM_URL=upstream, OAUTH_TRUSTED_PROXIES="192.0.2.1"))
    client, tokens, browser = connect(server, idp)

    asked = stats(idp)["last_authorize"]
    assert CALENDAR in asked["scope"].split() and asked["access_type"] == "offline" and asked["prompt"] == "consent"
    assert any("The MCP server will act with your Google account." in page for page in browser.pages)

    seen = echo(server.url("/mcp/echo"), tokens["access_token"], **{"X-Auth-Upstream-Token": "forged"})
    assert seen.json()["headers"]["x-auth-upstream-token"] == stats(idp)["last_access_token"]  # not the client's

    # Our refresh token rotates: the upstream token stays with the grant.
    refreshed = requests.post(
        server.url("/token"),
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client["client_id"],
        },
        timeout=10,
    )
    assert refreshed.status_code == 200, refreshed.text
    tokens = refreshed.json()
    seen = echo(server.url("/mcp/echo"), tokens["access_token"])
    assert seen.json()["headers"]["x-auth-upstream-token"] == stats(idp)["last_access_token"]

    # The MCP client never sees it: not in our token responses, our headers, /verify
    # asked directly, introspection.
    rs = json.loads(server.cli("add-resource-server", "rs", "--json").stdout)
    introspected = requests.post(
        server.url("/introspect"), data={"token": tokens["access_token"]}, auth=(rs["client_id"], rs["client_secret"])
    )
    assert introspected.json()["active"] is True
    direct = verify(server, tokens["access_token"])
    assert direct.status_code == 200 and "X-Auth-Upstream-Token" not in direct.headers
    issued = stats(idp)["issued"]
    never_in(
        issued,
        json.dumps(tokens),
        refreshed.text,
        introspected.text,
        json.dumps(dict(seen.headers)),
        json.dumps(dict(direct.headers)),
    )
    # Nor does the data folder or the log hold it in clear.
    never_in(issued, files_text(server.data_dir), server.output)

    # Revoking the grant deletes it.
    grant_id = tokens["refresh_token"].partition(".")[0]
    assert upstream_token_grants(server) == {grant_id}
    revoked = requests.post(
        server.url("/revoke"), data={"token": tokens["refresh_token"], "client_id": client["client_id"]}, timeout=10
    )
    assert revoked.status_code == 200
    assert upstream_token_grants(server) == set()


def test_the_mcp_server_gets_the_refreshed_token_once_the_old_one_expires(make_server, idp, upstream):
    control(idp, expires_in=SHORT)
    server = make_server(users={}, **google_env(idp, OAUTH_UPSTREAM_URL=upstream))
    _, tokens, _ = connect(server, idp)
    issued_at = time.time()
    first = stats(idp)["last_access_token"]
    assert echo(server.url("/mcp/echo"), tokens["access_token"]).json()["headers"]["x-auth-upstream-token"] == first

    # Once it is within a minute of expiring, the next request refreshes it upstream.
    time.sleep(max(0.0, SHORT - 60 - (time.time() - issued_at)) + 1.0)
    before = stats(idp)["refreshes"]
    seen = echo(server.url("/mcp/echo"), tokens["access_token"])
    after = stats(idp)
    assert after["refreshes"] == before + 1
    assert seen.json()["headers"].get("x-auth-upstream-token") == after["last_access_token"] != first
    assert "upstream_token.refreshed" in server.output
    never_in(after["issued"], files_text(server.data_dir), server.output)


def test_deleting_the_client_or_the_grant_deletes_the_upstream_token(make_server, idp):
    control(idp)
    server = make_server(users={}, **google_env(idp))
    client, tokens, _ = connect(server, idp)
    other, other_tokens, _ = connect(server, idp)
    grant, other_grant = (t["refresh_token"].partition(".")[0] for t in (tokens, other_tokens))
    assert upstream_token_grants(server) == {grant, other_grant}  # each grant its own

    # A backup (its sealed tokens and their key checked like every record) restores
    # whole; an older backup, written before the collection existed, still restores.
    backups = sorted((server.workdir / "backups").glob("oauth-backup-*.json"))
    restored = server.cli("restore", str(backups[-1]), "--clear", "--yes")
    assert restored.returncode == 0, restored.stderr
    assert upstream_token_grants(server) == {grant, other_grant}
    older = json.loads(backups[-1].read_text())
    del older["upstream_tokens"]
    (server.workdir / "older.json").write_text(json.dumps(older))
    dry = server.cli("restore", str(server.workdir / "older.json"), "--clear", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("remove upstream token") == 2, dry.stdout + dry.stderr

    assert server.cli("delete-client", client["client_id"], "--yes").returncode == 0
    assert upstream_token_grants(server) == {other_grant}
    assert server.cli("delete-token", other_grant).returncode == 0
    assert upstream_token_grants(server) == set()


def test_a_failed_upstream_refresh_means_no_header_and_the_request_served(make_server, idp, upstream):
    control(idp, expires_in=5, refresh_mode="fail")
    server = make_server(users={}, **google_env(idp, OAUTH_UPSTREAM_URL=upstream))
    _, tokens, _ = connect(server, idp)
    # expiring at once: refreshed, refused; and what the client sends in its name is dropped
    seen = echo(server.url("/mcp/echo"), tokens["access_token"], **{"X-Auth-Upstream-Token": "forged"})
    assert "x-auth-upstream-token" not in seen.json()["headers"]
    assert seen.json()["headers"]["x-auth-subject"] == "g-42"
    assert "upstream_token.refresh_failed" in server.output and "reason=invalid_grant" in server.output
    metrics = requests.get(server.url("/metrics"), timeout=5).text
    assert 'mcp_oauth_upstream_token_refreshes_total{outcome="failed"} 1.0' in metrics


def test_verify_behind_nginx_hands_the_upstream_token_to_the_mcp_server(tmp_path, idp, upstream, test_ca):
    control(idp, expires_in=SHORT)
    listen, oauth_port = free_port(), free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer, **google_env(idp))
    server.start()
    try:
        ports = {3000: int(urlsplit(upstream).port), 8000: oauth_port}
        with tls_proxy("nginx", "nginx.conf", tmp_path, listen, ports, test_ca):
            server.base = issuer
            client, tokens, _ = connect(server, idp)
            seen = echo(issuer + "/mcp/echo", tokens["access_token"], **{"X-Auth-Upstream-Token": "forged"})
            current = stats(idp)["last_access_token"]
            assert seen.json()["headers"]["x-auth-upstream-token"] == current
            issued_at = time.time()
            # /verify is the proxy's: asked from outside, it is not there.
            outside = requests.get(issuer + "/verify", headers={"Authorization": f"Bearer {tokens['access_token']}"})
            assert outside.status_code == 404
            time.sleep(max(0.0, SHORT - 60 - (time.time() - issued_at)) + 1.5)
            seen = echo(issuer + "/mcp/echo", tokens["access_token"])
            assert seen.json()["headers"]["x-auth-upstream-token"] == stats(idp)["last_access_token"] != current
            never_in(stats(idp)["issued"], json.dumps(dict(seen.headers)), outside.text, json.dumps(tokens))
    finally:
        server.stop()
    never_in(stats(idp)["issued"], files_text(server.data_dir), server.output)


def test_a_sealed_token_moved_to_another_grant_does_not_open(tmp_path):
    """The associated data binds a ciphertext to its grant: copied under another grant's
    id (a database row edited, a restored backup doctored), it is refused."""
    from app.keys import KeyManager
    from app.storage.memory import MemoryStore
    from app.upstream_tokens import COLLECTION, UpstreamTokens

    store = MemoryStore()
    tokens = UpstreamTokens(store, KeyManager(store), lambda _: {}, "google", 600)
    tokens.received("browser-1", {"access_token": "secret-upstream-token", "expires_in": 3600})
    box = tokens.take_for_code("browser-1", "code-1")
    tokens.keep_for_grant("grant-a", "code-1", box)
    assert tokens.header_for("grant-a") == "secret-upstream-token"
    assert "secret-upstream-token" not in json.dumps(store.scan(COLLECTION))
    store.put(COLLECTION, "grant-b", {**store.get(COLLECTION, "grant-a"), "grant_id": "grant-b"})
    assert tokens.header_for("grant-b") is None
    # nor does the login's box open as a code's, or another code's
    tokens.received("browser-1", {"access_token": "another", "expires_in": 3600})
    assert tokens.take_for_code("browser-2", "code-2") is None
    tokens.keep_for_grant("grant-c", "code-2", box)
    assert store.get(COLLECTION, "grant-c") is None
