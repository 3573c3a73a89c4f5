"""A real browser (headless Chromium through Selenium) goes through login and consent:
the CSP, the cookies, the forms and the final redirect as a person's browser sees them.
Skipped where Chromium and its driver are not installed (Debian: `apt-get install
chromium chromium-driver`)."""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from support.browser import needs_chromium, start_chromium
from support.harness import PASSWORD
from support.oauth import auth_params, exchange, pkce_pair, register

pytestmark = needs_chromium


@pytest.fixture
def browser(tmp_path):
    driver = start_chromium(tmp_path / "profile")
    yield driver
    driver.quit()


def wait_for(browser, condition, seconds: float = 15) -> None:
    """Wait until the address bar satisfies `condition` (a click navigates later)."""
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, seconds).until(lambda driver: condition(urlsplit(driver.current_url)))


def test_login_and_consent_in_a_real_browser(server, browser):
    from selenium.webdriver.common.by import By

    client = register(server, client_name="Claude Code", redirect_uris=["http://localhost:33418/callback"])
    verifier, challenge = pkce_pair()
    params = auth_params(client, challenge, redirect_uri="http://localhost:51515/callback")
    browser.get(server.url("/authorize?" + urlencode(params)))
    assert urlsplit(browser.current_url).path == "/login"
    browser.find_element(By.NAME, "username").send_keys("alice")
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda url: url.path == "/consent")
    assert "Claude Code" in browser.page_source and "localhost:51515" in browser.page_source
    browser.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
    wait_for(browser, lambda url: url.netloc != urlsplit(server.issuer).netloc)

    # Nothing listens on the loopback callback: the browser shows an error page, but
    # its address bar holds what the client would have received.
    landed = urlsplit(browser.current_url)
    assert landed.netloc == "localhost:51515" and landed.path == "/callback"
    query = {k: v[0] for k, v in parse_qs(landed.query).items()}
    assert query["state"] == params["state"] and query["iss"] == server.issuer
    response = exchange(server, client, query["code"], verifier, redirect_uri="http://localhost:51515/callback")
    assert response.status_code == 200, response.text

    problems = [entry["message"] for entry in browser.get_log("browser") if "localhost:51515" not in entry["message"]]
    assert problems == []  # no CSP violation, no missing asset
