"""Helpers shared by tests/{e2e,http}/test_account.py."""

from __future__ import annotations

import requests

from .oauth import (
    Browser,
    csrf_of,
    exchange,
    get_code,
)

NEW_PASSWORD = "a much better passphrase"


# -- helpers ----------------------------------------------------------------------------


def connect(server, client: dict, browser: Browser) -> dict:
    """A real authorization (login, consent, code, /token): the token response."""
    code, verifier, _ = get_code(server, client, browser)
    response = exchange(server, client, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


def account_page(browser: Browser) -> requests.Response:
    page = browser.get(browser.server.url("/account"))
    assert page.status_code == 200, (page.status_code, page.headers.get("Location"))
    return page


def post_form(browser: Browser, path: str, with_csrf: bool = True, **fields: str) -> requests.Response:
    """A form of /account as the page sends it (its CSRF token read from the page)."""
    if with_csrf:
        fields["csrf_token"] = csrf_of(account_page(browser).text)
    return browser.post(browser.server.url(path), data=fields)
