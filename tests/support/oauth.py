"""An OAuth client and a person's browser, over real HTTP: registration, PKCE,
login and consent, the code exchange, refresh and /verify."""

from __future__ import annotations

import base64
import hashlib
import html
import re
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import requests

from .harness import CLAUDE_CALLBACK, PASSWORD, Server


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def register(server: Server, **metadata) -> dict:
    body = {"client_name": "Test client", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"}
    body.update(metadata)
    response = requests.post(server.url("/register"), json=body, timeout=10)
    assert response.status_code == 201, response.text
    return response.json()


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return html.unescape(match.group(1))


def shown_of(page: str) -> str:
    """The consent form's digest of what the page showed (a decision counts only for
    what the person saw)."""
    match = re.search(r'name="shown" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def request_id_of(url_or_page: str) -> str:
    match = re.search(r"request_id=([\w-]+)|name=\"request_id\" value=\"([\w-]+)\"", url_or_page)
    assert match, url_or_page
    return match.group(1) or match.group(2)


class Browser:
    """A person's browser: a cookie jar that follows our pages but not the final
    redirect to the client."""

    def __init__(self, server: Server, username: str = "alice", password: str = PASSWORD):
        self.server = server
        self.session = requests.Session()
        self.username = username
        self.password = password
        #: other servers whose redirects the browser follows (a test identity provider)
        self.also_follow: list[str] = []
        #: every URL visited, in order
        self.visited: list[str] = []

    def get(self, url: str, **kw) -> requests.Response:
        self.visited.append(url)
        return self.session.get(url, allow_redirects=False, timeout=10, **kw)

    def post(self, url: str, **kw) -> requests.Response:
        return self.session.post(url, allow_redirects=False, timeout=10, **kw)

    def absolute(self, location: str) -> str:
        return location if location.startswith("http") else self.server.base + location

    def authorize(self, params: dict, decision: str = "approve") -> requests.Response:
        """Walk /authorize → login → consent; return the response that leaves our
        server (the redirect to the client), or the first non-redirect page."""
        response = self.get(self.server.url("/authorize?" + urlencode(params, doseq=True)))
        for _ in range(10):
            if response.status_code != 302:
                return response
            location = self.absolute(response.headers["Location"])
            if any(location.startswith(other) for other in self.also_follow):
                response = self.get(location)
                continue
            if not location.startswith(self.server.issuer):
                return response
            page = self.get(location)
            if "/login" in location and page.status_code == 200:
                response = self.post(
                    self.server.url("/login"),
                    data={
                        "csrf_token": csrf_of(page.text),
                        "request_id": request_id_of(location),
                        "username": self.username,
                        "password": self.password,
                    },
                )
            elif "/consent" in location and page.status_code == 200:
                response = self.post(
                    self.server.url("/consent"),
                    data={
                        "csrf_token": csrf_of(page.text),
                        "request_id": request_id_of(location),
                        "shown": shown_of(page.text),
                        "decision": decision,
                    },
                )
            else:
                response = page
        return response


def auth_params(client: dict, challenge: str, **extra) -> dict:
    params = {
        "response_type": "code",
        "client_id": client["client_id"],
        "redirect_uri": client["redirect_uris"][0],
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v is not None}


def redirect_params(response: requests.Response) -> dict[str, str]:
    assert response.status_code == 302, (response.status_code, response.text[:500])
    query = parse_qs(urlsplit(response.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def get_code(server: Server, client: dict, browser: Browser | None = None, **extra) -> tuple[str, str, dict]:
    """(code, verifier, redirect params) after a full login and approval."""
    verifier, challenge = pkce_pair()
    params = auth_params(client, challenge, **extra)
    response = (browser or Browser(server)).authorize(params)
    result = redirect_params(response)
    assert "code" in result, result
    assert result["state"] == params["state"]
    return result["code"], verifier, result


def exchange(server: Server, client: dict, code: str, verifier: str, **extra) -> requests.Response:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": client["redirect_uris"][0],
        "client_id": client["client_id"],
    }
    data.update(extra)
    return requests.post(server.url("/token"), data={k: v for k, v in data.items() if v is not None}, timeout=10)


def refresh(server: Server, client: dict, refresh_token: str, **extra) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client["client_id"]}
    data.update(extra)
    return requests.post(server.url("/token"), data=data, timeout=10)


def tokens_for(server: Server, client: dict | None = None, **extra) -> tuple[dict, dict]:
    """Register (unless given), authorize and exchange: (client, token response)."""
    client = client or register(server)
    code, verifier, _ = get_code(server, client, **extra)
    response = exchange(server, client, code, verifier)
    assert response.status_code == 200, response.text
    return client, response.json()


def verify(server: Server, access_token: str | None, **params) -> requests.Response:
    headers = {"Authorization": f"Bearer {access_token}"} if access_token else {}
    return requests.get(server.url("/verify"), headers=headers, params=params, timeout=10)
