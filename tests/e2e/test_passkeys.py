"""Passkeys (WebAuthn) for the Custom provider (docs/security.md, "Passkeys").

Over real HTTP against the real server, with a software authenticator whose
credentials and signatures are real (tests/support/webauthn.py) and which the server
verifies with py_webauthn; and once end to end in headless Chromium with its own
virtual authenticator (DevTools WebAuthn), as a person's browser does it."""

from __future__ import annotations

import contextlib
import json
import logging
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import requests
from support.browser import needs_chromium, start_chromium
from support.harness import PASSWORD, failed_start, free_port
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    exchange,
    pkce_pair,
    redirect_params,
    register,
    request_id_of,
    shown_of,
)
from support.webauthn import SoftAuthenticator, b64

from app import records


@pytest.fixture
def make_local(make_server):
    """A server whose issuer is http://localhost:PORT: WebAuthn needs a secure context
    (localhost is one) and the RP ID is the issuer's host."""

    def factory(in_thread: bool = True, **env: str):
        port = free_port()
        return make_server(
            users={"alice": PASSWORD, "bob": PASSWORD},
            in_thread=in_thread,
            PORT=str(port),
            OAUTH_ISSUER=f"http://localhost:{port}",
            **env,
        )

    return factory


class Person:
    """A browser session (a cookie jar) of a person with a software authenticator."""

    def __init__(self, server, authenticator: SoftAuthenticator | None = None, username: str = "alice"):
        self.server = server
        self.browser = Browser(server, username=username)
        self.authenticator = authenticator or SoftAuthenticator(origin=server.issuer)
        self.username = username

    def at(self, location: str) -> str:
        """An absolute URL at the issuer's host (localhost: the cookies' host)."""
        return location if location.startswith("http") else self.server.issuer + location

    def csrf(self) -> str:
        return csrf_of(self.browser.get(self.server.url("/login")).text)

    def password_login(self, request_id: str = "", password: str = PASSWORD) -> requests.Response:
        return self.browser.post(
            self.server.url("/login"),
            data={"csrf_token": self.csrf(), "request_id": request_id, "username": self.username, "password": password},
        )

    def ceremony(
        self, path: str, body: dict | None = None, csrf: str | None = None, at: str | None = None
    ) -> requests.Response:
        """A JSON ceremony request (at this server, or at the instance whose base URL is `at`)."""
        headers = {"X-CSRF-Token": self.csrf() if csrf is None else csrf}
        return self.browser.post((at or self.server.issuer) + path, json=body or {}, headers=headers)

    def add_passkey(self, **kw) -> requests.Response:
        options = self.ceremony("/passkeys/register/options")
        assert options.status_code == 200, options.text
        return self.ceremony("/passkeys/register", {"credential": self.authenticator.create(options.json(), **kw)})

    def login_options(self) -> dict:
        options = self.ceremony("/passkeys/login/options")
        assert options.status_code == 200, options.text
        return options.json()

    def passkey_login(self, request_id: str = "", **kw) -> requests.Response:
        answer = self.authenticator.get(self.login_options(), **kw)
        return self.ceremony("/passkeys/login", {"credential": answer, "request_id": request_id})

    def signed_in(self) -> bool:
        """Whether this session is logged in: /authorize of a fresh request goes
        straight to consent rather than to the login page."""
        client = register(self.server)
        _, challenge = pkce_pair()
        response = self.browser.get(self.server.url("/authorize?" + urlencode(auth_params(client, challenge))))
        return "/consent" in response.headers.get("Location", "")


def with_passkey(server, username: str = "alice", **kw) -> Person:
    """A user logged in with their password, having added a passkey."""
    person = Person(server, SoftAuthenticator(origin=server.issuer, **kw), username=username)
    assert person.password_login().status_code == 200
    added = person.add_passkey()
    assert added.status_code == 200, added.text
    return person


def stored_passkeys(server, username: str = "alice") -> dict:
    return server.app.extensions["oauth"].store.get("users", username).get("passkeys") or {}


