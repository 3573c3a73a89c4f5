"""The consent and login pages as a person reads them (README, "The person's side"):
a name vouched for by a metadata document is shown with its document's host, a
self-registered one as the client's own claim; bidi control characters cannot reorder
the page; a host name breaks only after a dot on a phone; scopes come with
descriptions; the login page names the app asking and the server.

What is measured is measured in a real headless Chromium (Selenium, as in
test_browser.py): the text the page renders and where its line boxes fall. When a
browser test fails, screenshots of the pages it saw, at desktop and phone width, are in
its tmp_path (`MCP_OAUTH_SCREENSHOTS=1` keeps them when it passes too)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import requests
from support.consent_page import BIDI_NAME, BIDI_NAME_SHOWN
from support.harness import PASSWORD
from support.oauth import Browser, auth_params, csrf_of, pkce_pair, register, request_id_of

from app.display import BIDI_CONTROLS


def test_the_login_page_names_the_app_asking_and_the_server(server):
    """Before signing in, the person sees which app asks (marked as its own claim when
    self-registered, bidi controls escaped) and which server they sign in to."""
    client = register(server, client_name=BIDI_NAME, redirect_uris=["https://app.example/cb"])
    _, challenge = pkce_pair()
    browser = Browser(server)
    login = browser.get(browser.absolute(browser.get(server.url("/authorize?" + urlencode(
        auth_params(client, challenge)))).headers["Location"]))  # fmt: skip
    assert login.status_code == 200
    host = urlsplit(server.issuer).netloc
    assert f"<h1>Sign in to {_host(host)}</h1>" in login.text
    assert f'An app that calls itself <strong class="client claimed">“<bdi>{BIDI_NAME_SHOWN}</bdi>”' in login.text
    assert "this name was not checked" in login.text
    assert not set(login.text) & set(BIDI_CONTROLS)


def _host(host: str) -> str:
    from app.display import host_html

    return str(host_html(host))


def test_the_login_page_names_a_document_client_by_its_host(cimd_server, documents):
    base, _, _ = documents
    _, challenge = pkce_pair()
    client = {"client_id": f"{base}/good/app.json", "redirect_uris": ["https://app.example/cb"]}
    browser = Browser(cimd_server)
    first = browser.get(cimd_server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    login = browser.get(browser.absolute(first.headers["Location"]))
    assert '<strong class="client vouched"><bdi>Doc Client</bdi></strong> asks to connect' in login.text
    assert f'named by its document on <strong class="document-host">{_host("localhost")}</strong>' in login.text
    assert "not checked" not in login.text


# -- scope descriptions --------------------------------------------------------------------------


def test_scope_descriptions_come_from_the_configuration_and_mcp_has_one_by_default(make_server):
    """OAUTH_SCOPE_DESCRIPTIONS adds descriptions (and may reword `mcp`'s); a scope
    without one is shown by its name."""
    for descriptions, expected in (
        ("", {"mcp": "Use the tools of this MCP server", "files": None}),
        ("files=Read your files,mcp=Run the tools", {"mcp": "Run the tools", "files": "Read your files"}),
    ):
        server = make_server(in_thread=True, OAUTH_SCOPES="mcp files", OAUTH_SCOPE_DESCRIPTIONS=descriptions)
        client = register(server, redirect_uris=["https://app.example/cb"])
        page = _consent_page(server, client, scope="mcp files")
        for scope, description in expected.items():
            shown = f'<span class="scope">{scope}</span>'
            assert (
                shown + (f' <span class="scope-description">{description}</span>' if description else "</li>")
            ) in page


def _consent_page(server, client: dict, **extra) -> str:
    """The consent page's HTML for `client`, as alice (over HTTP)."""
    browser = Browser(server)
    _, challenge = pkce_pair()
    first = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge, **extra))))
    login_url = browser.absolute(first.headers["Location"])
    login = browser.get(login_url)
    consent = browser.post(
        server.url("/login"),
        data={"csrf_token": csrf_of(login.text), "request_id": request_id_of(login_url), "username": "alice",
              "password": PASSWORD},
    )  # fmt: skip
    page = browser.get(browser.absolute(consent.headers["Location"]))
    assert page.status_code == 200 and isinstance(page, requests.Response)
    return page.text
