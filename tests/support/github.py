"""Helpers shared by tests/{e2e,http}/test_github.py."""

from __future__ import annotations

import requests

from .oauth import Browser, auth_params, pkce_pair, register

ALICE = {
    "id": 4242,
    "login": "alice-gh",
    "name": "Alice",
    "emails": [
        {"email": "alice@personal.example", "primary": False, "verified": True, "visibility": None},
        {"email": "alice@corp.example", "primary": True, "verified": True, "visibility": "private"},
    ],
    "orgs": {"acme": "active", "invited-org": "pending"},
}


def as_user(github: str, user: dict, app: str = "oauth", mode: str = "ok") -> None:
    """Whom the stand-in logs in next, as which kind of app, and how it answers."""
    requests.post(f"{github}/_control", json={"user": user, "app": app, "mode": mode}, timeout=5).raise_for_status()


def login(server, github) -> tuple[requests.Response, dict, str, Browser]:
    """The person's walk from /authorize through the stand-in and our consent page:
    (where it ended, the client, its PKCE verifier, the browser)."""
    client = register(server)
    verifier, challenge = pkce_pair()
    browser = Browser(server)
    browser.also_follow = [github]
    return browser.authorize(auth_params(client, challenge)), client, verifier, browser
