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

import pytest

from app.config import Config, ConfigError


def test_a_bad_scope_description_is_a_one_line_error_naming_the_variable():
    for bad in ("mcp", "=Use the tools", "mcp=", "two words=x"):
        with pytest.raises(ConfigError) as raised:
            Config.from_env({"OAUTH_SCOPE_DESCRIPTIONS": bad}, env_file=None)
        assert "OAUTH_SCOPE_DESCRIPTIONS" in str(raised.value) and "\n" not in str(raised.value)
