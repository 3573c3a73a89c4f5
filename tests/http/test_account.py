"""The person's side: the front page, /account (connected apps and Disconnect),
sign-out, change password, and the error page of an unknown client. Over real HTTP
(the person's browser as a cookie jar, tests/support/oauth.py) and in a real Chromium
(headless, through Selenium, as tests/test_browser.py), with screenshots at desktop and
phone width in the test's tmp folder."""

from __future__ import annotations

import html
import logging
import re
import shutil
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.harness import CHATGPT_CALLBACK, PASSWORD
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    exchange,
    get_code,
    pkce_pair,
    refresh,
    register,
    request_id_of,
    verify,
)

NEW_PASSWORD = "a much better passphrase"


# -- helpers ----------------------------------------------------------------------------


def connect(server, client: dict, browser: Browser) -> dict:
    """A real authorization (login, consent, code, /token): the token response."""
    code, verifier, _ = get_code(server, client, browser)
    response = exchange(server, client, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


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


def account_page(browser: Browser) -> requests.Response:
    page = browser.get(browser.server.url("/account"))
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    return page


def post_form(browser: Browser, path: str, with_csrf: bool = True, **fields: str) -> requests.Response:
    """A form of /account as the page sends it (its CSRF token read from the page)."""
    if with_csrf:
        fields["csrf_token"] = csrf_of(account_page(browser).text)
    return browser.post(browser.server.url(path), data=fields)


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


def test_disconnect_at_one_instance_ends_the_tokens_at_the_other_at_once(make_server, postgres_url):
    """Instances sharing PostgreSQL: a Disconnect at one, and the other refuses the
    person's access and refresh tokens at its next request (no cache between)."""
    first = make_server(in_thread=True, OAUTH_STORE=postgres_url)
    second = make_server(in_thread=True, users={}, OAUTH_STORE=postgres_url, OAUTH_ISSUER=first.issuer)
    assert second.port != first.port  # one issuer, two listeners: requests go to `second.base`
    client = register(first)
    browser = Browser(first)
    tokens = connect(first, client, browser)

    def at_second(access_token: str, refresh_token: str) -> tuple[int, int]:
        verified = requests.get(
            second.base + "/verify", headers={"Authorization": f"Bearer {access_token}"}, timeout=10
        )
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}
        return verified.status_code, requests.post(second.base + "/token", data=form, timeout=10).status_code

    before = requests.get(
        second.base + "/verify", headers={"Authorization": f"Bearer {tokens['access_token']}"}, timeout=10
    )
    assert before.status_code == 200
    assert post_form(browser, "/account/disconnect", client_id=client["client_id"]).status_code == 303
    assert at_second(tokens["access_token"], tokens["refresh_token"]) == (401, 400)


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


# -- the error page of an unknown client --------------------------------------------------


def _log_line(server, wanted) -> str:
    """The first line of the server's log that `wanted` accepts; the request log writes
    its line once the answer has gone out, so a moment after the client has it."""
    deadline = time.monotonic() + 5
    while True:
        found = [line for line in server.output.splitlines() if wanted(line)]
        if found:
            return found[0]
        assert time.monotonic() < deadline, server.output[-2000:]
        time.sleep(0.05)


def test_an_unknown_or_deleted_client_is_told_what_to_do_and_logged(make_server):
    server = make_server(OAUTH_LOG_FORMAT="text")
    client = register(server)
    deleted = requests.delete(
        client["registration_client_uri"],
        headers={"Authorization": f"Bearer {client['registration_access_token']}"},
        timeout=10,
    )
    assert deleted.status_code == 204
    for client_id in (client["client_id"], "never-registered-id"):
        _, challenge = pkce_pair()
        params = auth_params({**client, "client_id": client_id}, challenge)
        page = requests.get(server.url("/authorize?" + urlencode(params)), allow_redirects=False, timeout=10)
        assert page.status_code == 400 and page.headers["Content-Type"].startswith("text/html")
        text = html.unescape(page.text)
        assert "remove this server's connector" in text and "add it again" in text and "ChatGPT, Claude" in text
    for client_id in (client["client_id"], "never-registered-id"):
        line = _log_line(server, lambda text, c=client_id: "GET /authorize 400" in text and c in text)
        assert f"client_id={client_id}" in line and "reason=unknown_client" in line and "error=invalid_client" in line


