"""Helpers shared by tests/{e2e,http,unit}/test_cimd.py."""

from __future__ import annotations

from urllib.parse import urlencode

import requests

from app.display import host_html

from .oauth import (
    Browser,
    csrf_of,
    request_id_of,
    shown_of,
)


def walk(server, params: dict, decision: str = "approve") -> tuple[requests.Response, str]:
    """/authorize → login → consent page → decision; (the final response, the
    consent page's HTML)."""
    browser = Browser(server)
    response = browser.get(server.url("/authorize?" + urlencode(params)))
    assert response.status_code == 302, response.text[:500]
    login_url = browser.absolute(response.headers["Location"])
    page = browser.get(login_url)
    response = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(login_url),
            "username": "alice",
            "password": "correct horse battery",
        },
    )
    consent_url = browser.absolute(response.headers["Location"])
    consent = browser.get(consent_url)
    assert consent.status_code == 200, consent.text[:500]
    final = browser.post(
        server.url("/consent"),
        data={"csrf_token": csrf_of(consent.text), "request_id": request_id_of(consent_url),
              "shown": shown_of(consent.text), "decision": decision},
    )
    return final, consent.text


def named_by(host: str) -> str:
    """How the consent page says that a document on `host` vouches for the name."""
    return f'named by its document on <strong class="document-host">{host_html(host)}</strong>'


def document_params(client_id: str, redirect_uri: str, challenge: str) -> dict:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s1",
    }
