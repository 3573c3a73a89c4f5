"""What a person's consent covers and how long things last: an approval is remembered
per user, client, scope, resource and redirect URI, and forgotten when the client's
redirect URIs or name change or the person is deleted; clients and grants expire by
the README's rules; pending sign-ins are bounded so that a flood cannot push out a
person's; a document client on loopback only is warned about."""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlencode

import requests
from support.consent import approve, authorize, finish_sign_in, flood_sign_ins, person_signs_in
from support.harness import PASSWORD, free_port
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    pkce_pair,
    redirect_params,
    refresh,
    register,
    request_id_of,
    shown_of,
    tokens_for,
)

from app import records

APP = "https://app.example/cb"
NEW_HOST = "https://new.example/cb"


def _manage(client: dict, method: str, **body) -> requests.Response:
    """RFC 7592 with the client's registration access token."""
    return requests.request(
        method,
        client["registration_client_uri"],
        headers={"Authorization": f"Bearer {client['registration_access_token']}"},
        json={"client_id": client["client_id"], "token_endpoint_auth_method": "none", **body},
        timeout=10,
    )


# -- the approval is bound to where the code goes ------------------------------------------


def test_an_approval_is_bound_to_the_redirect_uri_it_was_given_for(server):
    """Approved for one registered redirect URI: a request to another one of the same
    client shows the page (the MCP specification: the person MUST see where the code
    goes)."""
    client = register(server, redirect_uris=[APP, NEW_HOST])
    browser = Browser(server)
    approve(browser, server, client, redirect_uri=APP)
    assert authorize(browser, server, client, redirect_uri=APP) == "code"
    assert authorize(browser, server, client, redirect_uri=NEW_HOST) == "consent"
    stored = server.app.extensions["oauth"].store.get("clients", client["client_id"])
    assert stored["approvals"]["alice"]["redirect_uri"] == APP


def test_a_loopback_port_change_keeps_the_approval_but_a_host_change_asks(server):
    """RFC 8252 §7.3: a loopback redirect may use any port, and it is the same redirect
    URI for consent too; another loopback host is another one."""
    client = register(server, redirect_uris=["http://localhost:33418/callback", "http://127.0.0.1:33418/callback"])
    browser = Browser(server)
    approve(browser, server, client, redirect_uri="http://localhost:51000/callback")
    assert authorize(browser, server, client, redirect_uri="http://localhost:52000/callback") == "code"
    assert authorize(browser, server, client, redirect_uri="http://127.0.0.1:52000/callback") == "consent"


def test_an_approval_covers_only_the_resource_approved(make_server):
    """Remembered per resource (RFC 8707): approved for one, asked for the other."""
    port = free_port()
    mcp, other = f"http://127.0.0.1:{port}/mcp", f"http://127.0.0.1:{port}/other"
    server = make_server(in_thread=True, PORT=str(port), OAUTH_RESOURCES=f"{mcp},{other}")
    client = register(server)
    browser = Browser(server)
    approve(browser, server, client, resource=mcp)
    assert authorize(browser, server, client, resource=mcp) == "code"
    assert authorize(browser, server, client, resource=other) == "consent"


def test_a_changed_registration_asks_everyone_again(make_server):
    """RFC 7592 PUT: a new name, or redirect URIs changed in any way (even one added
    beside the approved one), and every person who approved sees the page again; a
    change of neither keeps their approvals."""
    server = make_server(in_thread=True, users={"alice": PASSWORD, "bob": PASSWORD})
    client = register(server, client_name="Notes", redirect_uris=[APP])
    people = {name: Browser(server, name) for name in ("alice", "bob")}
    for browser in people.values():
        approve(browser, server, client)

    assert _manage(client, "PUT", client_name="Notes", redirect_uris=[APP], contacts=["ops@app.example"]).ok
    assert [authorize(b, server, client) for b in people.values()] == ["code", "code"]

    assert _manage(client, "PUT", client_name="Notes (new owner)", redirect_uris=[APP]).ok
    assert [authorize(b, server, client) for b in people.values()] == ["consent", "consent"]

    approve(people["alice"], server, client)
    assert _manage(client, "PUT", client_name="Notes (new owner)", redirect_uris=[APP, NEW_HOST]).ok
    assert authorize(people["alice"], server, client, redirect_uri=APP) == "consent"