# -- in a real browser --------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_chromium = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="chromium and chromedriver are not installed")
DESKTOP, PHONE = (1280, 900), (390, 844)


@pytest.fixture
def chromium(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'profile'}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()


def screenshots(driver, tmp_path, name: str) -> None:
    """The page at desktop and phone width, whole, into the test's tmp folder (kept by
    pytest for the last runs: look at them when a test of the pages fails)."""
    for label, (width, height) in (("desktop", DESKTOP), ("phone", PHONE)):
        driver.set_window_size(width, height)
        full, chrome = driver.execute_script(
            "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
        )
        driver.set_window_size(width, max(height, full + chrome))
        driver.save_screenshot(str(tmp_path / f"{name}-{label}.png"))
        assert driver.execute_script("return document.documentElement.scrollWidth") <= width, (name, label)
    driver.set_window_size(*DESKTOP)


def wait_for_path(driver, path: str, seconds: float = 15) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds).until(lambda d: urlsplit(d.current_url).path == path)


def wait_for_text(driver, text: str, seconds: float = 15) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds).until(lambda d: text in d.page_source)


def log_in(driver, password: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "main button[type=submit]").click()


@needs_chromium
def test_the_pages_in_a_real_browser(server, chromium, tmp_path):
    """/ and /account in Chromium: an app approved through a real authorization is
    listed and disconnected with a click; Sign out ends the login; a password changed
    on the page replaces the old one."""
    from selenium.webdriver.common.by import By

    driver = chromium
    driver.set_window_size(*DESKTOP)
    driver.get(server.url("/"))
    assert driver.find_element(By.TAG_NAME, "h1").text == "MCP authorization server"
    screenshots(driver, tmp_path, "front")

    # A real authorization: login and consent in the browser, the code at the client.
    client = register(server, client_name="Claude Code", redirect_uris=["http://localhost:33418/callback"])
    verifier, challenge = pkce_pair()
    params = auth_params(client, challenge, redirect_uri="http://localhost:51515/callback")
    driver.get(server.url("/authorize?" + urlencode(params)))
    log_in(driver, PASSWORD)
    wait_for_path(driver, "/consent")
    driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    wait_for_path(driver, "/callback")
    code = parse_qs(urlsplit(driver.current_url).query)["code"][0]
    tokens = exchange(server, client, code, verifier, redirect_uri="http://localhost:51515/callback").json()

    driver.get(server.url("/account"))
    apps = driver.find_elements(By.CSS_SELECTOR, "li.app")
    assert [app.find_element(By.TAG_NAME, "h3").text for app in apps] == ["Claude Code"]
    assert "localhost" in apps[0].text and client["client_id"] in apps[0].text
    screenshots(driver, tmp_path, "account")
    apps[0].find_element(By.CSS_SELECTOR, "button.danger").click()
    wait_for_text(driver, "Disconnected Claude Code")
    assert driver.find_elements(By.CSS_SELECTOR, "li.app") == []
    assert refresh(server, client, tokens["refresh_token"]).status_code == 400

    # Sign out (the header's form), then /account asks for a login.
    driver.find_element(By.CSS_SELECTOR, "header.session button").click()
    wait_for_path(driver, "/logout")
    driver.get(server.url("/account"))
    assert urlsplit(driver.current_url).path == "/login"

    # Log in again (back at /account), change the password there.
    log_in(driver, PASSWORD)
    wait_for_path(driver, "/account")
    driver.find_element(By.NAME, "current_password").send_keys(PASSWORD)
    driver.find_element(By.NAME, "new_password").send_keys(NEW_PASSWORD)
    driver.find_element(By.NAME, "new_password_again").send_keys(NEW_PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "form.password button").click()
    wait_for_text(driver, "Password changed")
    driver.find_element(By.CSS_SELECTOR, "header.session button").click()
    wait_for_path(driver, "/logout")

    driver.get(server.url("/account"))
    log_in(driver, PASSWORD)
    wait_for_text(driver, "Wrong user name or password")
    driver.get(server.url("/account"))
    log_in(driver, NEW_PASSWORD)
    wait_for_path(driver, "/account")
    assert driver.find_element(By.TAG_NAME, "h1").text == "Your account"

    expected = ("localhost:51515", "/login - Failed to load resource: the server responded with a status of 401")
    problems = [e["message"] for e in driver.get_log("browser") if not any(x in e["message"] for x in expected)]
    assert problems == []  # no CSP violation, no missing asset
