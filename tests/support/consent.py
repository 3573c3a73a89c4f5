"""Helpers shared by tests/{e2e,http}/test_consent.py."""

from __future__ import annotations

from urllib.parse import urlencode

import requests

from .harness import PASSWORD
from .oauth import (
    Browser,
    auth_params,
    csrf_of,
    get_code,
    pkce_pair,
    redirect_params,
    request_id_of,
    shown_of,
)


def authorize(browser: Browser, server, client: dict, **extra) -> str:
    """What a person with a login session gets from /authorize: `code` (at once, no
    page), `consent` (the page is shown) or `login`."""
    _, challenge = pkce_pair()
    params = auth_params(client, challenge, **extra)
    response = browser.get(server.url("/authorize?" + urlencode(params, doseq=True)))
    assert response.status_code == 302, response.text[:300]
    location = response.headers["Location"]
    if "/consent" in location:
        page = browser.get(browser.absolute(location))
        if page.status_code == 302:  # remembered at /consent: the code
            assert "code=" in page.headers["Location"]
            return "code"
        assert 'value="approve"' in page.text
        return "consent"
    if "/login" in location:
        return "login"
    assert location.startswith(params["redirect_uri"]) and "code=" in location, location
    return "code"


def approve(browser: Browser, server, client: dict, **extra) -> None:
    """Log in if needed, and approve on the consent page."""
    get_code(server, client, browser=browser, **extra)


def flood_sign_ins(server, client: dict, addresses, count: int) -> list[int]:
    """`count` sign-ins started (never finished) from each of `addresses` in turn."""
    _, challenge = pkce_pair()
    url = server.url("/authorize?" + urlencode(auth_params(client, challenge)))
    with requests.Session() as session:
        return [
            session.get(url, headers={"X-Forwarded-For": address}, allow_redirects=False, timeout=10).status_code
            for address in addresses
            for _ in range(count)
        ]


def person_signs_in(server, client: dict, address: str) -> tuple[Browser, str, dict]:
    """A person starts a sign-in from `address`: (browser, login URL, params)."""
    browser = Browser(server)
    browser.session.headers["X-Forwarded-For"] = address
    _, challenge = pkce_pair()
    params = auth_params(client, challenge)
    started = browser.get(server.url("/authorize?" + urlencode(params)))
    assert started.status_code == 302 and "/login" in started.headers["Location"]
    return browser, browser.absolute(started.headers["Location"]), params


def finish_sign_in(server, browser: Browser, login_url: str) -> dict:
    page = browser.get(login_url)
    assert page.status_code == 200 and 'name="request_id"' in page.text
    response = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(login_url),
            "username": "alice",
            "password": PASSWORD,
        },
    )
    consent_url = browser.absolute(response.headers["Location"])
    consent = browser.get(consent_url)
    if consent.status_code == 302:  # approved before: remembered
        return redirect_params(consent)
    assert consent.status_code == 200, consent.text[:300]
    decided = browser.post(
        server.url("/consent"),
        data={"csrf_token": csrf_of(consent.text), "request_id": request_id_of(consent_url),
              "shown": shown_of(consent.text), "decision": "approve"},
    )
    return redirect_params(decided)