def test_an_approval_written_before_approvals_named_a_redirect_uri_asks_once(server):
    """clients.json from the previous release: its approvals hold no redirect URI. They
    are read and restored as they are, count for no redirect URI, and a new approval
    replaces them."""
    client = register(server)
    browser = Browser(server)
    approve(browser, server, client)
    store = server.app.extensions["oauth"].store

    def as_the_previous_release_wrote_it(record: dict) -> None:
        del record["approvals"]["alice"]["redirect_uri"]

    store.change("clients", client["client_id"], as_the_previous_release_wrote_it)
    old = store.get("clients", client["client_id"])
    assert records.problem("clients", client["client_id"], old) is None
    assert authorize(browser, server, client) == "consent"
    approve(browser, server, client)
    new = store.get("clients", client["client_id"])
    assert records.problem("clients", client["client_id"], new) is None
    assert new["approvals"]["alice"]["redirect_uri"] == client["redirect_uris"][0]
    assert authorize(browser, server, client) == "code"
    bad = {**new, "approvals": {"alice": {**new["approvals"]["alice"], "redirect_uri": 7}}}
    assert "approvals" in (records.problem("clients", client["client_id"], bad) or "")


# -- no redirect before the person is known; pending sign-ins bounded ----------------------


def test_an_authorize_query_over_8_kib_is_shown_and_not_kept(server):
    client = register(server)
    _, challenge = pkce_pair()
    base = urlencode(auth_params(client, challenge, state=""))
    fits = server.url("/authorize?" + base + "x" * (8192 - len(base)))
    response = requests.get(fits, allow_redirects=False, timeout=10)
    assert response.status_code == 302 and "/login" in response.headers["Location"]
    too_long = requests.get(fits + "x", allow_redirects=False, timeout=10)
    assert too_long.status_code == 400 and "Location" not in too_long.headers
    assert "<code>invalid_request</code>" in too_long.text


def test_one_network_holds_at_most_100_pending_sign_ins_and_cannot_push_out_anothers(server):
    """A flood of /authorize from one address (or one IPv6 /64) is refused past 100
    pending (429, Retry-After) instead of dropping anyone's: a person's sign-in started
    elsewhere, or before the flood from the same address, completes."""
    client = register(server)
    person, login_url, params = person_signs_in(server, client, "198.51.100.7")
    neighbour, neighbour_login, _ = person_signs_in(server, client, "203.0.113.9")
    statuses = flood_sign_ins(server, client, ["203.0.113.9"], 100)
    assert statuses == [302] * 99 + [429] * 1  # the neighbour's sign-in holds one of the 100
    refused = requests.get(
        server.url("/authorize?" + urlencode(params)),
        headers={"X-Forwarded-For": "203.0.113.9"},
        allow_redirects=False,
        timeout=10,
    )
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert "Location" not in refused.headers
    # One /64 is one network, whatever its addresses; the next /64 is another.
    ipv6 = flood_sign_ins(server, client, [f"2001:db8:1:2::{n:x}" for n in range(1, 102)], 1)
    assert ipv6 == [302] * 100 + [429]
    assert flood_sign_ins(server, client, ["2001:db8:1:3::1"], 1) == [302]
    assert "code" in finish_sign_in(server, person, login_url)
    assert "code" in finish_sign_in(server, neighbour, neighbour_login)
    # A finished sign-in leaves room for one more from its network.
    assert flood_sign_ins(server, client, ["203.0.113.9"], 2) == [302, 429]


# -- clients and grants expire by the README's rules -------------------------------------


def _until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()))


def test_clients_and_grants_expire_by_their_ttls(make_server):
    """OAUTH_UNUSED_CLIENT_TTL: a client that never completed an authorization goes; one
    that did is then kept by OAUTH_CLIENT_IDLE_TTL instead (expired once unused that
    long, never with `0`). OAUTH_REFRESH_TOKEN_TTL: a grant unused that long is gone,
    and each refresh renews it. One timeline for all, each moment taken from when its
    record was last written (a loaded machine may take seconds to set up)."""
    never_idle = make_server(
        in_thread=True, OAUTH_UNUSED_CLIENT_TTL="2", OAUTH_CLIENT_IDLE_TTL="0", OAUTH_REFRESH_TOKEN_TTL="3"
    )
    idle = make_server(in_thread=True, OAUTH_UNUSED_CLIENT_TTL="1", OAUTH_CLIENT_IDLE_TTL="3")
    idle_client, idle_tokens = tokens_for(idle)
    idle_used_at = time.time()
    used, left = tokens_for(never_idle)
    left_at = time.time()
    unused = register(never_idle)
    unused_at = time.time()
    _, kept = tokens_for(never_idle, used)
    kept_at = time.time()

    _until(kept_at + 1.5)  # well within the grant's 3 s
    renewed = refresh(never_idle, used, kept["refresh_token"])
    assert renewed.status_code == 200, renewed.text

    _until(unused_at + 2.2)  # past the unused TTL
    _, challenge = pkce_pair()
    gone = requests.get(never_idle.url("/authorize?" + urlencode(auth_params(unused, challenge))), timeout=10)
    assert gone.status_code == 400 and "invalid_client" in gone.text
    assert _manage(unused, "GET").status_code == 401
    assert _manage(used, "GET").status_code == 200

    _until(max(idle_used_at, left_at) + 3.3)  # past the idle TTL and the grant's TTL
    expired = refresh(idle, idle_client, idle_tokens["refresh_token"])
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_client"
    expired_grant = refresh(never_idle, used, left["refresh_token"])
    assert expired_grant.status_code == 400 and expired_grant.json()["error"] == "invalid_grant"
    # renewed at kept_at + 1.5 or later, so live until kept_at + 4.5 at least
    assert refresh(never_idle, used, renewed.json()["refresh_token"]).status_code == 200


