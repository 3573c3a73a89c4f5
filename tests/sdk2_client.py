"""The official MCP Python SDK, 2.x line, as an OAuth client of our gateway.

Runs in its own virtualenv (.venv-mcp2, made by `make test` from requirements-mcp2.txt),
since the 1.x and 2.x lines cannot share one: `python sdk2_client.py MCP_URL USER PASSWORD`
prints one JSON line. The person's part (login, consent) is played over plain HTTP with
a cookie jar; the 2.x client checks the RFC 9207 `iss` of the authorization response.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import sys
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

URL, USER, PASSWORD = sys.argv[1:4]
REDIRECT = "http://localhost:53683/callback"


class MemoryStorage(TokenStorage):
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


async def submit(browser: httpx2.AsyncClient, url: str, **fields: str) -> str:
    """Fill and post the form of the page at `url` (with its CSRF token and request
    id); return where the answer redirects."""
    page = (await browser.get(url)).text
    hidden = re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page)
    form = {**{name: html.unescape(value) for name, value in hidden}, **fields}
    response = await browser.post(urljoin(url, urlsplit(url).path), data=form)
    return urljoin(url, response.headers["location"])


async def walk(authorization_url: str) -> dict[str, str]:
    """The person: our login form, then Allow on the consent page."""
    async with httpx2.AsyncClient(follow_redirects=False, timeout=15) as browser:
        response = await browser.get(authorization_url)
        login_url = urljoin(authorization_url, response.headers["location"])
        consent_url = await submit(browser, login_url, username=USER, password=PASSWORD)
        back = await submit(browser, consent_url, decision="approve")
        return {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}


async def main() -> None:
    answer: dict[str, str] = {}

    async def redirect_handler(url: str) -> None:
        answer.update(await walk(url))

    async def callback_handler() -> AuthorizationCodeResult:
        return AuthorizationCodeResult(code=answer["code"], state=answer.get("state"), iss=answer.get("iss"))

    storage = MemoryStorage()
    provider = OAuthClientProvider(
        server_url=URL,
        client_metadata=OAuthClientMetadata(
            client_name="MCP SDK 2.x test client",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=redirect_handler,
        callback_handler=callback_handler,
    )
    async with (
        httpx2.AsyncClient(auth=provider, follow_redirects=False, timeout=30) as http,
        Client(streamable_http_client(URL, http_client=http)) as client,
    ):
        added = await client.call_tool("add", {"a": 40, "b": 2})
        who = await client.call_tool("whoami", {})
    print(
        json.dumps(
            {
                "add": added.content[0].text,
                "who": json.loads(who.content[0].text),
                "registered": storage.client_info.client_id,
                "iss": answer.get("iss"),
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 60))
