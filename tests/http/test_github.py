"""GitHub login against a stand-in GitHub (tests/github_standin.py: the authorize and
token endpoints, `/user`, `/user/emails`, organization membership, the refresh grant
of a GitHub App's expiring tokens), over real HTTP, through the whole flow: the
upstream login, our consent page, our code and our tokens."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from github_standin import CLIENT_ID, CLIENT_SECRET
from support.github import ALICE, as_user, login
from support.jwt import jwt_parts
from support.oauth import Browser, auth_params, exchange, pkce_pair, redirect_params, register, verify


def stats(github: str) -> dict:
    return requests.get(f"{github}/_stats", timeout=5).json()


@pytest.fixture
def server_for(make_server, github):
    def start(**env):
        return make_server(
            users={},
            OAUTH_PROVIDER="github",
            GITHUB_CLIENT_ID=CLIENT_ID,
            GITHUB_CLIENT_SECRET=CLIENT_SECRET,
            GITHUB_URL=github,
            GITHUB_API_URL=github,
            in_thread=True,
            **env,
        )

    return start


def test_github_login_consent_code_and_tokens(server_for, github):
    """An OAuth App: GitHub's plain OAuth 2 with PKCE, the person read from the API;
    our token's subject is `github:` + the numeric id, and only the scopes needed are
    asked (no read:org without an organization allow-list)."""
    server = server_for()
    as_user(github, ALICE)
    before = stats(github)
    final, client, verifier, browser = login(server, github)
    result = redirect_params(final)
    assert result["iss"] == server.issuer
    assert any(url.startswith(f"{github}/login/oauth/authorize") for url in browser.visited)
    assert any(url.startswith(server.url("/consent")) for url in browser.visited)  # our consent, after GitHub
    asked = parse_qs(urlsplit(next(u for u in browser.visited if u.startswith(github))).query)
    assert asked["redirect_uri"] == [server.url("/oauth/github/callback")]
    after = stats(github)
    assert after["scopes"][len(before["scopes"]) :] == ["read:user user:email"]
    assert after["accept"][-1].startswith("application/json")  # else GitHub answers form-encoded
    assert after["api"][len(before["api"]) :] == ["/user", "/user/emails"]
    tokens = exchange(server, client, result["code"], verifier).json()
    claims = jwt_parts(tokens["access_token"])[1]
    assert claims["sub"] == "github:4242" and claims["iss"] == server.issuer
    assert verify(server, tokens["access_token"]).headers["X-Auth-Subject"] == "github:4242"


def test_a_github_app_with_expiring_user_tokens_logs_in(server_for, github):
    """A GitHub App issues user tokens that expire, with a refresh token: the login
    works the same (the token response reaches `upstream_token_received` whole)."""
    server = server_for()
    as_user(github, ALICE, app="github")
    final, client, verifier, _ = login(server, github)
    tokens = exchange(server, client, redirect_params(final)["code"], verifier).json()
    assert jwt_parts(tokens["access_token"])[1]["sub"] == "github:4242"


def test_the_stand_in_answers_as_github_does(github):
    """The stand-in itself (others' tests rely on it): form-encoded answers unless JSON
    is asked for, PKCE checked, and a GitHub App's refresh token good for one refresh."""
    as_user(github, ALICE, app="github")
    verifier, challenge = pkce_pair()
    params = {"client_id": CLIENT_ID, "redirect_uri": "http://127.0.0.1:9/cb", "state": "s", "scope": "read:user",
              "code_challenge": challenge, "code_challenge_method": "S256"}  # fmt: skip
    start = requests.get(f"{github}/login/oauth/authorize?{urlencode(params)}", allow_redirects=False, timeout=5)
    code = parse_qs(urlsplit(start.headers["Location"]).query)["code"][0]
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code,
            "redirect_uri": params["redirect_uri"], "code_verifier": verifier}  # fmt: skip
    answer = requests.post(f"{github}/login/oauth/access_token", data=body, timeout=5)
    assert answer.headers["Content-Type"].startswith("application/x-www-form-urlencoded")
    token = {k: v[0] for k, v in parse_qs(answer.text).items()}
    assert token["expires_in"] == "28800" and token["refresh_token"].startswith("ghr_")
    grant = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "refresh_token",
             "refresh_token": token["refresh_token"]}  # fmt: skip
    json_accept = {"Accept": "application/json"}
    renewed = requests.post(f"{github}/login/oauth/access_token", data=grant, headers=json_accept, timeout=5).json()
    assert renewed["access_token"] != token["access_token"] and renewed["refresh_token"] != token["refresh_token"]
    user = requests.get(f"{github}/user", headers={"Authorization": f"token {renewed['access_token']}"}, timeout=5)
    assert user.json()["id"] == 4242
    again = requests.post(f"{github}/login/oauth/access_token", data=grant, headers=json_accept, timeout=5).json()
    assert again["error"] == "bad_refresh_token"


