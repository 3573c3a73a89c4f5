"""/token, /revoke, /introspect and /verify: code retry window and replay, refresh
rotation with its grace window, invalid_client, revocation, introspection."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

import pytest
import requests
from support.harness import free_port
from support.jwt import jwt_parts
from support.oauth import exchange, get_code, refresh, register, tokens_for, verify
from support.tokens import concurrent_refreshes


def test_code_replay_after_window_revokes(make_server):
    server = make_server(OAUTH_CODE_RETRY_WINDOW="1")
    client = register(server)
    code, verifier, _ = get_code(server, client)
    tokens = exchange(server, client, code, verifier).json()
    time.sleep(1.5)
    replay = exchange(server, client, code, verifier)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert verify(server, tokens["access_token"]).status_code == 401


def test_either_concurrent_response_keeps_working_after_the_grace_window(make_server):
    """The client keeps whichever response it stored; that token must stay good."""
    server = make_server(OAUTH_REFRESH_GRACE="1")
    for kept in (0, 1):
        client, tokens = tokens_for(server)
        results = concurrent_refreshes(server, client, tokens["refresh_token"])
        assert [r.status_code for r in results] == [200, 200]
        time.sleep(1.3)
        later = refresh(server, client, results[kept].json()["refresh_token"])
        assert later.status_code == 200, (kept, later.text)
        assert verify(server, later.json()["access_token"]).status_code == 200


@pytest.mark.parametrize("store", ["file", "postgresql"])
def test_a_rotated_token_presented_again_and_again_never_grows_its_grant(make_server, request, store):
    """Inside the grace window a rotated refresh token still works however often it
    comes back, but each presentation replaces the token the previous one got rather
    than adding a live one: the grant holds the rotated token, its first successor and
    the latest extra, and stays small (it once grew by a hash per presentation)."""
    env = {"OAUTH_STORE": request.getfixturevalue("postgres_url")} if store == "postgresql" else {}
    server = make_server(in_thread=True, **env)
    stored = server.app.extensions["oauth"].store  # the store as the server sees it
    client, tokens = tokens_for(server)
    grant_id = jwt_parts(tokens["access_token"])[1]["grant_id"]
    first = refresh(server, client, tokens["refresh_token"]).json()

    def sha256(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    for _ in range(50):
        again = refresh(server, client, tokens["refresh_token"])
        assert again.status_code == 200, again.text
        issued = again.json()
        assert verify(server, issued["access_token"]).status_code == 200
        grant = stored.get("grants", grant_id)
        hashes = grant["token_hashes"]
        assert hashes[sha256(issued["refresh_token"])] is None  # live: it works
        assert hashes[sha256(first["refresh_token"])] is None  # and so does the first successor
        assert len(hashes) <= 3 and len(json.dumps(grant)) < 1000, grant
    assert refresh(server, client, issued["refresh_token"]).status_code == 200
    assert refresh(server, client, first["refresh_token"]).status_code == 200  # rotated now, in its grace


def test_rotated_token_after_grace_revokes_the_grant(make_server):
    server = make_server(OAUTH_REFRESH_GRACE="1")
    client, tokens = tokens_for(server)
    new = refresh(server, client, tokens["refresh_token"]).json()
    time.sleep(1.5)
    replay = refresh(server, client, tokens["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    # the whole grant is gone: the newest refresh and access tokens too
    assert refresh(server, client, new["refresh_token"]).status_code == 400
    assert verify(server, new["access_token"]).status_code == 401


def test_a_refresh_token_issued_before_tokens_named_their_grant_still_works(make_server):
    """A grant stored by an earlier version holds hashes of tokens that name no grant:
    they are found by hash, refresh, and a replay of one still revokes the grant."""
    from app.storage import PersistentStore

    server = make_server(OAUTH_REFRESH_GRACE="1")
    client, tokens = tokens_for(server)
    store = PersistentStore(server.data_dir)
    record = store.get("grants", jwt_parts(tokens["access_token"])[1]["grant_id"])
    legacy = secrets.token_urlsafe(32)
    record.pop("token_hashes")
    record.update(grant_id="earlier", refresh_token_hashes={hashlib.sha256(legacy.encode()).hexdigest(): None})
    store.put("grants", "earlier", record)

    refreshed = refresh(server, client, legacy)
    assert refreshed.status_code == 200, refreshed.text
    new = refreshed.json()
    assert new["refresh_token"].startswith("earlier.") and jwt_parts(new["access_token"])[1]["grant_id"] == "earlier"
    assert refresh(server, client, new["refresh_token"]).status_code == 200
    time.sleep(1.5)
    replay = refresh(server, client, legacy)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert store.get("grants", "earlier") is None


def test_refresh_cannot_widen_scope(make_server):
    server = make_server(OAUTH_SCOPES="mcp tools")
    client, tokens = tokens_for(server, scope="mcp")
    assert tokens["scope"] == "mcp"
    wider = refresh(server, client, tokens["refresh_token"], scope="mcp tools")
    assert wider.status_code == 400 and wider.json()["error"] == "invalid_scope"


def test_introspection_requires_confidential_client(server):
    _, tokens = tokens_for(server)
    caller = json.loads(server.cli("add-resource-server", "resource server", "--json").stdout)
    active = requests.post(
        server.url("/introspect"),
        auth=(caller["client_id"], caller["client_secret"]),
        data={"token": tokens["access_token"]},
    ).json()
    assert active["active"] is True and active["sub"] == "alice" and active["scope"] == "mcp"
    refresh_info = requests.post(
        server.url("/introspect"),
        auth=(caller["client_id"], caller["client_secret"]),
        data={"token": tokens["refresh_token"], "token_type_hint": "refresh_token"},
    ).json()
    assert refresh_info["active"] is True
    junk = requests.post(
        server.url("/introspect"), auth=(caller["client_id"], caller["client_secret"]), data={"token": "junk"}
    ).json()
    assert junk == {"active": False}
    public = register(server)
    anonymous = requests.post(
        server.url("/introspect"), data={"token": tokens["access_token"], "client_id": public["client_id"]}
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "invalid_client"


def test_verify_refuses_an_expired_token(make_server):
    server = make_server(OAUTH_ACCESS_TOKEN_TTL="1")
    _, tokens = tokens_for(server)
    time.sleep(1.2)
    expired = verify(server, tokens["access_token"])
    assert expired.status_code == 401 and "expired" in expired.json()["error_description"]


def test_verify_refuses_a_token_for_another_resource(make_server):
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    server = make_server(PORT=str(port), OAUTH_RESOURCES=f"{issuer}/mcp,{issuer}/other")
    _, tokens = tokens_for(server, resource=f"{issuer}/other")
    headers = {
        "Authorization": f"Bearer {tokens['access_token']}",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": f"127.0.0.1:{port}",
    }
    wrong = requests.get(server.url("/verify"), headers={**headers, "X-Forwarded-Uri": "/mcp/x"})
    assert wrong.status_code == 401
    right = requests.get(server.url("/verify"), headers={**headers, "X-Forwarded-Uri": "/other"})
    assert right.status_code == 200


def test_a_token_whose_client_vanished_while_its_grant_stayed_is_refused(server):
    """The client check stands on its own: the client's record alone goes (written by
    another process into the running server's store), its grant stays, and the token
    is refused at once, by /verify and by introspection."""
    from app.storage import PersistentStore

    client, tokens = tokens_for(server)
    assert verify(server, tokens["access_token"]).status_code == 200
    store = PersistentStore(server.data_dir)
    assert store.delete("clients", client["client_id"]) is not None
    assert any(g["client_id"] == client["client_id"] for g in store.scan("grants").values())
    refused = verify(server, tokens["access_token"])
    assert refused.status_code == 401 and "no longer registered" in refused.json()["error_description"]
    caller = json.loads(server.cli("add-resource-server", "resource server", "--json").stdout)
    inactive = requests.post(
        server.url("/introspect"),
        auth=(caller["client_id"], caller["client_secret"]),
        data={"token": tokens["access_token"]},
    ).json()
    assert inactive == {"active": False}