# -- the consent page ---------------------------------------------------------------------


def _document(documents, name: str, **metadata) -> str:
    """Write the document the docserver serves as /file/NAME; its URL (the client id)."""
    base, _, log = documents
    folder = Path(log).parent / "docs"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(json.dumps(metadata))
    return f"{base}/file/{name}"


def test_a_changed_metadata_document_asks_again(cimd_server, documents):
    """A document whose redirect URIs change (one added beside the approved one) or
    whose name changes: the person sees the page again before a code goes anywhere."""
    url = _document(documents, "changing.json", client_name="Doc Notes", redirect_uris=[APP])
    client = {"client_id": url, "redirect_uris": [APP]}
    browser = Browser(cimd_server)
    approve(browser, cimd_server, client)
    assert authorize(browser, cimd_server, client) == "code"
    _document(documents, "changing.json", client_name="Doc Notes", redirect_uris=[APP, NEW_HOST])
    assert authorize(browser, cimd_server, client) == "consent"
    approve(browser, cimd_server, client)
    assert authorize(browser, cimd_server, client) == "code"
    _document(documents, "changing.json", client_name="Doc Notes 2", redirect_uris=[APP, NEW_HOST])
    assert authorize(browser, cimd_server, client) == "consent"


def test_a_document_client_on_loopback_only_is_warned_about(cimd_server, documents):
    """MCP: a metadata document whose redirect URIs are all on loopback can be claimed
    by any program on the device; the consent page says so. One with an https redirect
    URI carries no such warning."""
    base, _, _ = documents
    pages = {}
    for path, redirect_uri in (("/loopback/cli.json", "http://localhost:48123/callback"), ("/good/app.json", APP)):
        browser = Browser(cimd_server)
        _, challenge = pkce_pair()
        client = {"client_id": base + path, "redirect_uris": [redirect_uri]}
        login = browser.get(cimd_server.url("/authorize?" + urlencode(auth_params(client, challenge))))
        login_url = browser.absolute(login.headers["Location"])
        page = browser.get(login_url)
        consent = browser.post(
            cimd_server.url("/login"),
            data={
                "csrf_token": csrf_of(page.text),
                "request_id": request_id_of(login_url),
                "username": "alice",
                "password": PASSWORD,
            },
        )
        pages[path] = browser.get(browser.absolute(consent.headers["Location"])).text
    assert 'class="notice loopback-warning"' in pages["/loopback/cli.json"]
    assert "loopback-warning" not in pages["/good/app.json"]


def test_a_decision_counts_only_for_what_the_page_showed(server):
    """A client that changes its name (or where its code goes) between the page being
    shown and the click: the click approves nothing; the page is shown again, saying
    so, and only a click on the new page sends the code."""
    client = register(server, client_name="Notes", redirect_uris=[APP])
    browser = Browser(server)
    _, challenge = pkce_pair()
    first = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    login_url = browser.absolute(first.headers["Location"])
    login = browser.get(login_url)
    to_consent = browser.post(
        server.url("/login"),
        data={"csrf_token": csrf_of(login.text), "request_id": request_id_of(login_url), "username": "alice",
              "password": PASSWORD},
    )  # fmt: skip
    consent_url = browser.absolute(to_consent.headers["Location"])
    page = browser.get(consent_url)
    assert "Notes" in page.text and "details changed" not in page.text

    assert _manage(client, "PUT", client_name="Notes by someone else", redirect_uris=[APP]).ok
    form = {"csrf_token": csrf_of(page.text), "request_id": request_id_of(consent_url), "decision": "approve"}
    clicked = browser.post(server.url("/consent"), data={**form, "shown": shown_of(page.text)})
    assert clicked.status_code == 200 and "Location" not in clicked.headers
    assert "details changed" in clicked.text and "Notes by someone else" in clicked.text
    for missing in ({}, {"shown": "0" * 64}):  # what the person saw is not known: shown again
        again = browser.post(server.url("/consent"), data={**form, **missing})
        assert again.status_code == 200 and "details changed" in again.text

    approved = browser.post(server.url("/consent"), data={**form, "shown": shown_of(clicked.text)})
    assert "code" in redirect_params(approved)
