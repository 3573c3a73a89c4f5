"""What a stranger on the internet can send: one test per finding of the public-internet
audit, each against the real server over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from support.harness import PASSWORD
from support.internet import clients_file
from support.oauth import (
    Browser,
    csrf_of,
    exchange,
    get_code,
    register,
    tokens_for,
    verify,
)


def test_whole_flow_with_a_non_loopback_host_header(server):
    """The issuer is loopback but the client wrote another Host: the metadata and
    every redirect still name the issuer."""
    host = {"Host": "evil.example"}
    metadata = requests.get(server.base + "/.well-known/oauth-authorization-server", headers=host, timeout=10)
    assert metadata.json()["token_endpoint"] == server.issuer + "/token"
    client, tokens = tokens_for(server)
    again = requests.post(
        server.base + "/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": tokens["refresh_token"],
            "client_id": client["client_id"],
        },
        headers=host,
        timeout=10,
    )
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    "metadata",
    [
        {"scope": "mcp " + "x" * 2000},
        {"software_id": "s" * 2001},
        {"client_uri": "https://example.com/" + "p" * 2000},
        {"contacts": ["a" * 2001 + "@example.com"]},
        {"contacts": [f"c{i}@example.com" for i in range(11)]},
        {"redirect_uris": [f"https://app.example/cb{i}" for i in range(11)]},
        {"client_name": "n", "logo_uri": "https://example.com/" + "l" * 5000},
    ],
    ids=["scope", "software_id", "uri", "contact", "contacts", "redirect_uris", "logo_uri"],
)
def test_oversized_registration_is_refused_and_stores_nothing(server, metadata):
    before = clients_file(server)
    body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none", **metadata}
    response = requests.post(server.url("/register"), json=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_client_metadata"
    assert clients_file(server) == before


def test_registration_body_over_16_kib_is_refused(server):
    """Refused by its Content-Length, before it is read (app/serving.py)."""
    body = json.dumps({"redirect_uris": ["https://app.example/cb"], "x": "y" * 17000})
    response = requests.post(
        server.url("/register"), data=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert response.status_code == 413 and response.json()["error"] == "invalid_request"
    client = register(server)
    update = requests.put(
        server.url(f"/register/{client['client_id']}"),
        data=body,
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Bearer {client['registration_access_token']}",
        },
        timeout=10,
    )
    assert update.status_code == 413 and update.json()["error"] == "invalid_request"


# -- connections -----------------------------------------------------------------------


def test_half_open_connections_do_not_stop_healthz(server):
    """150 connections that send half a request, then wait (more than waitress's old
    default limit of 100): /healthz still answers at once."""
    sockets = []
    try:
        for _ in range(150):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            sock.sendall(b"POST /register HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
            sockets.append(sock)
        started = time.monotonic()
        response = requests.get(server.url("/healthz"), timeout=5)
        assert response.status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for sock in sockets:
            sock.close()


def test_verify_scope_parameter_is_never_copied_into_the_header(server):
    _, tokens = tokens_for(server)
    for scope in ("mcp\r\nSet-Cookie: a=b", 'mcp"', "mcp\\", "é"):
        response = verify(server, tokens["access_token"], scope=scope)
        assert response.status_code == 400, scope
        assert "Set-Cookie" not in response.headers
    lacking = verify(server, tokens["access_token"], scope="admin")
    assert lacking.status_code == 403
    assert 'scope="admin"' in lacking.headers["WWW-Authenticate"]


def test_verify_without_a_token_has_no_error_code(server):
    """RFC 6750 §3.1: a request without credentials gets no error code."""
    response = verify(server, None)
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer resource_metadata=") and "error=" not in challenge
    bad = verify(server, "not.a.token")
    assert bad.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token", resource_metadata=')


# -- login throttle -------------------------------------------------------------------


def _login(server, browser: Browser, token: str, password: str, address: str) -> int:
    return browser.post(
        server.url("/login"),
        data={"csrf_token": token, "username": "alice", "password": password},
        headers={"X-Forwarded-For": address},
    ).status_code


def test_guesses_from_everywhere_cannot_lock_a_person_out(server):
    """60 wrong passwords for alice from 12 addresses: the per-address limit stops each
    address; the right password from where alice logged in before gets in at once, and
    from a new address within the slow lane's 2 s."""
    usual = Browser(server)
    assert _login(server, usual, csrf_of(usual.get(server.url("/login")).text), PASSWORD, "203.0.113.50") == 200
    browser = Browser(server)
    token = csrf_of(browser.get(server.url("/login")).text)
    for i in range(60):
        assert _login(server, browser, token, f"guess{i}", f"198.51.100.{i % 12}") in (401, 429)
    assert _login(server, browser, token, "wrong", "198.51.100.1") == 429  # that address waits
    assert _login(server, usual, csrf_of(usual.get(server.url("/login")).text), PASSWORD, "203.0.113.50") == 200
    statuses = []
    for _ in range(3):  # a new network: its turn in the slow lane comes within 2 s
        statuses.append(_login(server, browser, token, PASSWORD, "192.0.2.200"))
        if statuses[-1] == 200:
            break
        time.sleep(2.1)
    assert statuses[-1] == 200, statuses


def test_concurrent_guesses_cannot_pass_the_per_address_limit(server):
    browser = Browser(server)
    token = csrf_of(browser.get(server.url("/login")).text)
    barrier = threading.Barrier(24)

    def guess(i: int) -> int:
        barrier.wait()
        return _login(server, browser, token, f"guess{i}", "192.0.2.77")

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(guess, range(24)))
    assert statuses.count(401) == 10, statuses
    assert statuses.count(429) == 14, statuses


def test_code_exchange_still_works_after_a_failed_login_from_elsewhere(server):
    """A wrong password from one address does not spoil another browser's flow."""
    client = register(server)
    other = Browser(server)
    token = csrf_of(other.get(server.url("/login")).text)
    assert _login(server, other, token, "wrong", "198.51.100.200") == 401
    code, verifier, _ = get_code(server, client)
    assert exchange(server, client, code, verifier).status_code == 200
