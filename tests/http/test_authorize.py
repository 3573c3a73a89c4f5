"""/authorize: PKCE, redirect URI matching, errors shown or redirected, RFC 9207 iss,
RFC 8707 resource, scopes, consent, CSRF, login session."""

from __future__ import annotations

import re
from urllib.parse import urlencode

import requests
from support.harness import CHATGPT_CALLBACK, PASSWORD
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    exchange,
    get_code,
    pkce_pair,
    redirect_params,
    register,
    request_id_of,
    shown_of,
)


def start(server, params):
    return requests.get(server.url("/authorize?" + urlencode(params, doseq=True)), allow_redirects=False, timeout=10)


def test_unknown_client_is_shown_not_redirected(server):
    _, challenge = pkce_pair()
    params = auth_params({"client_id": "nope", "redirect_uris": ["https://attacker.example/cb"]}, challenge)
    response = start(server, params)
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"]
    assert "invalid_client" in response.text


def test_unregistered_redirect_uri_is_shown_not_redirected(server):
    client = register(server)
    _, challenge = pkce_pair()
    response = start(server, auth_params(client, challenge, redirect_uri="https://attacker.example/cb"))
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "invalid" in response.text.lower()  # an error page for the person, not a redirect


def test_a_redirect_uri_that_only_extends_a_registered_one_is_refused(server):
    """Exact match (RFC 9700 §4.1.3): a registered URI as a prefix is not enough, not
    even for a host that merely starts with the registered host, nor for an added
    path, query or dot segment."""
    client = register(server, redirect_uris=["https://app.example.com", "https://app.example.com/cb"])
    _, challenge = pkce_pair()
    for extended in (
        "https://app.example.com.evil.example/cb",
        "https://app.example.com/cb.evil",
        "https://app.example.com/cb/",
        "https://app.example.com/cb/../../evil",
        "https://app.example.com/cb?next=https://evil.example",
        "https://app.example.com@evil.example/cb",
        "https://app.example.com:8443/cb",  # only loopback http may change its port
    ):
        response = start(server, auth_params(client, challenge, redirect_uri=extended))
        assert response.status_code == 400, extended
        assert "Location" not in response.headers, extended


def test_loopback_redirect_may_change_port_but_not_host_or_path(server):
    client = register(server, redirect_uris=["http://localhost:33418/callback"])
    code, verifier, _ = get_code(server, client, redirect_uri="http://localhost:51234/callback")
    assert exchange(server, client, code, verifier, redirect_uri="http://localhost:51234/callback").status_code == 200
    _, challenge = pkce_pair()
    for bad in ("http://127.0.0.1:51234/callback", "http://localhost:51234/other"):
        response = start(server, auth_params(client, challenge, redirect_uri=bad))
        assert response.status_code == 400 and "Location" not in response.headers


def signed_in(server) -> Browser:
    """A browser with a login session (its person approved one client once)."""
    browser = Browser(server)
    get_code(server, register(server), browser=browser)
    return browser


def shown_on_a_page(response, error: str) -> None:
    """An error shown to the person (RFC 9700 §4.11.2), not sent to the client."""
    assert response.status_code == 400, (response.status_code, response.headers.get("Location"))
    assert "Location" not in response.headers
    assert "text/html" in response.headers["Content-Type"] and f"<code>{error}</code>" in response.text


def test_pkce_is_required_and_plain_refused(server):
    """OAuth 2.1 §4.1.1: every client, confidential ones too, sends an S256 challenge.
    Refused on a page before anyone logged in, and at the client's redirect URI with
    state and iss for a person who has."""
    public = register(server)
    confidential = register(server, token_endpoint_auth_method="client_secret_basic")
    browser = signed_in(server)
    _, challenge = pkce_pair()
    for client in (public, confidential):
        for extra in (
            {"code_challenge": None, "code_challenge_method": None},
            {"code_challenge_method": "plain"},
            {"code_challenge_method": None},
        ):
            params = auth_params(client, challenge, **extra)
            shown_on_a_page(start(server, params), "invalid_request")
            result = redirect_params(browser.get(server.url("/authorize?" + urlencode(params))))
            assert result["error"] == "invalid_request", (client["token_endpoint_auth_method"], extra)
            assert result["state"] == params["state"]
            assert result["iss"] == server.issuer


