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

import base64
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
from support.browser import needs_chromium, start_chromium
from support.consent_page import BIDI_NAME, BIDI_NAME_SHOWN
from support.harness import PASSWORD
from support.oauth import auth_params, pkce_pair, register

from app.display import BIDI_CONTROLS

PHONE = (390, 844)
DESKTOP = (1280, 900)
LONG_HOST = "connector-callbacks-for-people.a-rather-long-organisation-name.example"


# -- the browser ------------------------------------------------------------------------


@pytest.fixture
def chromium(tmp_path) -> Iterator:
    driver = start_chromium(tmp_path / "profile", "--hide-scrollbars", f"--window-size={DESKTOP[0]},{DESKTOP[1]}")
    yield driver
    driver.quit()


def width(driver, size: tuple[int, int]) -> None:
    """Lay the page out as a device of `size` CSS pixels would (a phone: mobile)."""
    if size == DESKTOP:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    else:
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": size[0], "height": size[1], "deviceScaleFactor": 1, "mobile": True},
        )


class Screenshots:
    """Each page seen, at desktop and phone width, as PNG bytes: written to the test's
    tmp_path when the test fails (or when MCP_OAUTH_SCREENSHOTS=1)."""

    def __init__(self, driver, folder: Path):
        self.driver = driver
        self.folder = folder
        self.taken: dict[str, bytes] = {}

    def take(self, page: str) -> None:
        page = f"{len(self.taken) // 2 + 1}-{page}"
        for name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            width(self.driver, size)
            metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            shot = self.driver.execute_cdp_cmd(
                "Page.captureScreenshot",
                {
                    "format": "png",
                    "captureBeyondViewport": True,
                    "clip": {"x": 0, "y": 0, "width": metrics["width"], "height": metrics["height"], "scale": 1},
                },
            )
            self.taken[f"{page}-{name}.png"] = base64.b64decode(shot["data"])
        width(self.driver, DESKTOP)

    def save(self) -> None:
        for name, png in self.taken.items():
            (self.folder / name).write_bytes(png)


@pytest.fixture
def shots(chromium, tmp_path) -> Iterator[Screenshots]:
    screenshots = Screenshots(chromium, tmp_path)
    failed = True
    with contextlib.ExitStack() as stack:
        stack.callback(lambda: (failed or os.environ.get("MCP_OAUTH_SCREENSHOTS") == "1") and screenshots.save())
        yield screenshots
        failed = False


