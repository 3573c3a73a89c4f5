"""The in-process tier: protocol, validation and CLI arguments through Flask's test
client and CLI runner (no server process; the store's files are still real)."""

from __future__ import annotations

import json

import pytest
from support.harness import CLAUDE_CALLBACK


def register(client, body) -> object:
    return client.post("/register", json=body)


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"redirect_uris": ["javascript:alert(1)"]}, "invalid_redirect_uri"),
        ({"redirect_uris": ["http://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "magic"}, "invalid_client_metadata"),
        ({"redirect_uris": [CLAUDE_CALLBACK], "grant_types": ["implicit"]}, "invalid_client_metadata"),
        ({"redirect_uris": [CLAUDE_CALLBACK], "response_types": ["token"]}, "invalid_client_metadata"),
        ({"redirect_uris": [CLAUDE_CALLBACK], "client_name": "x" * 301}, "invalid_client_metadata"),
        (["not", "an", "object"], "invalid_client_metadata"),
    ],
)
def test_registration_refuses_bad_metadata_in_rfc7591_terms(client, body, error):
    response = register(client, body)
    assert response.status_code == 400
    assert response.json["error"] == error
    assert response.headers["Cache-Control"] == "no-store"


def test_token_endpoint_errors_are_rfc6749_json(client):
    made = register(client, {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}).json
    unknown = client.post("/token", data={"grant_type": "authorization_code", "code": "x", "client_id": "nobody"})
    assert unknown.status_code == 401 and unknown.json["error"] == "invalid_client"
    assert unknown.headers["WWW-Authenticate"].startswith("Basic ")
    bad_code = client.post(
        "/token",
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "code_verifier": "v" * 43,
            "client_id": made["client_id"],
        },
    )
    assert bad_code.status_code == 400 and bad_code.json["error"] == "invalid_grant"
    unsupported = client.post("/token", data={"grant_type": "password", "client_id": made["client_id"]})
    assert unsupported.status_code == 400 and unsupported.json["error"] == "unsupported_grant_type"


def test_authorize_without_pkce_is_refused_on_a_page_before_login(client):
    """No one has logged in yet: the error is shown, not redirected (RFC 9700 §4.11.2)."""
    made = register(client, {"redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}).json
    query = {"response_type": "code", "client_id": made["client_id"], "redirect_uri": CLAUDE_CALLBACK, "state": "s"}
    response = client.get("/authorize", query_string=query)
    assert response.status_code == 400 and "Location" not in response.headers
    assert "<code>invalid_request</code>" in response.text and "PKCE" in response.text


def test_user_commands_check_their_arguments(runner):
    added = runner.invoke(args=["oauth", "add-user", "bob", "--password-stdin"], input="a good password\n")
    assert added.exit_code == 0, added.output
    again = runner.invoke(args=["oauth", "add-user", "bob", "--password-stdin"], input="another one!\n")
    assert again.exit_code == 1 and "already exists" in again.stderr
    short = runner.invoke(args=["oauth", "add-user", "carol", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least" in short.stderr
    listed = runner.invoke(args=["oauth", "list-users", "--json"])
    assert [u["username"] for u in json.loads(listed.stdout)] == ["alice", "bob"]
    missing = runner.invoke(args=["oauth", "delete-user", "nobody"])
    assert missing.exit_code == 1 and "no user" in missing.stderr


def test_delete_commands_refuse_unknown_or_ambiguous_targets(runner):
    unknown = runner.invoke(args=["oauth", "delete-client", "no-such-client"])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("Error:")
    unconfirmed = runner.invoke(args=["oauth", "delete-all-tokens"], input="n\n")
    assert unconfirmed.exit_code != 0
