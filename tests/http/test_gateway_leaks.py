"""What the gateway lets through, either way (CONTRACT "Holding up on the open internet
(round 2)"): no token upstream even in the query, no path whose meaning depends on who
decodes it (at the gateway and at /verify), no response header the upstream named
hop-by-hop, the 2026-07-28 MCP request headers allowed in CORS, and a 401 that names
the scopes. Through real upstreams that report what they received."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import requests
from support.harness import free_port
from support.oauth import tokens_for


@pytest.fixture
def gateway(make_server, upstream):
    return make_server(OAUTH_UPSTREAM_URL=upstream, in_thread=True)


def _raw(server, target: str, token: str | None, method: str = "GET", extra: str = "") -> tuple[int, str, str]:
    """Send a request line exactly as written (requests would re-encode it): the
    status, the head and the body of the answer."""
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{extra}Content-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), head.decode("latin-1"), body.decode("latin-1")


def test_the_gateway_passes_no_access_token_upstream_in_the_query(gateway):
    """RFC 6750 §2.3 puts a token in `access_token=`: every occurrence is taken out of
    the query the upstream gets (its name percent-encoded too), the rest kept as it
    was, in its order."""
    _, tokens = tokens_for(gateway)
    token = tokens["access_token"]
    query = f"b=2&access_token={token}&a=%C3%A9&&access%5Ftoken={token}&c&access_token=&z=access_token"
    status, _, body = _raw(gateway, f"/mcp/echo?{query}", token, method="POST")
    assert status == 200, body
    echoed = json.loads(body)
    assert echoed["raw_query"] == "b=2&a=%C3%A9&&c&z=access_token"
    assert token not in body
    only = _raw(gateway, f"/mcp/echo?access_token={token}", token, method="POST")
    assert only[0] == 200 and json.loads(only[2])["raw_query"] == ""


@pytest.mark.parametrize(
    "path", ["/mcp/..%2Fadmin", "/mcp/..%2fadmin", "/mcp/path/a%5Cb", "/mcp/path/a%5cb", "/mcp/path/a%00b"]
)
def test_an_encoded_slash_backslash_or_nul_in_the_path_is_400_at_the_gateway(gateway, path):
    """Upstreams differ in whether they decode `%2F` before routing, so the path could
    mean `/admin` behind us: refused, whichever way the request is answered (a GET with
    a good token in front of Flask, or the Flask view)."""
    _, tokens = tokens_for(gateway)
    for method, token in (("GET", tokens["access_token"]), ("POST", tokens["access_token"]), ("HEAD", None)):
        status, _, body = _raw(gateway, path, token, method=method)
        assert status == 400, (method, path, body)
        if method != "HEAD":
            answer = json.loads(body)  # ours: the upstream was never asked
            assert answer["error"] == "invalid_request", answer


def test_an_encoded_slash_backslash_or_nul_in_the_forwarded_path_is_400_at_verify(make_server):
    """/verify judges the path the proxy forwards (X-Forwarded-Uri) as the gateway
    judges its own: with one resource (where the path picks nothing) as with several."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    for resources in (f"{base}/mcp", f"{base}/mcp,{base}/other"):
        server = make_server(PORT=str(port), OAUTH_RESOURCES=resources, in_thread=True)
        _, tokens = tokens_for(server)

        def forwarded(uri: str) -> requests.Response:
            headers = {
                "Authorization": f"Bearer {tokens['access_token']}",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": f"127.0.0.1:{port}",
                "X-Forwarded-Uri": uri,
            }
            return requests.get(server.url("/verify"), headers=headers, timeout=10)

        assert forwarded("/mcp/tools?x=%2F").status_code == 200  # the query is not the path
        for uri in ("/mcp/..%2Fadmin", "/mcp/..%2fadmin", "/mcp/a%5Cb", "/mcp/a%5cb", "/mcp/a%00"):
            response = forwarded(uri)
            assert response.status_code == 400, (resources, uri, response.text)
            assert response.json()["error"] == "invalid_request"
        server.stop()


class HopByHopUpstream:
    """An HTTP/1.1 upstream whose every answer names `X-Hop` in its `Connection`
    header (RFC 9110 §7.6.1: then X-Hop is for this hop only)."""

    ANSWER = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-Hop,x-other-hop\r\n"
        b"X-Hop: for this hop\r\nX-Other-Hop: this one too\r\nX-Kept: end to end\r\nContent-Length: 2\r\n\r\nok"
    )

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            received = b""
            while True:
                while b"\r\n\r\n" not in received:
                    data = conn.recv(65536)
                    if not data:
                        return
                    received += data
                _, _, received = received.partition(b"\r\n\r\n")  # the requests here have no body
                conn.sendall(self.ANSWER)


def test_response_headers_the_upstream_names_in_connection_are_not_passed_on(make_server):
    upstream = HopByHopUpstream()
    server = make_server(OAUTH_UPSTREAM_URL=f"http://127.0.0.1:{upstream.port}/mcp", in_thread=True)
    _, tokens = tokens_for(server)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    for method in ("GET", "HEAD"):  # in front of Flask, and through the Flask view
        response = requests.request(method, server.url("/mcp"), headers=auth, timeout=10)
        assert response.status_code == 200, response.text
        assert response.headers["X-Kept"] == "end to end"
        assert "X-Hop" not in response.headers and "X-Other-Hop" not in response.headers, response.headers


def test_the_gateway_preflight_allows_the_mcp_request_headers(gateway):
    """MCP 2026-07-28 request headers, `Mcp-Param-*` included (CORS has no wildcard
    for a prefix: the ones the preflight asks for are named); others are not."""
    asked = (
        "authorization, content-type, accept, mcp-method, mcp-name, mcp-param-city, Mcp-Param-Units, "
        "mcp-protocol-version, mcp-session-id, last-event-id, x-not-mcp"
    )
    response = requests.options(
        gateway.url("/mcp"),
        headers={"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": asked},
        timeout=10,
    )  # fmt: skip
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    allowed = {name.strip().lower() for name in response.headers["Access-Control-Allow-Headers"].split(",")}
    assert {name.strip().lower() for name in asked.split(",")} - allowed == {"x-not-mcp"}
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


def test_the_gateway_challenge_names_the_scopes(make_server, upstream):
    server = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_SCOPES="mcp files", in_thread=True)
    for auth in ({}, {"Authorization": "Bearer not-a-token"}):
        response = requests.post(server.url("/mcp"), headers=auth, json={}, timeout=10)
        assert response.status_code == 401
        assert 'scope="mcp files"' in response.headers["WWW-Authenticate"], response.headers["WWW-Authenticate"]
        assert response.headers["Access-Control-Allow-Origin"] == "*"


def test_the_mcp_servers_answers_are_readable_by_a_browser_based_client(gateway):
    """CORS on what the gateway forwards (not only its own 401 and preflight): without
    it a browser-based MCP client could not read the answer or its session id."""
    _, tokens = tokens_for(gateway)
    answer = requests.post(
        gateway.url("/mcp/echo"),
        data=b"{}",
        headers={"Authorization": f"Bearer {tokens['access_token']}", "Origin": "https://app.example"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "mcp-session-id" in answer.headers["Access-Control-Expose-Headers"].lower()
