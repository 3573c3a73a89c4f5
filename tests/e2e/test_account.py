"""The person's side: the front page, /account (connected apps and Disconnect),
sign-out, change password, and the error page of an unknown client. Over real HTTP
(the person's browser as a cookie jar, tests/support/oauth.py) and in a real Chromium
(headless, through Selenium, as tests/e2e/test_browser.py), with screenshots at desktop and
phone width in the test's tmp folder."""

from __future__ import annotations

import html
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.account import NEW_PASSWORD, connect, post_form
from support.browser import needs_chromium, start_chromium
from support.harness import PASSWORD
from support.oauth import (
    Browser,
    auth_params,
    exchange,
    pkce_pair,
    refresh,
    register,
)


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

DESKTOP, PHONE = (1280, 900), (390, 844)


@pytest.fixture
def chromium(tmp_path):
    driver = start_chromium(tmp_path / "profile", "--hide-scrollbars")
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
