"""Google and Azure (Entra ID) login against a real local OpenID Connect provider
(tests/oidc_idp.py: discovery, JWKS, authorize and token endpoints, RS256 ID tokens)."""

from __future__ import annotations

import pytest
import requests
from support.oauth import redirect_params
from support.providers import CLIENT_ID, SECRET, as_user, login, token_requests

# -- any OpenID Provider (OAUTH_PROVIDER=oidc) -------------------------------------------


@pytest.fixture
def any_oidc(make_server, idp):
    def factory(**env):
        return make_server(
            users={},
            OAUTH_PROVIDER="oidc",
            OIDC_ISSUER=idp,
            OIDC_CLIENT_ID=CLIENT_ID,
            OIDC_CLIENT_SECRET=SECRET,
            OIDC_NAME="Example SSO",
            in_thread=True,
            **env,
        )

    return factory


def test_any_openid_provider_s_forged_or_wrong_id_tokens_are_refused(any_oidc, idp):
    server = any_oidc()
    for mode in ("bad_signature", "wrong_aud", "wrong_iss", "wrong_nonce"):
        as_user(idp, {"sub": "u-1", "email": "alice@example.com", "email_verified": True}, mode=mode)
        final, _, _ = login(server, idp)
        assert final.status_code == 401, (mode, final.status_code, final.text[:300])
        assert "The identity token from Example SSO could not be verified" in final.text
    as_user(idp, {"sub": "u-1", "email": "alice@example.com", "email_verified": True})
    assert "code" in redirect_params(login(server, idp)[0])  # the same, well formed, is fine


def test_a_discovery_document_naming_another_issuer_stops_the_login_before_it_starts(any_oidc, idp):
    """OpenID Connect Discovery §4.3: the document at OIDC_ISSUER must name OIDC_ISSUER.
    One naming another (whose keys and tokens would then be believed) ends the login at
    once, even with ID tokens that name that other issuer."""
    requests.post(f"{idp}/_control", json={"root_discovery_issuer": "http://127.0.0.1:9/evil"}, timeout=5)
    try:
        server = any_oidc()
        as_user(idp, {"sub": "u-1", "email": "a@example.com", "email_verified": True},
                issuer_override="http://127.0.0.1:9/evil")  # fmt: skip
        before = token_requests(idp)
        final, _, browser = login(server, idp)
        assert final.status_code == 502, (final.status_code, final.text[:300])
        assert "not set up correctly" in final.text
        assert not any(url.startswith(idp) for url in browser.visited)  # never sent there
        assert token_requests(idp) == before
    finally:
        requests.post(f"{idp}/_control", json={"root_discovery_issuer": None}, timeout=5)


def admitted(server, idp: str, user: dict) -> bool:
    """Whether `user`'s login ends with a code for the client (else: our 403 page)."""
    as_user(idp, {"sub": "u-7", **user})
    final, _, _ = login(server, idp)
    if final.status_code == 302:
        return "code" in redirect_params(final)
    assert final.status_code == 403 and "may not use this server" in final.text, final.status_code
    return False


def test_any_openid_provider_s_groups_allow_list(any_oidc, idp):
    server = any_oidc(OAUTH_ALLOWED_GROUPS="mcp-users,ops")
    assert admitted(server, idp, {"groups": ["staff", "mcp-users"]})
    assert admitted(server, idp, {"groups": "ops"})  # one name
    assert not admitted(server, idp, {"groups": ["staff", "MCP-users"]})  # names as the provider sends them
    assert not admitted(server, idp, {"email": "a@example.com", "email_verified": True})  # no groups claim


def test_any_openid_provider_s_email_allow_lists_count_verified_addresses_only(any_oidc, idp):
    server = any_oidc(OAUTH_ALLOWED_EMAILS="alice@example.com", OAUTH_ALLOWED_DOMAINS="corp.example")
    assert admitted(server, idp, {"email": "Alice@example.com", "email_verified": True})
    assert admitted(server, idp, {"email": "bob@corp.example", "email_verified": True})
    assert not admitted(server, idp, {"email": "bob@corp.example"})  # unverified
    assert not admitted(server, idp, {"email": "alice@example.com", "email_verified": "true"})  # not `true`
    assert not admitted(server, idp, {"email": "carol@example.org", "email_verified": True})


def test_any_openid_provider_s_allow_lists_are_alternatives(any_oidc, idp):
    server = any_oidc(OAUTH_ALLOWED_GROUPS="admins", OAUTH_ALLOWED_DOMAINS="example.com")
    assert admitted(server, idp, {"email": "c@example.com", "email_verified": True, "groups": []})
    assert admitted(server, idp, {"groups": ["admins"]})
    assert not admitted(server, idp, {"email": "c@example.org", "email_verified": True, "groups": ["staff"]})


def test_the_front_page_names_whom_the_person_signs_in_with(any_oidc):
    """OIDC_NAME labels the sign-in button of the front page (the only button an
    upstream login has: the person goes straight to their provider)."""
    page = requests.get(any_oidc().url("/"), timeout=10)
    assert page.status_code == 200 and "Sign in with Example SSO" in page.text
