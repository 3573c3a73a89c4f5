"""The official MCP Python SDK (1.x) as a client app: its OAuth provider, a token
storage, and a person who completes login and consent in the "browser"."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs, urlsplit

from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from .oauth import Browser


class MemoryStorage(TokenStorage):
    """What an MCP client app keeps between runs: its registration and tokens."""

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


class PersonAtTheBrowser:
    """The redirect and callback handlers: the person fills our forms over HTTP."""

    def __init__(self, server):
        self.server = server
        self.browser = Browser(server)
        self.visits = 0
        self.result: tuple[str, str | None] | None = None

    async def redirect(self, authorization_url: str) -> None:
        self.visits += 1
        self.result = await asyncio.to_thread(self._walk, authorization_url)

    def _walk(self, url: str) -> tuple[str, str | None]:
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        final = self.browser.authorize(query)
        params = {k: v[0] for k, v in parse_qs(urlsplit(final.headers["Location"]).query).items()}
        assert params["iss"] == self.server.issuer
        return params["code"], params.get("state")

    async def callback(self) -> tuple[str, str | None]:
        assert self.result is not None
        return self.result


async def call_tools(server, storage: MemoryStorage, person: PersonAtTheBrowser) -> tuple[int, dict]:
    """Connect, list and call tools; fails rather than waits past 60 s."""
    return await asyncio.wait_for(_call_tools(server, storage, person), 60)


async def _call_tools(server, storage: MemoryStorage, person: PersonAtTheBrowser) -> tuple[int, dict]:
    provider = OAuthClientProvider(
        server_url=server.url("/mcp"),
        client_metadata=OAuthClientMetadata(
            client_name="MCP SDK test client",
            redirect_uris=["http://localhost:53682/callback"],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
            token_endpoint_auth_method="none",
        ),
        storage=storage,
        redirect_handler=person.redirect,
        callback_handler=person.callback,
    )
    async with (
        create_mcp_http_client(auth=provider) as http_client,
        streamable_http_client(server.url("/mcp"), http_client=http_client) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name for t in (await session.list_tools()).tools}
        assert {"add", "whoami"} <= tools
        added = await session.call_tool("add", {"a": 20, "b": 22})
        who = await session.call_tool("whoami", {})
        return int(added.content[0].text), json.loads(who.content[0].text)