def test_wrong_verifier_is_invalid_grant(server):
    client = register(server)
    code, _, _ = get_code(server, client)
    other_verifier, _ = pkce_pair()
    response = exchange(server, client, code, other_verifier)
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_unknown_scope_and_resource_are_shown_before_login_and_redirected_after(server):
    """RFC 9700 §4.11.2: before the person is known, an error is shown on a page (a
    registered client must not turn this server into its redirector); once they
    have logged in, it goes to the client with iss (RFC 9207)."""
    client = register(server)
    browser = signed_in(server)
    _, challenge = pkce_pair()
    for extra, error in (
        ({"scope": "admin"}, "invalid_scope"),
        ({"resource": "https://other.example/mcp"}, "invalid_target"),
        ({"response_type": "token"}, "unsupported_response_type"),
    ):
        params = auth_params(client, challenge, **extra)
        shown_on_a_page(start(server, params), error)
        redirected = redirect_params(browser.get(server.url("/authorize?" + urlencode(params))))
        assert redirected["error"] == error and redirected["iss"] == server.issuer, extra
        assert redirected["state"] == params["state"]


def test_a_client_gets_no_scope_beyond_what_it_registered(make_server):
    """A client registered for `mcp` on a server offering `mcp tools` cannot ask for
    `tools` (RFC 7591 §2 `scope`), and an empty request means its own scopes only."""
    server = make_server(in_thread=True, OAUTH_SCOPES="mcp tools")
    client = register(server, redirect_uris=[CHATGPT_CALLBACK], scope="mcp")
    browser = Browser(server)
    code, verifier, _ = get_code(server, client, browser=browser, scope=None)
    assert exchange(server, client, code, verifier).json()["scope"] == "mcp"
    _, challenge = pkce_pair()
    for scope in ("tools", "mcp tools"):
        url = server.url("/authorize?" + urlencode(auth_params(client, challenge, scope=scope)))
        refused = redirect_params(browser.get(url))
        assert refused["error"] == "invalid_scope", scope


def test_deny_returns_access_denied_with_state_and_iss(server):
    client = register(server)
    _, challenge = pkce_pair()
    params = auth_params(client, challenge)
    result = redirect_params(Browser(server).authorize(params, decision="deny"))
    assert result["error"] == "access_denied"
    assert result["state"] == params["state"] and result["iss"] == server.issuer


def test_consent_page_shows_client_host_scope_and_resource(server):
    client = register(server, client_name="ChatGPT", redirect_uris=[CHATGPT_CALLBACK])
    browser = Browser(server)
    _, challenge = pkce_pair()
    response = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    login = browser.get(browser.absolute(response.headers["Location"]))
    assert 'name="username"' in login.text and 'name="password"' in login.text
    assert login.headers["Content-Security-Policy"].find("frame-ancestors 'none'") >= 0
    after = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(login.text),
            "username": "alice",
            "password": PASSWORD,
            "request_id": request_id_of(response.headers["Location"]),
        },
    )
    cookie = after.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = browser.get(browser.absolute(after.headers["Location"]))
    assert page.status_code == 200
    read = re.sub(r"<[^>]+>", "", page.text)  # as a person reads it (hosts hold <wbr>s)
    for text in ("ChatGPT", client["client_id"], "chatgpt.com", "mcp", server.issuer + "/mcp"):
        assert text in read, text
    for text in (
        'name="decision" value="approve"',
        'name="decision" value="deny"',
        'name="csrf_token"',
    ):
        assert text in page.text, text