def admitted(server, github: str, user: dict) -> bool:
    """Whether `user`'s login ends with a code for the client (else: our 403 page,
    before the consent page); asserts the scopes asked of GitHub."""
    as_user(github, user)
    before = stats(github)
    final, _, _, browser = login(server, github)
    orgs = "OAUTH_ALLOWED_ORGS" in server.env
    assert stats(github)["scopes"][len(before["scopes"]) :] == [
        "read:user user:email read:org" if orgs else "read:user user:email"  # read:org only when needed
    ]
    if final.status_code == 302:
        return "code" in redirect_params(final)
    assert final.status_code == 403, (final.status_code, final.text[:300])
    assert "may not use this server" in final.text and "Location" not in final.headers
    assert not any(url.startswith(server.url("/consent")) for url in browser.visited)
    return False


def test_github_users_allow_list_names_logins_or_numeric_ids(server_for, github):
    server = server_for(OAUTH_ALLOWED_USERS="Alice-GH,777")
    assert admitted(server, github, ALICE)  # logins are case-insensitive
    assert admitted(server, github, {**ALICE, "id": 777, "login": "renamed"})  # or the numeric id
    assert not admitted(server, github, {**ALICE, "id": 5, "login": "bob"})


def test_github_orgs_allow_list_admits_active_members_only(server_for, github):
    server = server_for(OAUTH_ALLOWED_ORGS="ACME,invited-org")
    assert admitted(server, github, ALICE)  # an active member of acme
    assert not admitted(server, github, {**ALICE, "orgs": {"invited-org": "pending"}})  # an invitation
    assert not admitted(server, github, {**ALICE, "orgs": {"other-org": "active"}})
    assert not admitted(server, github, {**ALICE, "orgs": {}})


def test_github_email_allow_lists_count_the_verified_primary_address_only(server_for, github):
    server = server_for(OAUTH_ALLOWED_EMAILS="alice@personal.example", OAUTH_ALLOWED_DOMAINS="corp.example")
    assert admitted(server, github, ALICE)  # primary alice@corp.example, verified: by its domain
    primary_listed = [{"email": "alice@personal.example", "primary": True, "verified": True}]
    assert admitted(server, github, {**ALICE, "emails": primary_listed})
    unverified = [{"email": "eve@corp.example", "primary": True, "verified": False}]
    assert not admitted(server, github, {**ALICE, "emails": unverified})
    secondary = [
        {"email": "frank@else.example", "primary": True, "verified": True},
        {"email": "alice@personal.example", "primary": False, "verified": True},
    ]
    assert not admitted(server, github, {**ALICE, "emails": secondary})  # not the primary


def test_github_allow_lists_are_alternatives(server_for, github):
    server = server_for(OAUTH_ALLOWED_USERS="bob", OAUTH_ALLOWED_ORGS="acme")
    assert admitted(server, github, ALICE)  # through the organization
    assert admitted(server, github, {**ALICE, "login": "bob", "orgs": {}})  # through the login
    assert not admitted(server, github, {**ALICE, "orgs": {}})


def test_github_errors_are_clear_pages_and_a_replayed_callback_is_refused(server_for, github):
    server = server_for()
    as_user(github, ALICE, mode="deny")
    final, _, _, _ = login(server, github)
    assert final.status_code == 403 and "cancelled" in final.text

    as_user(github, ALICE)
    client = register(server)
    _, challenge = pkce_pair()
    browser = Browser(server)
    to_github = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    callback = browser.get(to_github.headers["Location"]).headers["Location"]
    assert browser.get(callback).status_code == 302
    before = stats(github)["token_requests"]
    replay = browser.get(callback)
    assert replay.status_code == 400  # the login it belonged to is over
    assert stats(github)["token_requests"] == before  # nothing sent to GitHub


def test_a_refused_client_secret_is_a_clear_page(make_server, github):
    """GitHub answers a bad client secret with status 200 and an `error` field."""
    server = make_server(
        users={},
        OAUTH_PROVIDER="github",
        GITHUB_CLIENT_ID=CLIENT_ID,
        GITHUB_CLIENT_SECRET="not-the-secret",
        GITHUB_URL=github,
        GITHUB_API_URL=github,
        in_thread=True,
    )
    as_user(github, ALICE)
    final, _, _, _ = login(server, github)
    assert final.status_code == 400 and "incorrect_client_credentials" in final.text
