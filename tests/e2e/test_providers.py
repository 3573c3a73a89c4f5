"""Google and Azure (Entra ID) login against a real local OpenID Connect provider
(tests/oidc_idp.py: discovery, JWKS, authorize and token endpoints, RS256 ID tokens)."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests
from support.harness import failed_start, free_port
from support.jwt import jwt_parts
from support.oauth import Browser, auth_params, exchange, pkce_pair, redirect_params, register, shown_of
from support.providers import CLIENT_ID, SECRET, as_user, login, token_requests


def upstream_callback(server) -> tuple[Browser, str]:
    """Start a login at our /authorize, let the IdP answer; return the browser and the
    callback URL the IdP sent it to (not yet visited)."""
    client = register(server)
    _, challenge = pkce_pair()
    browser = Browser(server)
    start = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    return browser, browser.get(start.headers["Location"]).headers["Location"]


@pytest.fixture
def google(make_server, idp):
    def factory(**env):
        return make_server(
            users={},
            OAUTH_PROVIDER="google",
            GOOGLE_CLIENT_ID=CLIENT_ID,
            GOOGLE_CLIENT_SECRET=SECRET,
            GOOGLE_DISCOVERY_URL=f"{idp}/.well-known/openid-configuration",
            **env,
        )

    return factory


@pytest.fixture
def azure(make_server, idp):
    def factory(tenant="tenant-a", **env):
        return make_server(
            users={},
            OAUTH_PROVIDER="azure",
            AZURE_CLIENT_ID=CLIENT_ID,
            AZURE_CLIENT_SECRET=SECRET,
            AZURE_TENANT_ID=tenant,
            AZURE_AUTHORITY=idp,
            **env,
        )

    return factory


def test_google_login_consent_and_tokens(google, idp):
    server = google()
    as_user(idp, {"sub": "g-123", "email": "alice@example.com", "email_verified": True, "name": "Alice"})
    client = register(server)
    verifier, challenge = pkce_pair()
    browser = Browser(server)
    browser.also_follow = [idp]
    result = redirect_params(browser.authorize(auth_params(client, challenge)))
    assert result["iss"] == server.issuer
    assert any("/consent" in url for url in browser.visited)  # our consent page, after the upstream login
    assert any(url.startswith(idp) for url in browser.visited)
    tokens = exchange(server, client, result["code"], verifier).json()
    claims = jwt_parts(tokens["access_token"])[1]
    assert claims["sub"] == "g-123" and claims["iss"] == server.issuer  # our token, not Google's
    # The audit log has the login; the log never has our upstream client secret.
    assert "login.succeeded provider=google subject=g-123" in server.output
    assert SECRET not in server.output


@pytest.mark.parametrize("mode", ["bad_signature", "wrong_aud", "wrong_iss", "expired", "wrong_nonce"])
def test_forged_or_wrong_id_tokens_are_refused(google, idp, mode):
    server = google()
    as_user(idp, {"sub": "g-123", "email": "alice@example.com", "email_verified": True}, mode=mode)
    final, client, _ = login(server, idp)
    assert final.status_code == 401, (mode, final.status_code, final.text[:300])
    assert "could not be verified" in final.text
    assert "Location" not in final.headers
    assert "login.failed provider=google reason=id_token_refused" in server.output


def test_upstream_access_denied_is_a_clear_page(google, idp):
    server = google()
    as_user(idp, {"sub": "g-1"}, mode="deny")
    final, _, _ = login(server, idp)
    assert final.status_code == 403 and "cancelled" in final.text


def test_replayed_state_is_refused_before_anything_goes_upstream(google, idp):
    server = google()
    as_user(idp, {"sub": "g-123", "email": "alice@example.com", "email_verified": True})
    client = register(server)
    _, challenge = pkce_pair()
    url = server.url("/authorize?" + urlencode(auth_params(client, challenge)))
    browser = Browser(server)
    at_idp = browser.get(browser.get(url).headers["Location"])
    callback_url = at_idp.headers["Location"]
    first = browser.get(callback_url)
    assert first.status_code == 302 and "/consent" in first.headers["Location"]
    before = token_requests(idp)
    # The same callback again, from the same browser: refused.
    assert browser.get(callback_url).status_code == 400
    # From another browser in the middle of its own upstream login: the state is not its own.
    stranger = Browser(server)
    assert stranger.get(url).headers["Location"].startswith(idp)
    replay = stranger.get(callback_url)
    assert replay.status_code == 400 and "not valid" in replay.text
    assert token_requests(idp) == before  # nothing was sent upstream


def test_tampered_state_is_refused(google, idp):
    server = google()
    as_user(idp, {"sub": "g-1", "email": "a@example.com", "email_verified": True})
    browser, callback = upstream_callback(server)
    before = token_requests(idp)
    tampered = callback.replace("state=", "state=x")
    assert browser.get(tampered).status_code == 400
    assert token_requests(idp) == before


def test_google_allow_lists(google, idp):
    server = google(OAUTH_ALLOWED_EMAILS="alice@example.com", OAUTH_ALLOWED_DOMAINS="corp.example")
    cases = [
        ({"sub": "1", "email": "Alice@Example.com", "email_verified": True}, 302),
        ({"sub": "2", "email": "alice@example.com", "email_verified": False}, 403),  # unverified email
        ({"sub": "3", "email": "bob@example.com", "email_verified": True}, 403),  # not listed
        ({"sub": "4", "email": "carol@corp.example", "email_verified": True, "hd": "corp.example"}, 302),
        ({"sub": "5", "email": "dave@corp.example", "email_verified": True}, 403),  # domain only by hd
    ]
    for user, status in cases:
        as_user(idp, user)
        final, _, _ = login(server, idp)
        assert final.status_code == status, (user, final.status_code)
        if status == 403:
            assert "may not use this server" in final.text


def test_azure_single_tenant(azure, idp):
    server = azure("tenant-a")
    user = {"sub": "per-app", "tid": "tenant-a", "oid": "oid-1", "preferred_username": "bob@contoso.com"}
    as_user(idp, user)
    client = register(server)
    verifier, challenge = pkce_pair()
    browser = Browser(server)
    browser.also_follow = [idp]
    result = redirect_params(browser.authorize(auth_params(client, challenge)))
    tokens = exchange(server, client, result["code"], verifier).json()
    assert jwt_parts(tokens["access_token"])[1]["sub"] == "tenant-a:oid-1"
    # A token from another tenant (its issuer names tenant-b) is refused.
    as_user(idp, {**user, "tid": "tenant-b"})
    final, _, _ = login(server, idp)
    assert final.status_code == 401


def test_azure_tenant_id_pins_the_tenant_whatever_discovery_says(azure, idp):
    requests.post(f"{idp}/_control", json={"discovery_issuer": f"{idp}/tenant-b/v2.0"}, timeout=5)
    try:
        server = azure("tenant-a")
        as_user(idp, {"sub": "s", "tid": "tenant-b", "oid": "o"})  # tenant-b's token, as discovery names
        final, _, _ = login(server, idp)
        assert final.status_code == 401
        as_user(idp, {"sub": "s", "tid": "tenant-a", "oid": "o"}, issuer_override=f"{idp}/tenant-b/v2.0")
        final, _, _ = login(server, idp)
        assert final.status_code == 401
    finally:
        requests.post(f"{idp}/_control", json={"discovery_issuer": None}, timeout=5)


def test_azure_multi_tenant_checks_issuer_against_tid(azure, idp):
    server = azure("organizations")
    as_user(idp, {"sub": "s", "tid": "t1", "oid": "o1", "email": "x@fabrikam.com"})
    final, _, _ = login(server, idp)
    assert final.status_code == 302 and "code=" in final.headers["Location"]
    as_user(idp, {"sub": "s", "tid": "t1", "oid": "o1"}, issuer_override=f"{idp}/t2/v2.0")
    final, _, _ = login(server, idp)
    assert final.status_code == 401


def test_azure_allowed_domains_use_email_or_upn(azure, idp):
    server = azure("tenant-a", OAUTH_ALLOWED_DOMAINS="contoso.com")
    as_user(idp, {"sub": "s", "tid": "tenant-a", "oid": "o", "preferred_username": "bob@contoso.com"})
    assert login(server, idp)[0].status_code == 302
    as_user(idp, {"sub": "s", "tid": "tenant-a", "oid": "o", "preferred_username": "eve@other.com"})
    assert login(server, idp)[0].status_code == 403


def test_provider_config_is_validated(tmp_path):
    assert "GOOGLE_CLIENT_ID" in failed_start(tmp_path, tmp_path / "d", OAUTH_PROVIDER="google")


def test_a_bad_provider_variable_stops_startup_before_the_data_folder_is_made(tmp_path):
    """A provider reads and checks its own variables, before the factory touches the
    store: one line naming the variable, and no data folder left behind."""
    azure = {"AZURE_CLIENT_ID": CLIENT_ID, "AZURE_CLIENT_SECRET": SECRET, "AZURE_TENANT_ID": "t"}
    line = failed_start(tmp_path, tmp_path / "d", OAUTH_PROVIDER="azure", **azure, AZURE_AUTHORITY="ftp://x")
    assert "AZURE_AUTHORITY" in line
    assert not (tmp_path / "d").exists()


def test_each_provider_declares_reads_and_checks_its_own_variables():
    """The registry is the one list of providers; each declares its variables (its
    bases' too: the upstream ones share the allow-lists), with their defaults, and
    reading them names the first bad or missing one."""
    from app.config import ConfigError
    from app.providers import REGISTRY, provider_class

    declared = {name: [s.name for s in provider_class(name).declared_settings()] for name in REGISTRY}
    assert declared == {
        "custom": ["OAUTH_PASSKEYS"],
        "google": [
            "OAUTH_ALLOWED_EMAILS", "OAUTH_ALLOWED_DOMAINS",
            "GOOGLE_CLIENT_ID", "GOOGLE_CLIENT_SECRET", "GOOGLE_DISCOVERY_URL",
        ],
        "azure": [
            "OAUTH_ALLOWED_EMAILS", "OAUTH_ALLOWED_DOMAINS",
            "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID", "AZURE_AUTHORITY",
        ],
        "github": [
            "OAUTH_ALLOWED_EMAILS", "OAUTH_ALLOWED_DOMAINS",
            "GITHUB_CLIENT_ID", "GITHUB_CLIENT_SECRET", "GITHUB_URL", "GITHUB_API_URL",
            "OAUTH_ALLOWED_USERS", "OAUTH_ALLOWED_ORGS",
        ],
        "oidc": [
            "OAUTH_ALLOWED_EMAILS", "OAUTH_ALLOWED_DOMAINS",
            "OIDC_ISSUER", "OIDC_CLIENT_ID", "OIDC_CLIENT_SECRET", "OIDC_SCOPES", "OIDC_NAME", "OAUTH_ALLOWED_GROUPS",
        ],
    }  # fmt: skip
    google = provider_class("google")
    settings = google.read_settings(
        {"GOOGLE_CLIENT_ID": " id ", "GOOGLE_CLIENT_SECRET": "s", "OAUTH_ALLOWED_EMAILS": "A@X.example, b@x.example"}
    )
    assert settings["GOOGLE_CLIENT_ID"] == "id"
    assert settings["GOOGLE_DISCOVERY_URL"] == "https://accounts.google.com/.well-known/openid-configuration"
    assert settings["OAUTH_ALLOWED_EMAILS"] == ("a@x.example", "b@x.example")
    assert settings["OAUTH_ALLOWED_DOMAINS"] == ()
    with pytest.raises(ConfigError, match="^GOOGLE_CLIENT_SECRET is required when OAUTH_PROVIDER is google$"):
        google.read_settings({"GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": " "})
    with pytest.raises(ConfigError, match="^GOOGLE_DISCOVERY_URL "):
        google.read_settings({"GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "s", "GOOGLE_DISCOVERY_URL": "x"})
    assert provider_class("custom").read_settings({}) == {"OAUTH_PASSKEYS": "optional"}
    github = provider_class("github").read_settings(
        {"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "s", "OAUTH_ALLOWED_ORGS": "Acme-Corp"}
    )
    assert (github["GITHUB_URL"], github["GITHUB_API_URL"]) == ("https://github.com", "https://api.github.com")
    assert github["OAUTH_ALLOWED_ORGS"] == ("acme-corp",)
    with pytest.raises(ConfigError, match="^OAUTH_ALLOWED_ORGS: "):
        provider_class("github").read_settings(
            {"GITHUB_CLIENT_ID": "id", "GITHUB_CLIENT_SECRET": "s", "OAUTH_ALLOWED_ORGS": "../users"}
        )
    oidc = {"OIDC_ISSUER": "https://sso.example/realms/a", "OIDC_CLIENT_ID": "id", "OIDC_CLIENT_SECRET": "s"}
    assert provider_class("oidc").read_settings(oidc)["OIDC_SCOPES"] == "openid email profile"
    with pytest.raises(ConfigError, match="^OIDC_SCOPES must include openid$"):
        provider_class("oidc").read_settings({**oidc, "OIDC_SCOPES": "email profile"})
    with pytest.raises(ConfigError, match="^OIDC_ISSUER is required when OAUTH_PROVIDER is oidc$"):
        provider_class("oidc").read_settings({**oidc, "OIDC_ISSUER": ""})


def test_expired_pending_authorization_is_a_clear_page(google, idp):
    import time

    server = google(OAUTH_AUTH_CODE_TTL="1")
    as_user(idp, {"sub": "g-1", "email": "a@example.com", "email_verified": True})
    browser, callback = upstream_callback(server)
    time.sleep(1.5)
    before = token_requests(idp)
    late = browser.get(callback)
    assert late.status_code == 400 and "expired" in late.text
    assert token_requests(idp) == before


def test_unreachable_identity_provider_is_a_clear_page(make_server):
    server = make_server(
        users={},
        OAUTH_PROVIDER="google",
        GOOGLE_CLIENT_ID=CLIENT_ID,
        GOOGLE_CLIENT_SECRET=SECRET,
        GOOGLE_DISCOVERY_URL=f"http://127.0.0.1:{free_port()}/.well-known/openid-configuration",
    )
    final, _, _ = login(server, "http://unused")
    assert final.status_code == 502 and "could not be reached" in final.text


def test_upstream_refusing_our_client_secret_is_a_clear_page(make_server, idp):
    server = make_server(
        users={},
        OAUTH_PROVIDER="google",
        GOOGLE_CLIENT_ID=CLIENT_ID,
        GOOGLE_CLIENT_SECRET="not-the-secret",
        GOOGLE_DISCOVERY_URL=f"{idp}/.well-known/openid-configuration",
    )
    as_user(idp, {"sub": "g-1", "email": "a@example.com", "email_verified": True})
    final, _, _ = login(server, idp)
    assert final.status_code == 400 and "invalid_client" in final.text


def test_a_google_login_started_at_one_instance_ends_at_another(google, idp, postgres_url):
    """With OAUTH_STORE=postgresql://… the upstream login state is shared: the IdP's
    answer may come back through another instance than the one that sent the person
    there, and the consent and the code go on from either."""
    from support.oauth import csrf_of, request_id_of

    port_a, port_b = free_port(), free_port()
    issuer = f"http://127.0.0.1:{port_a}"
    first = google(PORT=str(port_a), OAUTH_STORE=postgres_url)
    second = google(PORT=str(port_b), OAUTH_ISSUER=issuer, OAUTH_STORE=postgres_url)
    as_user(idp, {"sub": "g-777", "email": "alice@example.com", "email_verified": True})
    browser, callback = upstream_callback(first)
    assert callback.startswith(issuer + "/oauth/google/callback")
    finished = browser.get(callback.replace(f":{port_a}/", f":{second.port}/", 1))  # back through the other one
    assert finished.status_code == 302, finished.text[:300]
    consent_url = browser.absolute(finished.headers["Location"])
    assert "/consent" in consent_url
    page = browser.get(consent_url)
    approved = browser.post(
        first.url("/consent"),
        data={
            "request_id": request_id_of(consent_url),
            "decision": "approve",
            "csrf_token": csrf_of(page.text),
            "shown": shown_of(page.text),
        },
    )
    assert "code" in redirect_params(approved)