def to_consent(driver, server, client: dict, shots: Screenshots, **extra) -> None:
    """/authorize → the login page (photographed) → sign in → the consent page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, challenge = pkce_pair()
    driver.get(server.url("/authorize?" + urlencode(auth_params(client, challenge, **extra))))
    assert urlsplit(driver.current_url).path == "/login"
    shots.take("login")
    driver.find_element(By.NAME, "username").send_keys("alice")
    driver.find_element(By.NAME, "password").send_keys(PASSWORD)
    driver.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: urlsplit(d.current_url).path == "/consent")
    shots.take("consent")


def reads_left_to_right(driver, selector: str, *words: str) -> bool:
    """Whether each word is laid out in reading order: its last character right of its
    first on the same line, and each word after the one before (an override carries
    the rest of its paragraph along, reversing each word it reaches)."""
    boxes = [driver.execute_script(FIRST_AND_LAST, selector, word) for word in words]
    in_order = all(first[0] == last[0] and first[1] < last[1] for first, last in boxes)
    return in_order and all(before[1] < after[0] for before, after in zip(boxes, boxes[1:]))


def text_of(driver, selector: str) -> str:
    return driver.execute_script("return document.querySelector(arguments[0]).innerText", selector)


#: Where the first and the last character of `arguments[1]` (in a text node inside the
#: element `arguments[0]`) are laid out: [line top, left] each; read in order, left to
#: right, each comes after the one before (a lower line, or further right on one line).
FIRST_AND_LAST = """
const walker = document.createTreeWalker(document.querySelector(arguments[0]), NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const at = node.data.indexOf(arguments[1]);
  if (at < 0) continue;
  const x = (i) => { const r = document.createRange(); r.setStart(node, i); r.setEnd(node, i + 1);
                     const box = r.getBoundingClientRect(); return [Math.round(box.top), box.left]; };
  return [x(at), x(at + arguments[1].length - 1)];
}
return null;
"""

#: For every host on the page (`.hostname`): its text, how many line boxes it takes,
#: and how many its longest-wrapped label takes (app/display.py: one label, one line).
HOST_LINES = """
return [...document.querySelectorAll('.hostname')].map((host) => {
  const lines = (node) => { const r = document.createRange(); r.selectNodeContents(node);
                            return new Set([...r.getClientRects()].map((rect) => Math.round(rect.top))).size; };
  return [host.textContent, lines(host), Math.max(...[...host.children].map(lines))];
});
"""


# -- bidi controls and the self-registered name ---------------------------------------------


@needs_chromium
def test_bidi_controls_in_a_name_are_neutralised_and_cannot_reorder_the_page(server, chromium, shots):
    """A name holding a right-to-left override: the controls are shown escaped (none
    reaches the page's text), the heading reads in order, and the name is marked as
    the client's own, unchecked claim on both pages."""
    client = register(server, client_name=BIDI_NAME, redirect_uris=["https://app.example/cb"])
    to_consent(chromium, server, client, shots)
    page_text = chromium.execute_script("return document.body.innerText")
    assert not set(page_text) & set(BIDI_CONTROLS)
    heading = text_of(chromium, "h1")
    assert heading == f"Allow an app that calls itself “{BIDI_NAME_SHOWN}” to access your MCP server?"
    # As laid out: the words after the name still read left to right, after "Allow".
    assert reads_left_to_right(chromium, "h1", "Allow", "to", "access", "your", "MCP", "server?")
    assert chromium.execute_script("return document.querySelectorAll('h1 bdi, .provenance bdi').length") == 2
    provenance = text_of(chromium, ".provenance")
    assert f"calls itself “{BIDI_NAME_SHOWN}”" in provenance and "this name was not checked" in provenance
    assert chromium.execute_script("return document.querySelector('.provenance.vouched')") is None


@needs_chromium
def test_a_document_client_is_named_by_its_host_and_a_claimed_name_differs_visibly(
    cimd_server, documents, chromium, shots
):
    """The same name, "Doc Client", from a metadata document (vouched for by its
    host) and from a self-registered client (its claim): different words, a different
    mark and a different border style, not only a different color. A document client
    whose redirect URIs are all on loopback carries a warning (MCP: any program on the
    device can claim it); one with an https redirect URI does not."""
    from selenium.webdriver.common.by import By

    base, _, _ = documents
    to_consent(
        chromium,
        cimd_server,
        {"client_id": f"{base}/good/app.json", "redirect_uris": ["https://app.example/cb"]},
        shots,
    )
    assert text_of(chromium, "h1") == "Allow Doc Client to access your MCP server?"
    vouched = text_of(chromium, ".provenance")
    assert vouched.endswith("Doc Client — named by its document on localhost")
    vouched_style = chromium.execute_script(
        "const p = document.querySelector('.provenance'); return [getComputedStyle(p).borderTopStyle, "
        "p.querySelector('.mark').textContent, p.classList.contains('vouched')]"
    )
    assert chromium.execute_script("return document.querySelector('.loopback-warning')") is None

    claimed = register(cimd_server, client_name="Doc Client", redirect_uris=["https://app.example/cb"])
    chromium.delete_all_cookies()
    to_consent(chromium, cimd_server, claimed, shots)
    assert text_of(chromium, "h1") == "Allow an app that calls itself “Doc Client” to access your MCP server?"
    assert "calls itself “Doc Client” — this name was not checked" in text_of(chromium, ".provenance")
    claimed_style = chromium.execute_script(
        "const p = document.querySelector('.provenance'); return [getComputedStyle(p).borderTopStyle, "
        "p.querySelector('.mark').textContent, p.classList.contains('vouched')]"
    )
    assert vouched_style == ["solid", "✓", True] and claimed_style == ["dashed", "?", False]

    # A document whose redirect URIs are all on loopback: vouched for, and warned about.
    chromium.delete_all_cookies()
    loopback = {"client_id": f"{base}/loopback/cli.json", "redirect_uris": ["http://localhost:48123/callback"]}
    to_consent(chromium, cimd_server, loopback, shots)
    warning = chromium.find_element(By.CSS_SELECTOR, ".loopback-warning")
    assert warning.is_displayed() and "any program can listen" in warning.text
    assert "named by its document on localhost" in text_of(chromium, ".provenance")


# -- a phone ---------------------------------------------------------------------------------


@needs_chromium
def test_at_phone_width_no_host_breaks_inside_a_label(make_server, chromium, shots):
    """A long name, a long redirect host and many scopes at 390 px: every host on the
    page keeps each label on one line (the long one wraps, at a dot), and nothing is
    wider than the screen."""
    scopes = "mcp files mail calendar shell contacts"
    server = make_server(
        in_thread=True, OAUTH_SCOPES=scopes, OAUTH_SCOPE_DESCRIPTIONS="files=Read and change your files"
    )
    client = register(
        server,
        client_name="An Extraordinarily Long Application Name For Testing Wrapping On Phones",
        redirect_uris=[f"https://{LONG_HOST}/oauth/callback"],
    )
    to_consent(chromium, server, client, shots, scope=scopes)
    width(chromium, PHONE)
    hosts = chromium.execute_script(HOST_LINES)
    assert LONG_HOST in [text for text, _, _ in hosts]
    assert all(longest_label == 1 for _, _, longest_label in hosts), hosts
    assert max(lines for text, lines, _ in hosts if text == LONG_HOST) > 1, hosts  # it did wrap: at a dot
    assert chromium.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    descriptions = chromium.execute_script(
        "return [...document.querySelectorAll('.scopes li')].map((li) => li.innerText.trim())"
    )
    assert descriptions[:2] == ["mcp Use the tools of this MCP server", "files Read and change your files"]
    assert descriptions[2:] == ["mail", "calendar", "shell", "contacts"]
