"""RFC 7591 registration and RFC 7592 management, with this server's rules."""

from __future__ import annotations

import pytest
import requests
from support.harness import CHATGPT_CALLBACK, CLAUDE_CALLBACK
from support.oauth import Browser, register
from support.registration import check_eviction_at_the_cap, check_the_per_address_cap, post_register, register_from, use


def test_public_client_response_has_no_nulls_and_integer_expiry(server):
    client = register(server, redirect_uris=[CLAUDE_CALLBACK, "https://claude.com/api/mcp/auth_callback"])
    assert all(v is not None for v in client.values())
    assert client["client_secret_expires_at"] == 0 and isinstance(client["client_secret_expires_at"], int)
    assert isinstance(client["client_id_issued_at"], int)
    assert client["token_endpoint_auth_method"] == "none"
    assert client["grant_types"] == ["authorization_code", "refresh_token"]
    assert client["registration_client_uri"] == server.url(f"/register/{client['client_id']}")
    assert client["registration_access_token"]
    assert "client_secret" not in client


def test_confidential_client_gets_a_secret_that_is_stored_only_as_hash(server):
    client = register(server, token_endpoint_auth_method="client_secret_basic", redirect_uris=[CHATGPT_CALLBACK])
    assert len(client["client_secret"]) >= 43
    # Every store file, the JSON and its journal.
    stored = "".join(p.read_text() for p in server.data_dir.iterdir() if p.is_file() and not p.name.startswith("."))
    assert client["client_secret"] not in stored
    assert client["registration_access_token"] not in stored
    assert "client_secret_hash" in stored


@pytest.mark.parametrize(
    ("uris", "reason"),
    [
        (["http://evil.example.com/cb"], "http on a non-loopback host"),
        (["https://app.example.com/cb#frag"], "fragment"),
        (["javascript:alert(1)"], "javascript"),
        (["data:text/html,hi"], "data"),
        (["/relative/cb"], "relative"),
        (["https://user:pw@app.example.com/cb"], "userinfo"),
        ([], "empty"),
        ("https://app.example.com/cb", "not a list"),
        (['https://app.example.com/c"b'], "quote"),
        (["https://app.example.com/c b"], "space"),
        (["https://app.example.com/caf\u00e9"], "non-ASCII"),
    ],
)
def test_bad_redirect_uris_are_refused(server, uris, reason):
    response = post_register(server, {"client_name": "x", "redirect_uris": uris, "token_endpoint_auth_method": "none"})
    assert response.status_code == 400, reason
    assert response.json()["error"] == "invalid_redirect_uri"
    assert response.json()["error_description"]


def test_loopback_http_redirects_are_allowed(server):
    for uri in ("http://localhost:33418/callback", "http://127.0.0.1/cb", "http://[::1]:8080/cb"):
        assert post_register(server, {"redirect_uris": [uri], "token_endpoint_auth_method": "none"}).status_code == 201


def test_malformed_bodies_get_rfc7591_errors(server):
    not_json = requests.post(server.url("/register"), data="{nope", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert not_json.json()["error"] == "invalid_client_metadata"
    array = post_register(server, ["x"])
    assert array.status_code == 400 and array.json()["error"] == "invalid_client_metadata"
    bad_method = post_register(server, {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "magic"})
    assert bad_method.status_code == 400 and bad_method.json()["error"] == "invalid_client_metadata"
    bad_grant = post_register(server, {"redirect_uris": [CLAUDE_CALLBACK], "grant_types": ["implicit"]})
    assert bad_grant.status_code == 400 and bad_grant.json()["error"] == "invalid_client_metadata"


def _manage(server, client, method, token=None, **kw):
    token = client["registration_access_token"] if token is None else token
    return requests.request(
        method, client["registration_client_uri"], headers={"Authorization": f"Bearer {token}"}, timeout=10, **kw
    )


def test_rfc7592_read_update_delete(server):
    client = register(server)
    read = _manage(server, client, "GET")
    assert read.status_code == 200
    assert read.json()["client_id"] == client["client_id"]
    assert read.json()["redirect_uris"] == [CLAUDE_CALLBACK]

    body = {
        "client_id": client["client_id"],
        "client_name": "Renamed",
        "redirect_uris": ["http://localhost:9999/cb"],
        "token_endpoint_auth_method": "none",
    }
    updated = _manage(server, client, "PUT", json=body)
    assert updated.status_code == 200, updated.text
    assert updated.json()["client_name"] == "Renamed"
    assert _manage(server, client, "GET").json()["redirect_uris"] == ["http://localhost:9999/cb"]

    assert _manage(server, client, "DELETE").status_code == 204
    gone = _manage(server, client, "GET")
    assert gone.status_code == 401


def test_registration_token_is_bound_to_its_client(server):
    a = register(server, client_name="A")
    b = register(server, client_name="B")
    a_token = a["registration_access_token"]
    for method, kw in (
        ("GET", {}),
        (
            "PUT",
            {
                "json": {
                    "client_id": b["client_id"],
                    "redirect_uris": [CLAUDE_CALLBACK],
                    "token_endpoint_auth_method": "none",
                }
            },
        ),
        ("DELETE", {}),
    ):
        response = _manage(server, b, method, token=a_token, **kw)
        assert response.status_code == 401, (method, response.text)
        assert response.json()["error"] == "invalid_token"
    assert _manage(server, b, "GET").json()["client_name"] == "B"  # untouched


def test_rfc7592_without_or_with_wrong_token(server):
    client = register(server)
    assert requests.get(client["registration_client_uri"], timeout=5).status_code == 401
    assert _manage(server, client, "GET", token="wrong").status_code == 401


def test_the_registration_rate_counts_an_ipv6_64_as_one_address(make_server):
    server = make_server(in_thread=True, OAUTH_REGISTRATION_RATE="3")
    assert [register_from(server, f"2001:db8:1:2::{n}").status_code for n in (1, 2, 3)] == [201] * 3
    refused = register_from(server, "2001:db8:1:2:abcd::9")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"] == "temporarily_unavailable"
    assert register_from(server, "2001:db8:1:3::1").status_code == 201  # the next /64


def test_one_address_holds_at_most_its_cap_of_never_used_clients(make_server):
    check_the_per_address_cap(make_server(in_thread=True, OAUTH_MAX_CLIENTS_PER_ADDRESS="3"))


def test_at_the_cap_a_registration_evicts_the_oldest_never_used_client(make_server):
    check_eviction_at_the_cap(make_server(in_thread=True, OAUTH_MAX_CLIENTS="3"))


def test_a_client_keeps_the_network_it_registered_from_only_until_it_is_used(server):
    """The per-address cap needs the network (an IPv6 /64), not the address; and once
    the client is used it is counted no more, so kept no longer."""
    client = register_from(server, "2001:db8:9:9:1:2:3:4").json()
    store = server.app.extensions["oauth"].store
    assert store.get("clients", client["client_id"])["registered_from"] == "2001:db8:9:9::/64"
    use(server, client, Browser(server))
    assert "registered_from" not in store.get("clients", client["client_id"])
