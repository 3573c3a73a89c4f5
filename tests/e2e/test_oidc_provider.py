"""Google, Azure (Entra ID) and any-OpenID-Provider login against real identity-provider
software: panva's node-oidc-provider, a certified OpenID Provider (pinned in
tests/oidc_provider with Node 22 from npm), standing in for Google at the root, for an
Entra ID tenant under `/<tenant>/v2.0` and for a self-hosted provider (Authelia,
Keycloak…) under a realm's path. It requires PKCE, signs its ID tokens with its own keys and shows its
own login and consent pages, which the test fills in as the person would. Skipped where
npm is not installed. (tests/http/test_providers.py and tests/e2e/test_providers.py
cover the refusals against a small IdP of ours that can misbehave on purpose.)"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests
from support.harness import free_port
from support.jwt import jwt_parts
from support.npm import npm_ci
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
    verify,
)

IDP_DIR = Path(__file__).parents[1] / "oidc_provider"
NODE = IDP_DIR / "node_modules" / ".bin" / "node"
CLIENT_ID = "mcp-oauth-upstream"
SECRET = "upstream-secret-of-at-least-32-characters"
pytestmark = pytest.mark.skipif(not shutil.which("npm"), reason="npm is not installed")


@pytest.fixture(scope="module")
def node() -> Path:
    npm_ci(IDP_DIR, NODE)
    return NODE


@pytest.fixture
def identity_provider(node) -> Iterator[Callable[[str, str, dict], str]]:
    """start(issuer path, our callback URL, the accounts' claims, "userinfo" to keep them
    out of the ID token) → the IdP's issuer."""
    procs: list[subprocess.Popen] = []

    def start(issuer_path: str, callback: str, claims: dict, where: str = "id_token") -> str:
        port = free_port()
        arguments = [str(port), issuer_path, CLIENT_ID, SECRET, callback, json.dumps(claims), where]
        proc = subprocess.Popen(
            [str(node), str(IDP_DIR / "idp.mjs"), *arguments],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        said = []  # its warnings (development keys, in-memory adapter), then `listening URL`
        for line in proc.stdout:
            if line.startswith("listening "):
                # Keep reading what it says, so that a full pipe never blocks it.
                threading.Thread(target=proc.stdout.read, daemon=True).start()
                return line.split()[1]
            said.append(line)
        raise AssertionError("the identity provider did not start:\n" + "".join(said))

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


@dataclass
class Walk:
    response: requests.Response  # the one leaving our server for the client, or where it stopped
    browser: Browser
    client: dict
    verifier: str

    def tokens(self, server) -> dict:
        return exchange(server, self.client, redirect_params(self.response)["code"], self.verifier).json()


def sign_in(server, idp: str, login: str) -> Walk:
    """The person's walk: our /authorize, the IdP's login and consent pages (filled in
    as a person would), back to our consent page, approved."""
    client = register(server)
    browser = Browser(server)
    verifier, challenge = pkce_pair()
    response = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    for _ in range(20):
        here = response.url
        if response.status_code in (302, 303):
            location = urljoin(here, response.headers["Location"])
            if not location.startswith((server.issuer, idp)):
                return Walk(response, browser, client, verifier)  # to the client
            response = browser.get(location)
        elif response.status_code == 200 and here.startswith(idp):
            action = urljoin(here, re.search(r'<form[^>]*action="([^"]+)"', response.text)[1])  # type: ignore[index]
            form = {"prompt": "login", "login": login, "password": "any"} if 'name="login"' in response.text else {}
            response = browser.post(action, data=form or {"prompt": "consent"})
        elif response.status_code == 200 and "/consent" in here:
            form = {"csrf_token": csrf_of(response.text), "request_id": request_id_of(here),
                    "shown": shown_of(response.text), "decision": "approve"}
            response = browser.post(server.url("/consent"), data=form)
        else:
            return Walk(response, browser, client, verifier)
    raise AssertionError(f"the walk did not end: {browser.visited}")


@pytest.fixture
def google(make_server, identity_provider) -> Callable[[dict], tuple[Any, str]]:
    """google(the accounts' claims) → (our server as Google's client, the IdP's issuer);
    the allow-list names alice@example.com."""

    def start(claims: dict) -> tuple[Any, str]:
        port = free_port()
        idp = identity_provider("", f"http://127.0.0.1:{port}/oauth/google/callback", claims)
        server = make_server(
            users={},
            PORT=str(port),
            OAUTH_PROVIDER="google",
            GOOGLE_CLIENT_ID=CLIENT_ID,
            GOOGLE_CLIENT_SECRET=SECRET,
            GOOGLE_DISCOVERY_URL=f"{idp}/.well-known/openid-configuration",
            OAUTH_ALLOWED_EMAILS="alice@example.com",
        )
        return server, idp

    return start


def test_google_login_through_a_certified_openid_provider(google):
    """Google's shape: discovery at the root, `email` with `email_verified` in the ID
    token. The person signs in upstream, approves at our consent page, and our token
    names Google's `sub`; the allow-list admits the verified address."""
    server, idp = google({"email": "alice@example.com", "email_verified": True, "name": "Alice"})
    walk = sign_in(server, idp, login="google-sub-123")
    assert redirect_params(walk.response)["iss"] == server.issuer
    assert any(url.startswith(f"{idp}/interaction/") for url in walk.browser.visited)  # its own pages
    assert any(url.startswith(server.url("/consent")) for url in walk.browser.visited)  # then ours
    tokens = walk.tokens(server)
    access = jwt_parts(tokens["access_token"])[1]
    assert access["sub"] == "google-sub-123" and access["iss"] == server.issuer
    assert verify(server, tokens["access_token"]).headers["X-Auth-Subject"] == "google-sub-123"
    assert "login.succeeded provider=google subject=google-sub-123" in server.output


def test_an_address_off_the_allow_list_is_refused_after_the_upstream_login(google):
    """A verified address that the allow-list does not name gets our 403 page, and
    never reaches the consent page or the client."""
    server, idp = google({"email": "mallory@example.org", "email_verified": True})
    walk = sign_in(server, idp, login="google-sub-666")
    response = walk.response
    assert response.status_code == 403, (response.status_code, response.url, response.text[:300])
    assert "This account may not use this server" in response.text and "Location" not in response.headers
    assert not any(url.startswith(server.url("/consent")) for url in walk.browser.visited)


def test_azure_login_through_a_certified_openid_provider_as_a_tenant(make_server, identity_provider):
    """Entra ID's shape: the authority's tenant path (`/<tenant>/v2.0`), `tid` and
    `oid` in the ID token, and the subject of our tokens `tid:oid`."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    tenant = "b9f1c2de-0000-4000-8000-0000000000aa"
    claims = {"tid": tenant, "oid": "oid-of-alice", "preferred_username": "alice@contoso.example"}
    idp = identity_provider(f"/{tenant}/v2.0", f"{issuer}/oauth/azure/callback", claims)
    server = make_server(
        users={},
        PORT=str(port),
        OAUTH_PROVIDER="azure",
        AZURE_CLIENT_ID=CLIENT_ID,
        AZURE_CLIENT_SECRET=SECRET,
        AZURE_TENANT_ID=tenant,
        AZURE_AUTHORITY=idp.removesuffix(f"/{tenant}/v2.0"),
        OAUTH_ALLOWED_DOMAINS="contoso.example",
    )
    tokens = sign_in(server, idp, login="entra-sub-differs-per-app").tokens(server)
    assert jwt_parts(tokens["access_token"])[1]["sub"] == f"{tenant}:oid-of-alice"


@pytest.fixture
def any_provider(make_server, identity_provider) -> Callable[..., tuple[Any, str]]:
    """any_provider(the accounts' claims, where the claims are) → (our server as the
    OpenID Provider's client with OAUTH_ALLOWED_GROUPS=mcp-users, the IdP's issuer),
    the provider under a realm's path as Keycloak has it."""

    def start(claims: dict, where: str = "id_token") -> tuple[Any, str]:
        port = free_port()
        callback = f"http://127.0.0.1:{port}/oauth/oidc/callback"
        idp = identity_provider("/realms/home", callback, claims, where)
        server = make_server(
            users={},
            PORT=str(port),
            OAUTH_PROVIDER="oidc",
            OIDC_ISSUER=idp,
            OIDC_CLIENT_ID=CLIENT_ID,
            OIDC_CLIENT_SECRET=SECRET,
            OIDC_SCOPES="openid email profile groups",
            OAUTH_ALLOWED_GROUPS="mcp-users",
            in_thread=True,
        )
        return server, idp

    return start


def test_any_openid_provider_through_discovery_with_groups_pkce_and_nonce(any_provider):
    """Discovery under the issuer's path, PKCE (the provider requires it) and a nonce
    (its ID token carries it back, and it is checked): a member of an allowed group
    signs in upstream, approves at our consent page, and our token names the issuer's
    `sub`."""
    server, idp = any_provider({"groups": ["staff", "mcp-users"], "email": "a@home.example", "email_verified": True})
    walk = sign_in(server, idp, login="alice-sub")
    sent = next(url for url in walk.browser.visited if url.startswith(f"{idp}/auth"))
    asked = {k: v[0] for k, v in parse_qs(urlsplit(sent).query).items()}
    assert asked["code_challenge_method"] == "S256" and asked["nonce"] and asked["state"]
    assert asked["scope"] == "openid email profile groups"
    assert asked["redirect_uri"] == server.url("/oauth/oidc/callback")
    assert any(url.startswith(server.url("/consent")) for url in walk.browser.visited)
    tokens = walk.tokens(server)
    assert jwt_parts(tokens["access_token"])[1]["sub"] == "alice-sub"
    assert verify(server, tokens["access_token"]).headers["X-Auth-Subject"] == "alice-sub"


def test_any_openid_provider_refuses_who_is_in_no_allowed_group(any_provider):
    server, idp = any_provider({"groups": ["staff"], "email": "m@home.example", "email_verified": True})
    walk = sign_in(server, idp, login="mallory-sub")
    assert walk.response.status_code == 403 and "may not use this server" in walk.response.text
    assert not any(url.startswith(server.url("/consent")) for url in walk.browser.visited)


def test_claims_only_at_the_userinfo_endpoint_count(any_provider):
    """A provider that keeps the scopes' claims out of the ID token (conforming to OIDC
    Core §5.4, as Authelia and Zitadel do by default): the groups are read from its
    userinfo endpoint, for the same `sub`."""
    server, idp = any_provider({"groups": ["mcp-users"]}, where="userinfo")
    walk = sign_in(server, idp, login="bob-sub")
    assert jwt_parts(walk.tokens(server)["access_token"])[1]["sub"] == "bob-sub"
