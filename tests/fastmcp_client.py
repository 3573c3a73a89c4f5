"""FastMCP's client (the `fastmcp` package, 4.x, on the MCP SDK 2.x) as an OAuth client
of our gateway, with its own `OAuth` helper: discovery, registration, the browser, its
local callback server, tokens kept on disk between runs.

Runs in .venv-mcp2 (see requirements-mcp2.txt):

    python fastmcp_client.py MCP_URL STORAGE_DIR USER PASSWORD [CLIENT_METADATA_URL]

It prints one JSON line. With CLIENT_METADATA_URL, the client is identified by that Client
ID Metadata Document instead of registering.

FastMCP opens the authorization URL with Python's `webbrowser`, which runs the command
in `BROWSER`: this same file with `--browser URL` plays the person there (our login
form, Allow on the consent page, then the redirect to FastMCP's callback server), and
leaves a note in STORAGE_DIR that the browser was needed.
"""

from __future__ import annotations

import asyncio
import html
import json
import os
import re
import shlex
import sys
import time
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx2


def hidden_fields(page: str) -> dict[str, str]:
    """What the form carries besides what the person types (CSRF token, request id, …)."""
    hidden = re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page)
    return {name: html.unescape(value) for name, value in hidden}


def person(authorization_url: str, user: str, password: str) -> None:
    """Log in, approve, and follow the redirect to the client's callback."""
    with httpx2.Client(follow_redirects=False, timeout=15) as browser:
        location = urljoin(authorization_url, browser.get(authorization_url).headers["location"])
        for fields in ({"username": user, "password": password}, {"decision": "approve"}):
            page = browser.get(location).text
            form = {**hidden_fields(page), **fields}
            answer = browser.post(urljoin(location, urlsplit(location).path), data=form)
            location = urljoin(location, answer.headers["location"])
        # FastMCP starts its callback server once the browser was opened; a person takes
        # longer than this script to get there.
        for _ in range(100):
            try:
                browser.get(location)  # FastMCP's callback server takes the code
                return
            except httpx2.ConnectError:
                time.sleep(0.1)
        raise SystemExit("the callback server never answered")


async def main(url: str, storage: Path, client_metadata_url: str | None) -> None:
    from fastmcp import Client
    from fastmcp.client.auth import OAuth
    from key_value.aio.stores.filetree import (
        FileTreeStore,
        FileTreeV1CollectionSanitizationStrategy,
        FileTreeV1KeySanitizationStrategy,
    )

    tokens = storage / "tokens"
    tokens.mkdir(exist_ok=True)
    store = FileTreeStore(  # keys are server URLs: sanitized into file names
        data_directory=tokens,
        key_sanitization_strategy=FileTreeV1KeySanitizationStrategy(tokens),
        collection_sanitization_strategy=FileTreeV1CollectionSanitizationStrategy(tokens),
    )
    auth = OAuth(client_name="FastMCP test client", token_storage=store, client_metadata_url=client_metadata_url)
    async with Client(url, auth=auth) as client:
        added = await client.call_tool("add", {"a": 40, "b": 2})
        who = await client.call_tool("whoami", {})
    print(
        json.dumps(
            {
                "add": added.content[0].text,  # type: ignore[union-attr]
                "who": json.loads(who.content[0].text),  # type: ignore[union-attr]
                "browser_opened": (storage / "browser-opened").exists(),
            }
        )
    )


if __name__ == "__main__":
    if sys.argv[1] == "--browser":
        note = Path(os.environ["FASTMCP_TEST_STORAGE"]) / "browser-opened"
        note.write_text(sys.argv[2])
        person(sys.argv[2], os.environ["FASTMCP_TEST_USER"], os.environ["FASTMCP_TEST_PASSWORD"])
    else:
        url, storage_dir, user, password = sys.argv[1:5]
        client_metadata_url = sys.argv[5] if len(sys.argv) > 5 else None
        storage = Path(storage_dir)
        (storage / "browser-opened").unlink(missing_ok=True)
        os.environ.update(
            # A trailing & makes `webbrowser` start it in the background, as a browser is.
            BROWSER=f"{shlex.quote(sys.executable)} {shlex.quote(__file__)} --browser %s &",
            FASTMCP_TEST_STORAGE=str(storage),
            FASTMCP_TEST_USER=user,
            FASTMCP_TEST_PASSWORD=password,
        )
        asyncio.run(asyncio.wait_for(main(url, storage, client_metadata_url), 60))
