"""Helpers shared by tests/{e2e,http,unit}/test_providers.py."""

from __future__ import annotations

import requests

from .oauth import Browser, auth_params, pkce_pair, register

CLIENT_ID = "our-client-id"
SECRET = "idp-secret"


def as_user(idp: str, user: dict, mode: str = "ok", issuer_override: str | None = None) -> None:
    """Whom the IdP logs in next, and how it misbehaves."""
    body = {"user": user, "mode": mode, "issuer_override": issuer_override}
    requests.post(f"{idp}/_control", json=body, timeout=5).raise_for_status()


def token_requests(idp: str) -> int:
    return requests.get(f"{idp}/_stats", timeout=5).json()["token_requests"]


def login(server, idp, **extra) -> requests.Response:
    """The person's walk from /authorize through the IdP; returns where it ended."""
    client = register(server)
    _, challenge = pkce_pair()
    browser = Browser(server)
    browser.also_follow = [idp]
    return browser.authorize(auth_params(client, challenge, **extra)), client, browser
