"""What a person's consent covers and how long things last: an approval is remembered
per user, client, scope, resource and redirect URI, and forgotten when the client's
redirect URIs or name change or the person is deleted; clients and grants expire by
the README's rules; pending sign-ins are bounded so that a flood cannot push out a
person's; a document client on loopback only is warned about."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from support.consent import approve, authorize, finish_sign_in, flood_sign_ins, person_signs_in
from support.harness import PASSWORD
from support.oauth import (
    Browser,
    auth_params,
    csrf_of,
    pkce_pair,
    register,
    request_id_of,
)


def asked_after_login(server, client: dict, username: str, password: str = PASSWORD) -> bool:
    """A new browser logs in: is the consent page shown (True) or the code sent at once?"""
    browser = Browser(server, username, password)
    _, challenge = pkce_pair()
    first = browser.get(server.url("/authorize?" + urlencode(auth_params(client, challenge))))
    login_url = browser.absolute(first.headers["Location"])
    page = browser.get(login_url)
    logged_in = browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(login_url),
            "username": username,
            "password": password,
        },
    )
    assert logged_in.status_code == 302 and "/consent" in logged_in.headers["Location"], logged_in.text[:300]
    consent = browser.get(browser.absolute(logged_in.headers["Location"]))
    if consent.status_code == 302:
        assert "code=" in consent.headers["Location"]
        return False
    assert consent.status_code == 200 and 'value="approve"' in consent.text
    return True


@pytest.mark.parametrize("store", ["file", "postgresql"])
def test_delete_user_forgets_their_approvals(make_server, request, store):
    """A user deleted and made again with the same name is a new person: asked again,
    never sent a code on the old one's approval. Others keep theirs."""
    env = {"OAUTH_STORE": request.getfixturevalue("postgres_url")} if store == "postgresql" else {}
    server = make_server(in_thread=True, users={"alice": PASSWORD, "bob": PASSWORD}, **env)
    client = register(server)
    alice = Browser(server)
    approve(alice, server, client)
    approve(Browser(server, "bob"), server, client)
    deleted = server.cli("delete-user", "bob")
    assert deleted.returncode == 0, deleted.stderr
    assert server.app.extensions["oauth"].users.set_password("bob", "another password", create=True)
    assert asked_after_login(server, client, "bob", "another password")
    assert authorize(alice, server, client) == "code"


def test_instances_sharing_postgresql_share_the_pending_limit(make_server, postgres_url):
    """The 100 pending of one address are counted in the shared database: spread over
    two instances, the 101st is refused at either."""
    first = make_server(in_thread=True, OAUTH_STORE=postgres_url)
    second = make_server(in_thread=True, users={}, OAUTH_STORE=postgres_url, OAUTH_ISSUER=first.issuer)
    second.issuer = second.base  # only where the test sends its requests
    client = register(first)
    person, login_url, _ = person_signs_in(first, client, "198.51.100.7")
    assert flood_sign_ins(first, client, ["203.0.113.9"], 60) == [302] * 60
    assert flood_sign_ins(second, client, ["203.0.113.9"], 41) == [302] * 40 + [429]
    assert flood_sign_ins(first, client, ["203.0.113.9"], 1) == [429]
    assert "code" in finish_sign_in(first, person, login_url)