def test_forms_refuse_a_missing_or_wrong_csrf_token(server):
    """The login and consent forms each refuse a missing or forged CSRF token, even
    with everything else right, and accept the same post with the page's token."""
    client = register(server)
    browser = Browser(server)
    _, challenge = pkce_pair()
    response = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    request_id = request_id_of(response.headers["Location"])
    login_page = browser.get(browser.absolute(response.headers["Location"]))
    credentials = {"username": "alice", "password": PASSWORD, "request_id": request_id}
    for token in ({"csrf_token": "forged"}, {}):
        refused = browser.post(server.url("/login"), data={**credentials, **token})
        assert refused.status_code == 400
        assert "Location" not in refused.headers
    ok = browser.post(server.url("/login"), data={**credentials, "csrf_token": csrf_of(login_page.text)})
    assert ok.status_code == 302
    consent_page = browser.get(browser.absolute(ok.headers["Location"]))
    decision = {"request_id": request_id, "decision": "approve"}
    for token in ({"csrf_token": "forged"}, {}):
        forged = browser.post(server.url("/consent"), data={**decision, **token})
        assert forged.status_code == 400
        assert "Location" not in forged.headers
    decision["shown"] = shown_of(consent_page.text)
    approved = browser.post(server.url("/consent"), data={**decision, "csrf_token": csrf_of(consent_page.text)})
    assert "code" in redirect_params(approved)


def test_wrong_password_is_refused(server):
    client = register(server)
    browser = Browser(server, password="wrong password")
    _, challenge = pkce_pair()
    response = browser.authorize(auth_params(client, challenge))
    assert response.status_code == 401
    assert "Wrong user name or password" in response.text


def test_pending_request_is_bound_to_the_browser(server):
    client = register(server)
    victim = Browser(server)
    _, challenge = pkce_pair()
    response = victim.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    request_id = request_id_of(response.headers["Location"])
    attacker = Browser(server)
    page = attacker.get(server.url(f"/consent?request_id={request_id}"))
    assert page.status_code == 400


def test_a_returning_person_gets_the_code_at_once(server):
    """Logged in and approved before: /authorize answers with the code itself, no
    login page, no consent page, no password; the code redeems."""
    client = register(server)
    browser = Browser(server)
    get_code(server, client, browser=browser)
    verifier, challenge = pkce_pair()
    first = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    assert first.status_code == 302
    assert first.headers["Location"].startswith(client["redirect_uris"][0] + "?")
    params = redirect_params(first)
    assert params["iss"] == server.issuer
    tokens = exchange(server, client, params["code"], verifier)
    assert tokens.status_code == 200 and tokens.json()["access_token"]
    # The login session is not issued again: it lasts from the login, not from the
    # last request.
    assert "Set-Cookie" not in first.headers


def test_password_guessing_is_throttled(server):
    browser = Browser(server)
    login_page = browser.get(server.url("/login"))
    token = csrf_of(login_page.text)
    statuses = [
        browser.post(
            server.url("/login"), data={"csrf_token": token, "username": "alice", "password": f"guess{i}"}
        ).status_code
        for i in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    # Even the right password waits now.
    right = browser.post(
        server.url("/login"),
        data={"csrf_token": token, "username": "alice", "password": PASSWORD},
    )
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0


def test_prompt_consent_shows_the_page_again(server):
    client = register(server)
    browser = Browser(server)
    get_code(server, client, browser=browser)
    _, challenge = pkce_pair()
    first = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge, prompt="consent"))))
    page = browser.get(browser.absolute(first.headers["Location"]))
    assert page.status_code == 200 and 'value="approve"' in page.text


def test_cors_on_api_endpoints_but_not_on_pages(server):
    preflight = requests.options(
        server.url("/token"), headers={"Origin": "http://localhost:6274", "Access-Control-Request-Method": "POST"}
    )
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    metadata = requests.get(server.base + "/.well-known/oauth-authorization-server")
    assert metadata.headers["Access-Control-Allow-Origin"] == "*"
    login = requests.get(server.url("/login"))
    assert "Access-Control-Allow-Origin" not in login.headers


def test_request_values_with_forbidden_characters_are_shown_not_crashed(server):
    client = register(server)
    _, challenge = pkce_pair()
    for extra in (
        {"redirect_uri": 'https://evil.example/"x'},
        {"redirect_uri": "https://evil.example/\u00e9"},
        {"response_type": 'to"ken'},
    ):
        response = start(server, auth_params(client, challenge, **extra))
        assert response.status_code == 400, extra
        assert "Location" not in response.headers
        assert "invalid_request" in response.text