def audited(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mcp_oauth.audit"]


# -- the ceremonies ---------------------------------------------------------------------


def test_a_passkey_added_signs_in_alone_and_completes_an_authorization(make_local, caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth.audit")
    server = make_local()
    person = with_passkey(server)
    [(credential_id, passkey)] = stored_passkeys(server).items()
    assert credential_id == b64(person.authenticator.credentials[0].id)
    assert passkey["sign_count"] == 0 and passkey["transports"] == ["internal"] and passkey["last_used_at"] is None
    assert records.problem("users", "alice", server.app.extensions["oauth"].store.get("users", "alice")) is None

    # Another browser, no password: /authorize, then the passkey alone, then consent.
    client = register(server)
    verifier, challenge = pkce_pair()
    params = auth_params(client, challenge)
    fresh = Person(server, person.authenticator)
    to_login = fresh.browser.get(server.url("/authorize?" + urlencode(params)))
    assert "/login" in to_login.headers["Location"]
    login_page = fresh.browser.get(fresh.at(to_login.headers["Location"]))
    assert 'data-passkey="login"' in login_page.text and "Sign in with a passkey" in login_page.text
    request_id = request_id_of(to_login.headers["Location"])
    signed_in = fresh.passkey_login(request_id)
    assert signed_in.status_code == 200, signed_in.text
    to_consent = signed_in.json()["redirect"]
    assert urlsplit(to_consent).path == "/consent"
    consent = fresh.browser.get(fresh.at(to_consent))
    approved = fresh.browser.post(
        server.url("/consent"),
        data={
            "csrf_token": csrf_of(consent.text),
            "request_id": request_id,
            "shown": shown_of(consent.text),
            "decision": "approve",
        },
    )
    result = redirect_params(approved)
    assert result["state"] == params["state"]
    assert exchange(server, client, result["code"], verifier).status_code == 200

    used = stored_passkeys(server)[credential_id]
    assert used["sign_count"] == 1 and used["last_used_at"] is not None
    events = audited(caplog)
    assert any(e.startswith(f"passkey.added subject=alice credential_id={credential_id}") for e in events)
    assert any(e.startswith(f"passkey.login subject=alice credential_id={credential_id}") for e in events)
    # optional (the default): the password alone still works
    assert Person(server).password_login().status_code == 200


def test_required_mode_refuses_the_password_alone_of_a_user_with_a_passkey(make_local):
    server = make_local(OAUTH_PASSKEYS="required")
    alice = with_passkey(server)  # her password worked until she had a passkey
    refused = Person(server).password_login()
    assert refused.status_code == 401 and "signs in with its passkey" in refused.text
    # bob has no passkey: his password is enough
    assert Person(server, username="bob").password_login().status_code == 200
    # and alice's passkey signs her in
    fresh = Person(server, alice.authenticator)
    assert fresh.passkey_login().status_code == 200 and fresh.signed_in()


def test_reset_passkeys_restores_password_login(make_local):
    # A process: the CLI changes the store under a running server, as an operator's does.
    server = make_local(in_thread=False, OAUTH_PASSKEYS="required")
    person = Person(server)
    assert person.password_login().status_code == 200
    assert person.add_passkey().status_code == 200
    assert Person(server).password_login().status_code == 401

    dry = server.cli("reset-passkeys", "alice", "--dry-run")
    assert dry.returncode == 0 and "Would remove 1 passkey(s) of alice" in dry.stdout
    assert Person(server).password_login().status_code == 401
    done = server.cli("reset-passkeys", "alice")
    assert done.returncode == 0 and "Removed 1 passkey(s) of alice" in done.stdout, done.stderr
    assert Person(server).password_login().status_code == 200
    assert person.passkey_login().status_code == 401  # the passkey is gone

    missing = server.cli("reset-passkeys", "nobody")
    assert missing.returncode == 1 and missing.stderr.strip() == "Error: no user 'nobody'"
    events = [json.loads(line) for line in (server.data_dir / "audit.log").read_text().splitlines()]
    assert [(e["event"], e.get("name")) for e in events] == [("cli.reset-passkeys", "alice")]


def test_a_challenge_is_single_use_and_bound_to_its_browser_and_purpose(make_local):
    server = make_local()
    # A synced passkey: its count stays 0, so only the challenge stops a replay.
    alice = with_passkey(server, counter_step=0)
    fresh = Person(server, alice.authenticator)
    answer = fresh.authenticator.get(fresh.login_options())
    assert fresh.ceremony("/passkeys/login", {"credential": answer}).status_code == 200
    replayed = Person(server, alice.authenticator)
    for person in (fresh, replayed):
        again = person.ceremony("/passkeys/login", {"credential": answer})
        assert again.status_code == 401 and "expired or was already used" in again.json()["error_description"]

    # A challenge issued to another browser session is refused, and used up.
    stranger = Person(server, alice.authenticator)
    foreign = stranger.authenticator.get(alice.login_options())
    assert stranger.ceremony("/passkeys/login", {"credential": foreign}).status_code == 401
    assert alice.ceremony("/passkeys/login", {"credential": foreign}).status_code == 401
    # A registration's challenge does not sign anyone in.
    registration = alice.ceremony("/passkeys/register/options").json()
    misused = alice.authenticator.get({"challenge": registration["challenge"], "rpId": registration["rp"]["id"]})
    assert alice.ceremony("/passkeys/login", {"credential": misused}).status_code == 401
    # A login's challenge does not register a passkey.
    login = alice.login_options()
    made = alice.authenticator.create({**registration, "challenge": login["challenge"]})
    assert alice.ceremony("/passkeys/register", {"credential": made}).status_code == 400
    # A registration answer cannot be sent twice either.
    options = alice.ceremony("/passkeys/register/options").json()
    made = alice.authenticator.create(options)
    assert alice.ceremony("/passkeys/register", {"credential": made}).status_code == 200
    assert alice.ceremony("/passkeys/register", {"credential": made}).status_code == 400
    # Through all this, the passkey itself still works with a fresh challenge.
    assert Person(server, alice.authenticator).passkey_login(credential=alice.authenticator.credentials[0]).ok


def test_a_sign_count_that_does_not_increase_is_refused(make_local):
    server = make_local()
    alice = with_passkey(server)
    credential = alice.authenticator.credentials[0]
    assert Person(server, alice.authenticator).passkey_login().status_code == 200
    assert Person(server, alice.authenticator).passkey_login().status_code == 200
    assert stored_passkeys(server)[b64(credential.id)]["sign_count"] == 2
    # A clone of the authenticator, taken when its count was 1: it signs with count 2 again.
    credential.sign_count = 1
    cloned = Person(server, alice.authenticator)
    refused = cloned.passkey_login()
    assert refused.status_code == 401 and not cloned.signed_in()
    assert stored_passkeys(server)[b64(credential.id)]["sign_count"] == 2
    # The original, whose count moves on, still signs in.
    assert Person(server, alice.authenticator).passkey_login().status_code == 200


def test_user_verification_is_required(make_local):
    server = make_local()
    alice = Person(server)
    assert alice.password_login().status_code == 200
    # A registration without user verification is refused, and nothing is stored.
    assert alice.add_passkey(user_verified=False).status_code == 400
    assert stored_passkeys(server) == {}
    assert alice.add_passkey().status_code == 200
    # Nor does an assertion without it sign anyone in.
    unverified = Person(server, alice.authenticator)
    assert unverified.passkey_login(user_verified=False).status_code == 401 and not unverified.signed_in()
    verified = Person(server, alice.authenticator)
    assert verified.passkey_login().status_code == 200 and verified.signed_in()


def test_a_passkey_for_another_site_or_of_an_unknown_credential_is_refused(make_local):
    server = make_local()
    alice = with_passkey(server)
    phished = Person(
        server, SoftAuthenticator(origin="http://localhost.evil.example", credentials=alice.authenticator.credentials)
    )
    assert phished.passkey_login().status_code == 401
    other_rp = Person(server, alice.authenticator)
    assert other_rp.passkey_login(rp_id="evil.example").status_code == 401
    stranger = Person(server)
    stranger.authenticator.create({"challenge": "AA", "rp": {"id": "localhost"}, "user": {"id": "AA"}})
    unknown = stranger.passkey_login()
    assert unknown.status_code == 401 and "not registered here" in unknown.json()["error_description"]


def test_the_login_throttle_counts_passkey_failures(make_local):
    server = make_local()
    alice = with_passkey(server)
    for _ in range(10):  # LoginThrottle's per-network-and-name limit
        failed = Person(server, alice.authenticator).passkey_login(user_verified=False)
        assert failed.status_code == 401
    throttled = Person(server, alice.authenticator).passkey_login()
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    # the same throttle as passwords: alice's password from this network waits too
    assert Person(server).password_login().status_code == 429
    # another user's sign-in from the same network is not held back
    assert Person(server, username="bob").password_login().status_code == 200


def test_ceremonies_and_removal_need_the_csrf_token_and_a_login(make_local, caplog):
    caplog.set_level(logging.INFO, logger="mcp_oauth.audit")
    server = make_local()
    alice = with_passkey(server)
    for path in ("/passkeys/register/options", "/passkeys/register", "/passkeys/login/options", "/passkeys/login"):
        assert alice.ceremony(path, csrf="").status_code == 400
        assert alice.ceremony(path, csrf="forged-token").status_code == 400
    # another origin's page cannot send the header without a preflight, which is refused
    preflight = requests.options(
        server.url("/passkeys/login"),
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers
    # not logged in: no registration
    assert Person(server).ceremony("/passkeys/register/options").status_code == 401

    credential_id = next(iter(stored_passkeys(server)))
    remove = server.url(f"/passkeys/{credential_id}/remove")
    assert alice.browser.post(remove, data={}).status_code == 400
    # bob cannot remove alice's passkey
    bob = Person(server, username="bob")
    assert bob.password_login().status_code == 200
    bob.browser.post(remove, data={"csrf_token": bob.csrf()})
    assert credential_id in stored_passkeys(server)
    removed = alice.browser.post(remove, data={"csrf_token": alice.csrf()})
    assert removed.status_code in (200, 303) and stored_passkeys(server) == {}
    assert any(e.startswith(f"passkey.removed subject=alice credential_id={credential_id}") for e in audited(caplog))


def test_only_pages_with_the_passkey_script_allow_scripts(make_local):
    server = make_local()
    login = requests.get(server.url("/login"), timeout=10)
    csp = login.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp and "default-src 'none'" in csp
    assert "frame-ancestors 'none'" in csp and login.headers["X-Frame-Options"] == "DENY"
    script = requests.get(server.url("/static/passkeys.js"), timeout=10)
    assert script.status_code == 200 and script.headers["Content-Type"].startswith("text/javascript")
    # every other page keeps no script at all
    page = requests.get(server.url("/authorize"), timeout=10)
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src" not in page.headers["Content-Security-Policy"] and "<script" not in page.text


def test_oauth_passkeys_must_be_optional_or_required(tmp_path):
    line = failed_start(tmp_path, tmp_path / "data", OAUTH_PASSKEYS="sometimes")
    assert "OAUTH_PASSKEYS" in line and "optional or required" in line


def test_a_ceremony_begun_at_one_instance_completes_at_another(make_server, postgres_url):
    """On PostgreSQL the challenges are in the shared state: options from one instance,
    the answer to another (behind one balancer, one issuer), once only."""
    port_a, port_b = free_port(), free_port()
    issuer = f"http://localhost:{port_a}"
    a = make_server(
        users={"alice": PASSWORD}, in_thread=True, PORT=str(port_a), OAUTH_ISSUER=issuer, OAUTH_STORE=postgres_url
    )
    make_server(users={}, in_thread=True, PORT=str(port_b), OAUTH_ISSUER=issuer, OAUTH_STORE=postgres_url)
    other = f"http://localhost:{port_b}"  # the same cookies (a cookie names no port)
    alice = Person(a)
    assert alice.password_login().status_code == 200
    options = alice.ceremony("/passkeys/register/options").json()
    made = alice.authenticator.create(options)
    assert alice.ceremony("/passkeys/register", {"credential": made}, at=other).status_code == 200
    fresh = Person(a, alice.authenticator)
    answer = fresh.authenticator.get(fresh.login_options())
    assert fresh.ceremony("/passkeys/login", {"credential": answer}, at=other).status_code == 200
    assert fresh.ceremony("/passkeys/login", {"credential": answer}).status_code == 401  # used up, at both


# -- in a real browser: Chromium's virtual authenticator ---------------------------------------



@pytest.fixture
def chromium(tmp_path):
    from selenium.webdriver.common.virtual_authenticator import Protocol, Transport, VirtualAuthenticatorOptions

    driver = start_chromium(tmp_path / "profile", "--window-size=1280,900")
    # A platform authenticator with a screen lock the person just passed (WebAuthn
    # through DevTools: no dialog, no person).
    driver.add_virtual_authenticator(
        VirtualAuthenticatorOptions(
            protocol=Protocol.CTAP2,
            transport=Transport.INTERNAL,
            has_resident_key=True,
            has_user_verification=True,
            is_user_verified=True,
        )
    )
    yield driver
    driver.quit()


@contextlib.contextmanager
def screenshots_on_failure(driver, folder):
    """On a failure, the page as it was, at desktop and at phone width (in the test's
    tmp folder, named in the failure)."""
    try:
        yield
    except BaseException:
        shots = []
        for name, width, height in (("desktop", 1280, 900), ("phone", 390, 844)):
            driver.set_window_size(width, height)
            path = folder / f"passkeys-{name}.png"
            driver.save_screenshot(str(path))
            shots.append(str(path))
        print("screenshots:", *shots)
        raise


def wait_until(driver, condition, seconds: float = 15):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, seconds).until(condition)


def account_page(server) -> str:
    """/account, where the person adds and removes passkeys. Until that page is merged
    (another branch), a test-only page with the same include stands in for it."""
    if "account.account" in server.app.view_functions:
        return server.url("/account")
    from flask import render_template_string

    from app.providers.base import current_person
    from app.services import services

    page = '{% extends "base.html" %}{% block content %}{% include "account_passkeys.html" %}{% endblock %}'
    server.app.add_url_rule(
        "/test-account",
        "test_account",
        lambda: render_template_string(page, person=current_person(services().provider)),
    )
    return server.url("/test-account")


@needs_chromium
def test_a_person_adds_a_passkey_and_signs_in_with_it_in_chromium(make_local, chromium, tmp_path):
    from selenium.webdriver.common.by import By

    server = make_local()
    account = account_page(server)  # before the first request: Flask adds no route after
    client = register(server, redirect_uris=["http://localhost:51515/callback"])
    driver = chromium
    with screenshots_on_failure(driver, tmp_path):
        driver.get(server.url("/login"))
        driver.find_element(By.NAME, "username").send_keys("alice")
        driver.find_element(By.NAME, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_until(driver, lambda d: "signed in" in d.page_source.lower())

        driver.get(account)
        assert "No passkey yet" in driver.page_source
        driver.find_element(By.CSS_SELECTOR, "button[data-passkey=register]").click()
        if "account.account" in server.app.view_functions:
            wait_until(driver, lambda d: "No passkey yet" not in d.page_source and "Added " in d.page_source)
        else:
            wait_until(driver, lambda d: "Passkey added" in d.page_source)
            driver.get(account)
        assert driver.find_elements(By.CSS_SELECTOR, "li.passkey")
        [(credential_id, passkey)] = stored_passkeys(server).items()
        assert passkey["transports"] == ["internal"]
        [virtual] = driver.get_credentials()
        assert virtual.is_resident_credential and virtual.rp_id == "localhost"

        # Signed out (the whole session goes), then in again with the passkey alone.
        if "account.logout" in server.app.view_functions:
            driver.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
            wait_until(driver, lambda d: "signed out" in d.page_source.lower())
        else:
            driver.delete_all_cookies()
        verifier, challenge = pkce_pair()
        params = auth_params(client, challenge, redirect_uri="http://localhost:51515/callback")
        driver.get(server.url("/authorize?" + urlencode(params)))
        assert urlsplit(driver.current_url).path == "/login"
        driver.find_element(By.CSS_SELECTOR, "button[data-passkey=login]").click()
        wait_until(driver, lambda d: urlsplit(d.current_url).path == "/consent")
        driver.find_element(By.CSS_SELECTOR, "button[value=approve]").click()
        wait_until(driver, lambda d: urlsplit(d.current_url).netloc == "localhost:51515")

        landed = urlsplit(driver.current_url)
        query = {k: v[0] for k, v in parse_qs(landed.query).items()}
        assert query["state"] == params["state"]
        response = exchange(server, client, query["code"], verifier, redirect_uri="http://localhost:51515/callback")
        assert response.status_code == 200, response.text
        assert stored_passkeys(server)[credential_id]["sign_count"] >= 1  # Chromium's counter moved on
        problems = [e["message"] for e in driver.get_log("browser") if "localhost:51515" not in e["message"]]
        assert problems == []  # no CSP violation, no script error, no missing asset
