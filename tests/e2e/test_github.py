"""GitHub login against a stand-in GitHub (tests/github_standin.py: the authorize and
token endpoints, `/user`, `/user/emails`, organization membership, the refresh grant
of a GitHub App's expiring tokens), over real HTTP, through the whole flow: the
upstream login, our consent page, our code and our tokens."""

from __future__ import annotations

import asyncio

from github_standin import CLIENT_ID, CLIENT_SECRET
from support.github import ALICE, as_user
from support.mcp import MemoryStorage, PersonAtTheBrowser, call_tools


def test_the_mcp_sdk_client_through_a_github_login(make_server, github, upstream):
    """The official MCP SDK client discovers, registers, sends the person through the
    GitHub login and our consent, and calls a tool through the gateway as `github:<id>`."""
    server = make_server(
        users={},
        OAUTH_PROVIDER="github",
        GITHUB_CLIENT_ID=CLIENT_ID,
        GITHUB_CLIENT_SECRET=CLIENT_SECRET,
        GITHUB_URL=github,
        GITHUB_API_URL=github,
        OAUTH_UPSTREAM_URL=upstream,
        in_thread=True,
    )
    as_user(github, ALICE)
    person = PersonAtTheBrowser(server)
    person.browser.also_follow = [github]
    total, who = asyncio.run(call_tools(server, MemoryStorage(), person))
    assert total == 42 and who["subject"] == "github:4242" and who["authorization"] is None
