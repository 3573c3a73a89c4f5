"""The person's side: the front page, /account (connected apps and Disconnect),
sign-out, change password, and the error page of an unknown client. Over real HTTP
(the person's browser as a cookie jar, tests/support/oauth.py) and in a real Chromium
(headless, through Selenium, as tests/e2e/test_browser.py), with screenshots at desktop and
phone width in the test's tmp folder."""

from __future__ import annotations

import logging
import re
from urllib.parse import urlencode, urlsplit

import requests
from support.account import NEW_PASSWORD, account_page, connect, post_form
from support.harness import CHATGPT_CALLBACK, PASSWORD
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    pkce_pair,
    refresh,
    register,
    request_id_of,
    verify,
)


def log_in_at_account(browser: Browser, password: str | None = None) -> requests.Response:
    """/account when not logged in: the login page, then back to /account."""
    server = browser.server
    start = browser.get(server.url("/account"))
    assert start.status_code == 302, start.text
    location = browser.absolute(start.headers["Location"])
    assert urlsplit(location).path == "/login"
    page = browser.get(location)
    assert page.status_code == 200
    logged_in = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(location),
            "username": browser.username,
            "password": password or browser.password,
        },
    )
    return logged_in


def silent_or_consent(browser: Browser, client: dict) -> str:
    """What the next /authorize of a logged-in person gives: "code" at once (the
    approval is remembered) or the "consent" page."""
    _, challenge = pkce_pair()
    response = browser.get(browser.server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    assert response.status_code == 302, response.text
    location = browser.absolute(response.headers["Location"])
    if "code=" in location:
        return "code"
    assert urlsplit(location).path == "/consent", location
    page = browser.get(location)
    assert page.status_code == 200 and 'value="approve"' in page.text
    return "consent"


def listed_client_ids(page: str) -> set[str]:
    return set(re.findall(r'name="client_id" value="([^"]+)"', page))


# -- the front page ---------------------------------------------------------------------


def test_the_front_page_is_a_page_that_says_what_this_is(server):
    response = requests.get(server.url("/"), timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
    assert "<script" not in response.text
    assert server.issuer in response.text and "MCP" in response.text
    assert 'href="/account"' in response.text


# -- /account -------------------------------------------------------------------------------


def test_account_asks_for_a_login_then_comes_back(server):
    browser = Browser(server)
    logged_in = log_in_at_account(browser)
    assert logged_in.status_code == 302
    back = urlsplit(browser.absolute(logged_in.headers["Location"]))
    assert back.path == "/account"
    page = browser.get(browser.absolute(logged_in.headers["Location"]))
    assert page.status_code == 200 and "Your account" in page.text and "No app has access" in page.text
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]


def test_account_lists_what_this_person_approved_and_never_another_persons(make_server):
    """Each person sees their own apps with name, id, redirect host, who vouches for the
    name, scopes, resource and times; a grant whose approval was forgotten (the client
    changed its redirect URIs) is still listed, so that it can be disconnected."""
    server = make_server(in_thread=True, users={"alice": PASSWORD, "bob": PASSWORD})
    notes = register(server, client_name="Notes app", redirect_uris=[CHATGPT_CALLBACK])
    mail = register(server, client_name="Mail app")
    alice, bob = Browser(server, "alice"), Browser(server, "bob")
    connect(server, notes, alice)
    connect(server, mail, bob)

    page = account_page(alice).text
    assert listed_client_ids(page) == {notes["client_id"]}
    assert "Notes app" in page and "Mail app" not in page
    assert re.sub(r"<[^>]+>", "", page).count("chatgpt.com") and "Name given by the app itself" in page
    assert '<span class="scope">mcp</span>' in page and server.url("/mcp") in page
    assert re.search(r"<dt>Last used</dt><dd>\d{4}-\d\d-\d\d \d\d:\d\d UTC</dd>", page)
    assert listed_client_ids(account_page(bob).text) == {mail["client_id"]}

    # The client changes its redirect URIs (RFC 7592): every approval is forgotten, the
    # grant stays, and so does the line with its Disconnect.
    changed = requests.put(
        notes["registration_client_uri"],
        headers={"Authorization": f"Bearer {notes['registration_access_token']}"},
        json={
            "client_id": notes["client_id"],
            "client_name": "Notes app",
            "redirect_uris": [CHATGPT_CALLBACK, "https://notes.example/cb"],
            "token_endpoint_auth_method": "none",
        },
        timeout=10,
    )
    assert changed.ok, changed.text
    assert "approvals" not in server.app.extensions["oauth"].store.get("clients", notes["client_id"])
    assert listed_client_ids(account_page(alice).text) == {notes["client_id"]}


def test_disconnect_takes_back_one_persons_access_and_leaves_the_others(make_server, caplog):
    """Two people of one client: Disconnect ends alice's refresh and access tokens at
    once and her next /authorize asks again; bob's tokens and approval are untouched."""
    caplog.set_level(logging.INFO, logger="mcp_oauth.audit")
    server = make_server(in_thread=True, users={"alice": PASSWORD, "bob": PASSWORD})
    client = register(server)
    alice, bob = Browser(server, "alice"), Browser(server, "bob")
    alices, bobs = connect(server, client, alice), connect(server, client, bob)
    assert verify(server, alices["access_token"]).status_code == 200
    assert silent_or_consent(alice, client) == "code"

    done = post_form(alice, "/account/disconnect", client_id=client["client_id"])
    assert done.status_code == 303 and urlsplit(done.headers["Location"]).path == "/account"
    page = account_page(alice).text
    assert "Disconnected Test client" in page and listed_client_ids(page) == set()
    assert f"account.disconnected client_id={client['client_id']} subject=alice grants_revoked=1" in caplog.text

    assert verify(server, alices["access_token"]).status_code == 401
    assert refresh(server, client, alices["refresh_token"]).status_code == 400
    assert silent_or_consent(alice, client) == "consent"

    assert verify(server, bobs["access_token"]).status_code == 200
    assert refresh(server, client, bobs["refresh_token"]).status_code == 200
    assert silent_or_consent(bob, client) == "code"
    assert listed_client_ids(account_page(bob).text) == {client["client_id"]}


def test_disconnecting_an_app_the_person_has_nothing_with_changes_nothing(make_server):
    server = make_server(in_thread=True, users={"alice": PASSWORD, "bob": PASSWORD})
    client = register(server)
    bob = Browser(server, "bob")
    bobs = connect(server, client, bob)
    alice = Browser(server, "alice")
    log_in_at_account(alice)
    store = server.app.extensions["oauth"].store
    before = {name: store.scan(name) for name in ("clients", "grants")}

    for client_id in (client["client_id"], "no-such-client", "https://app.example/client.json", ""):
        done = post_form(alice, "/account/disconnect", client_id=client_id)
        assert done.status_code == 303
        assert "That app had no access to disconnect" in account_page(alice).text

    assert {name: store.scan(name) for name in ("clients", "grants")} == before
    assert refresh(server, client, bobs["refresh_token"]).status_code == 200
    assert silent_or_consent(bob, client) == "code"


def test_the_account_forms_refuse_a_request_without_the_csrf_token(server):
    """Another site cannot make a logged-in browser disconnect an app, sign out or
    change the password: without this session's token each is a 400 page and nothing
    changes."""
    client = register(server)
    browser = Browser(server)
    tokens = connect(server, client, browser)
    for path, fields in (
        ("/account/disconnect", {"client_id": client["client_id"]}),
        ("/logout", {}),
        (
            "/account/password",
            {"current_password": PASSWORD, "new_password": NEW_PASSWORD, "new_password_again": NEW_PASSWORD},
        ),
    ):
        for token in (None, "forged"):
            data = dict(fields) if token is None else {**fields, "csrf_token": token}
            refused = browser.post(server.url(path), data=data)
            assert refused.status_code == 400, (path, refused.status_code)
            assert refused.headers["Content-Type"].startswith("text/html")
    assert refresh(server, client, tokens["refresh_token"]).status_code == 200
    assert listed_client_ids(account_page(browser).text) == {client["client_id"]}  # still logged in
    assert silent_or_consent(browser, client) == "code"
    assert server.app.extensions["oauth"].users.authenticate("alice", PASSWORD)


def test_sign_out_ends_the_login_session(server, caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth.audit")
    client = register(server)
    browser = Browser(server)
    connect(server, client, browser)
    assert silent_or_consent(browser, client) == "code"

    signed_out = post_form(browser, "/logout")
    assert signed_out.status_code == 200 and "signed out" in signed_out.text
    assert "account.signed_out subject=alice" in caplog.text
    after = browser.get(server.url("/account"))
    assert after.status_code == 302 and urlsplit(after.headers["Location"]).path == "/login"
    _, challenge = pkce_pair()
    again = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    assert again.status_code == 302 and urlsplit(again.headers["Location"]).path == "/login"


def test_change_password_checks_the_current_one_and_ends_other_sessions(server, caplog):
    """The current password is checked like a login (a wrong one counts in the login
    throttle); a good change keeps this session and ends the user's others."""
    caplog.set_level(logging.INFO, logger="mcp_oauth.audit")
    here, elsewhere = Browser(server), Browser(server)
    log_in_at_account(here)
    log_in_at_account(elsewhere)
    account_page(elsewhere)

    def change(current: str, new: str = NEW_PASSWORD, again: str = NEW_PASSWORD) -> requests.Response:
        return post_form(
            here, "/account/password", current_password=current, new_password=new, new_password_again=again
        )

    assert change(PASSWORD, "short", "short").status_code == 400
    assert change(PASSWORD, NEW_PASSWORD, NEW_PASSWORD + "x").status_code == 400
    wrong = change("not the password")
    assert wrong.status_code == 401 and "current password is wrong" in wrong.text
    users = server.app.extensions["oauth"].users
    assert users.authenticate("alice", PASSWORD)

    done = change(PASSWORD)
    assert done.status_code == 303
    assert "Password changed" in account_page(here).text
    assert "account.password_changed subject=alice" in caplog.text and PASSWORD not in caplog.text
    assert users.authenticate("alice", NEW_PASSWORD) and not users.authenticate("alice", PASSWORD)
    assert urlsplit(elsewhere.get(server.url("/account")).headers["Location"]).path == "/login"


def test_a_wrong_current_password_counts_as_a_failed_login(make_server):
    """The login throttle (10 failures per name and network in 15 minutes) counts the
    account page's wrong current passwords: a stolen session cannot guess the password
    at CPU speed, and the login page is throttled by them too."""
    server = make_server(in_thread=True)
    browser = Browser(server)
    log_in_at_account(browser)
    csrf = csrf_of(account_page(browser).text)
    statuses = [
        browser.post(
            server.url("/account/password"),
            data={
                "csrf_token": csrf,
                "current_password": f"guess {n}",
                "new_password": NEW_PASSWORD,
                "new_password_again": NEW_PASSWORD,
            },
        ).status_code
        for n in range(11)
    ]
    assert statuses == [401] * 10 + [429]
    assert log_in_at_account(Browser(server)).status_code == 429
