"""What a stranger on the internet can send: one test per finding of the public-internet
audit, each against the real server over real HTTP."""

from __future__ import annotations

import json
import socket
import time

import pytest
import requests
from support.internet import clients_file, stored_files
from support.oauth import (
    Browser,
    csrf_of,
    exchange,
    get_code,
    pkce_pair,
    refresh,
    register,
    request_id_of,
    tokens_for,
    verify,
)
from support.records import grant

# -- URLs come from OAUTH_ISSUER, never from Host ------------------------------------


@pytest.mark.parametrize("issuer", ["https://auth.example.test", None])
def test_token_endpoints_answer_whatever_host_the_request_names(make_server, issuer):
    """Behind a TLS proxy (https issuer, plain-http socket) and for a non-loopback
    Host on a loopback issuer, /token, /revoke and /introspect answer in OAuth terms
    (Authlib used to raise InsecureTransportError: 500)."""
    server = make_server(**({"OAUTH_ISSUER": issuer} if issuer else {}))
    host = {"Host": "auth.example.test"}
    base = server.base
    token = requests.post(base + "/token", data={"grant_type": "authorization_code"}, headers=host, timeout=10)
    assert token.status_code in (400, 401) and token.json()["error"] in ("invalid_client", "invalid_request")
    for path in ("/revoke", "/introspect"):
        response = requests.post(base + path, data={"token": "x"}, headers=host, timeout=10)
        assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_registration_rate_is_per_client_address(make_server):
    server = make_server(OAUTH_REGISTRATION_RATE="3")
    body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}

    def post(address: str) -> requests.Response:
        # The test talks to the server from loopback, a trusted proxy by default.
        return requests.post(server.url("/register"), json=body, headers={"X-Forwarded-For": address}, timeout=10)

    assert [post("203.0.113.7").status_code for _ in range(3)] == [201] * 3
    refused = post("203.0.113.7")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["error"] == "temporarily_unavailable"
    assert post("203.0.113.8").status_code == 201


def test_the_registration_rate_counts_clients_stored_and_a_refused_one_stores_nothing(make_server):
    """The rate limits what is stored: a registration refused for its metadata does not
    use up the address's rate, and one refused by the rate leaves no client behind.
    Once refused, the address is refused before its metadata is even read."""
    server = make_server(OAUTH_REGISTRATION_RATE="2")
    address = {"X-Forwarded-For": "203.0.113.9"}
    valid = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
    invalid = {"redirect_uris": ["http://app.example/cb"]}  # plain http, not loopback

    def post(body: dict) -> requests.Response:
        return requests.post(server.url("/register"), json=body, headers=address, timeout=10)

    assert [post(invalid).status_code for _ in range(3)] == [400] * 3
    assert [post(valid).status_code for _ in range(2)] == [201] * 2
    before = clients_file(server)
    refused = post(valid)
    assert refused.status_code == 429 and "client_id" not in refused.json()
    assert clients_file(server) == before
    assert post(invalid).status_code == 429


def test_forwarded_for_from_an_untrusted_peer_is_ignored(make_server):
    server = make_server(OAUTH_REGISTRATION_RATE="2", OAUTH_TRUSTED_PROXIES="")
    body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
    statuses = [
        requests.post(
            server.url("/register"), json=body, headers={"X-Forwarded-For": f"198.51.100.{i}"}, timeout=10
        ).status_code
        for i in range(3)
    ]
    assert statuses == [201, 201, 429]


def test_registration_cap(make_server):
    """At the cap with every client used (none to evict: see test_registration.py), 429."""
    server = make_server(OAUTH_MAX_CLIENTS="2")
    browser = Browser(server)
    for _ in range(2):
        tokens_for(server, browser=browser)
    refused = requests.post(server.url("/register"), json={"redirect_uris": ["https://a.example/cb"]}, timeout=10)
    assert refused.status_code == 429 and refused.headers["Retry-After"]
    assert len(json.loads(server.cli("list-clients", "--json").stdout)) == 2


def test_a_deleted_client_frees_room_under_the_cap_within_a_second(make_server):
    """The count the cap is checked against is reused for up to a second (on
    PostgreSQL it reads every client row); a deletion made by the operator's CLI, in
    another process, is seen after that."""
    server = make_server(OAUTH_MAX_CLIENTS="2")
    browser = Browser(server)
    first, _ = tokens_for(server, browser=browser)
    tokens_for(server, browser=browser)  # both used: none may be evicted
    body = {"redirect_uris": ["https://a.example/cb"]}
    assert requests.post(server.url("/register"), json=body, timeout=10).status_code == 429
    assert server.cli("delete-client", "--yes", first["client_id"]).returncode == 0
    deadline = time.monotonic() + 5
    while (answer := requests.post(server.url("/register"), json=body, timeout=10)).status_code == 429:
        assert time.monotonic() < deadline, "the freed room was never seen"
        time.sleep(0.2)
    assert answer.status_code == 201


# -- /verify: the resource comes from the normalised forwarded URL ---------------------


@pytest.fixture
def two_resources(make_server):
    from support.harness import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    return make_server(PORT=str(port), OAUTH_RESOURCES=f"{base}/mcp,{base}/other")


def _forwarded(server, token: str, uri: str, **extra) -> requests.Response:
    headers = {
        "Authorization": f"Bearer {token}",
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": f"127.0.0.1:{server.port}",
        "X-Forwarded-Uri": uri,
        **extra,
    }
    return requests.get(server.url("/verify"), headers=headers, timeout=10)


def test_verify_normalises_the_path_before_choosing_the_resource(two_resources):
    server = two_resources
    _, tokens = tokens_for(server)  # for the first resource, /mcp
    token = tokens["access_token"]
    for uri in ("/mcp", "/mcp/", "/mcp/tools?x=1", "//mcp", "/x/../mcp/y", "/%6Dcp"):
        assert _forwarded(server, token, uri).status_code == 200, uri
    for uri in ("/other", "//other", "/x/../other", "/%6Fther", "/mcp/../other", "/mcp/%2e%2e/other"):
        response = _forwarded(server, token, uri)
        assert response.status_code == 401, uri
        metadata = f"http://127.0.0.1:{server.port}/.well-known/oauth-protected-resource/other"
        assert f'resource_metadata="{metadata}"' in response.headers["WWW-Authenticate"]


def test_verify_refuses_a_url_that_names_no_resource(two_resources):
    server = two_resources
    _, tokens = tokens_for(server)
    for uri in ("/", "/admin", "/mcpx", "/mcp/%zz"):
        response = _forwarded(server, tokens["access_token"], uri)
        assert response.status_code == 403, uri
        assert response.json()["error"] == "invalid_target"
    # Without forwarded headers there is no URL to choose by: refused, never "any".
    assert verify(server, tokens["access_token"]).status_code == 403


def test_verify_ignores_forwarded_headers_from_untrusted_peers(make_server):
    from support.harness import free_port

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = make_server(PORT=str(port), OAUTH_RESOURCES=f"{base}/mcp,{base}/other", OAUTH_TRUSTED_PROXIES="")
    _, tokens = tokens_for(server)
    assert _forwarded(server, tokens["access_token"], "/mcp").status_code == 403


# -- gateway: normalised and re-encoded paths, no client-sent forwarding headers -----


@pytest.fixture
def gateway(make_server, upstream):
    return make_server(OAUTH_UPSTREAM_URL=upstream)


def _raw(server, path: str, token: str, headers: str = "") -> tuple[int, str]:
    """Send a request line exactly as written (requests would normalise it)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n{headers}"
            "Connection: close\r\n\r\n".encode("latin-1")
        )
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode("latin-1")


def test_gateway_paths_are_normalised_and_re_encoded(gateway):
    _, tokens = tokens_for(gateway)
    token = tokens["access_token"]
    for path in ("/mcp/%2e%2e/admin", "/mcp/../admin", "/mcp/%2E%2E/%2e%2e/admin", "/mcp/./../admin"):
        status, body = _raw(gateway, path, token)
        assert status == 404, (path, body)
        # Our answer: the upstream was never asked.
        assert json.loads(body)["error_description"] == "Nothing is served at this path.", (path, body)
    status, body = _raw(gateway, "/mcp/path/%C3%A9/a%3fb/%7e?q=%C3%A9", token)
    assert status == 200, body
    assert json.loads(body)["raw_path"] == "/mcp/path/%C3%A9/a%3Fb/~"
    status, body = _raw(gateway, "/mcp//path/./x/../y", token)
    assert status == 200 and json.loads(body)["raw_path"] == "/mcp/path/y"
    status, _ = _raw(gateway, "/mcp/path/%zz", token)
    assert status == 400


def test_gateway_drops_client_sent_forwarding_headers(make_server, upstream):
    # The test client is a stranger here, not a trusted proxy.
    gateway = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_TRUSTED_PROXIES="")
    _, tokens = tokens_for(gateway)
    response = requests.post(
        gateway.url("/mcp/echo"),
        data=b"{}",
        headers={
            "Authorization": f"Bearer {tokens['access_token']}",
            "Forwarded": "for=6.6.6.6;host=evil.example",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "X-Forwarded-Proto": "gopher",
            "X-Real-IP": "6.6.6.6",
            "X-Forwarded-Port": "6666",
            "X-Forwarded-Prefix": "/evil",
            "X-Forwarded-Uri": "/evil",
            "X-Secret-Hop": "drop me",
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Kept": "kept",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    echoed = response.json()["headers"]
    for dropped in ("forwarded", "x-real-ip", "x-secret-hop", "x-forwarded-port", "x-forwarded-prefix"):
        assert dropped not in echoed, dropped
    assert echoed["x-forwarded-for"] == "127.0.0.1"
    assert echoed["x-forwarded-host"] == f"127.0.0.1:{gateway.port}"
    assert echoed["x-forwarded-proto"] == "http"
    assert echoed["x-kept"] == "kept"


# -- introspection -----------------------------------------------------------------------


def _introspect(server, client: dict, token: str) -> dict:
    response = requests.post(
        server.url("/introspect"),
        data={"token": token},
        auth=(client["client_id"], client["client_secret"]),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_introspection_answers_only_about_the_callers_own_tokens(server):
    confidential = register(server, token_endpoint_auth_method="client_secret_basic")
    code, verifier, _ = get_code(server, confidential)
    own = exchange(server, confidential, code, verifier, client_secret=confidential["client_secret"]).json()
    _, others = tokens_for(server)
    assert _introspect(server, confidential, own["access_token"])["active"] is True
    assert _introspect(server, confidential, others["access_token"]) == {"active": False}
    assert _introspect(server, confidential, others["refresh_token"]) == {"active": False}

    made = server.cli("add-resource-server", "my MCP server", "--json")
    assert made.returncode == 0, made.stderr
    resource_server = json.loads(made.stdout)
    assert set(resource_server) >= {"client_id", "client_secret"}
    seen = _introspect(server, resource_server, others["access_token"])
    assert seen["active"] is True and seen["sub"] == "alice"
    assert _introspect(server, resource_server, others["refresh_token"])["active"] is True


def test_a_rotated_refresh_token_at_introspection_is_a_replay(make_server):
    server = make_server(OAUTH_REFRESH_GRACE="0")
    client, tokens = tokens_for(server)
    rotated = refresh(server, client, tokens["refresh_token"])
    assert rotated.status_code == 200
    resource_server = json.loads(server.cli("add-resource-server", "rs", "--json").stdout)
    time.sleep(1.1)
    assert _introspect(server, resource_server, tokens["refresh_token"]) == {"active": False}
    # The replay revoked the grant: the live token is dead too.
    assert refresh(server, client, rotated.json()["refresh_token"]).json()["error"] == "invalid_grant"


# -- a store that cannot be written; restore that is refused or fails ------------------


@pytest.fixture
def small_disk(tmp_path):
    """A real 2 MiB file system (tmpfs), so that a full disk is a real ENOSPC."""
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)])


def _fill(path) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_a_full_disk_is_503_and_healthz_says_so(make_server, small_disk):
    server = make_server(data_dir=small_disk / "data")
    client, tokens = tokens_for(server)
    _fill(small_disk / "filler")
    assert requests.get(server.url("/healthz"), timeout=10).status_code == 503
    acknowledged = []
    body = {"redirect_uris": ["https://a.example/cb"], "software_id": "x" * 1900}
    for _ in range(300):  # a small write may still fit in a file's last page
        response = requests.post(server.url("/register"), json=body, timeout=10)
        if response.status_code != 201:
            break
        acknowledged.append(response.json()["client_id"])
    assert response.status_code == 503 and response.json()["error"] == "temporarily_unavailable"
    assert response.headers["Retry-After"]
    (small_disk / "filler").unlink()
    assert requests.get(server.url("/healthz"), timeout=10).status_code == 200
    assert refresh(server, client, tokens["refresh_token"]).status_code == 200
    server.restart()  # nothing acknowledged was lost, nothing torn stops the start
    stored = {c["client_id"] for c in json.loads(server.cli("list-clients", "--json").stdout)}
    assert set(acknowledged) <= stored
    assert "Traceback" not in server.output


def test_a_restore_that_fails_half_way_changes_no_file(make_server, small_disk, tmp_path):
    server = make_server(data_dir=small_disk / "data")
    tokens_for(server)
    before = stored_files(server.data_dir)
    document = {
        "format": "mcp-oauth-backup",
        "version": 1,
        "created_at": time.time(),
        "clients": {},
        "grants": {f"g{i}": grant(i, padding="p" * 300) for i in range(6000)},  # ~2.5 MB: does not fit
        "users": {},
        "signing_keys": {},
    }
    path = tmp_path / "oauth-backup-20260101-000000.json"
    path.write_text(json.dumps(document))
    for args in (["--clear", "--yes"],):  # (--merge restores no grant: it would write nothing)
        result = server.cli("restore", str(path), *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "cannot write" in result.stderr
        assert stored_files(server.data_dir) == before
    assert requests.get(server.url("/jwks.json"), timeout=10).status_code == 200


def _backup_with(tmp_path, server, collection: str, key: str, change) -> str:
    """A real backup of the server with one record changed by `change`."""
    out = tmp_path / f"b-{collection}-{len(list(tmp_path.iterdir()))}"
    assert server.cli("backup", "--output", str(out)).returncode == 0
    path = next(out.glob("oauth-backup-*.json"))
    document = json.loads(path.read_text())
    items = document[collection]
    record = items[key] if key in items else next(r for r in items.values() if r.get("use", "sig") == "sig")
    change(record)
    path.write_text(json.dumps(document))
    return str(path)


@pytest.mark.parametrize(
    ("collection", "change"),
    [
        ("grants", lambda r: r.update(expires_at="tomorrow")),
        ("grants", lambda r: r.update(token_hashes={"short": None})),
        ("grants", lambda r: r.update(refresh_token_hashes={})),  # both kinds of hashes
        ("grants", lambda r: r.update(resource="http://x/mcp")),
        ("grants", lambda r: r.pop("subject")),
        ("clients", lambda r: r.update(metadata={"redirect_uris": "https://a.example/cb"})),
        ("clients", lambda r: r.update(created_at=None)),
        ("clients", lambda r: r.update(client_secret_hash=12)),
        ("users", lambda r: r.update(password_hash=None)),
        ("signing_keys", lambda r: r.pop("jwk")),
        ("signing_keys", lambda r: r.update(jwk={"kty": "RSA", "n": "AQAB", "e": "AQAB"})),
        ("signing_keys", lambda r: r.update(kid="another")),
    ],
)
def test_a_crafted_backup_is_refused_and_changes_nothing(server, tmp_path, collection, change):
    client, tokens = tokens_for(server)
    key = {"grants": None, "clients": client["client_id"], "users": "alice", "signing_keys": None}[collection]
    if collection == "grants":
        key = json.loads(server.cli("list-tokens", "--json").stdout)[0]["grant_id"]
    path = _backup_with(tmp_path, server, collection, key, change)
    before = stored_files(server.data_dir)
    for args in (["--clear", "--yes"], ["--merge"]):
        result = server.cli("restore", path, *args)
        assert result.returncode == 1, result.stdout
        assert "nothing was restored" in result.stderr and "Traceback" not in result.stderr
        assert stored_files(server.data_dir) == before
    assert requests.get(server.url("/jwks.json"), timeout=10).status_code == 200
    assert verify(server, tokens["access_token"]).status_code == 200


# -- client input never a 5xx: deep JSON, NUL, non-ASCII (file store and PostgreSQL) ------


@pytest.fixture(params=["file", "postgresql"])
def either_store(request, make_server):
    """A server process on the file store or on PostgreSQL (whose text cannot hold NUL)."""
    backend = {"OAUTH_STORE": request.getfixturevalue("postgres_url")} if request.param == "postgresql" else {}
    return make_server(**backend)


def _no_server_error(server) -> None:
    assert "Traceback" not in server.output and "unhandled" not in server.output, server.output[-3000:]
    assert requests.get(server.url("/healthz"), timeout=10).status_code == 200


def _json_error(response: requests.Response, status: int, error: str) -> None:
    assert response.status_code == status, (response.status_code, response.text[:300])
    assert response.json()["error"] == error, response.text[:300]


def _error_page(response: requests.Response) -> None:
    assert response.status_code == 400 and "Location" not in response.headers, response.text[:300]
    assert response.headers["Content-Type"].startswith("text/html")


def test_deeply_nested_json_is_refused_not_a_recursion_error(either_store):
    """1,100 levels of nesting at POST /register and PUT /register/<id> (Python's JSON
    parser recursed into a RecursionError: 500) are `invalid_client_metadata`, and so
    is anything beyond 32 levels; 32 are accepted."""
    server = either_store
    client = register(server)
    as_json = {"Content-Type": "application/json"}
    for body in ("[" * 1100 + "]" * 1100, '{"a":' * 1100 + "1" + "}" * 1100):
        _json_error(
            requests.post(server.url("/register"), data=body, headers=as_json, timeout=10),
            400,
            "invalid_client_metadata",
        )
        put = requests.put(
            server.url(f"/register/{client['client_id']}"),
            data=body,
            headers={**as_json, "Authorization": f"Bearer {client['registration_access_token']}"},
            timeout=10,
        )
        assert put.status_code == 400 and put.json()["error"] in ("invalid_request", "invalid_client_metadata")

    def nested(levels: int) -> str:  # the metadata object is level 1
        return '{"redirect_uris": ["https://app.example/cb"], "x": ' + "[" * (levels - 1) + "]" * (levels - 1) + "}"

    deep = requests.post(server.url("/register"), data=nested(33), headers=as_json, timeout=10)
    _json_error(deep, 400, "invalid_client_metadata")
    assert "32 levels" in deep.json()["error_description"]
    assert requests.post(server.url("/register"), data=nested(32), headers=as_json, timeout=10).status_code == 201
    _no_server_error(server)


def test_nul_bytes_are_a_4xx_in_each_endpoints_format(either_store):
    """A NUL in an id, a token, a name or a form field (PostgreSQL raised on every
    lookup of one: 500) is `invalid_request` in JSON, or the error page at /authorize
    and the forms; in client metadata, `invalid_client_metadata`. Nothing is stored."""
    server = either_store
    client, tokens = tokens_for(server)
    client_id, redirect_uri = client["client_id"], client["redirect_uris"][0]
    before = len(json.loads(server.cli("list-clients", "--json").stdout))
    nul = "a\x00b"
    for path, form in [
        ("/token", {"grant_type": "refresh_token", "client_id": nul, "refresh_token": tokens["refresh_token"]}),
        ("/token", {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": nul}),
        (
            "/token",
            {
                "grant_type": "authorization_code",
                "client_id": client_id,
                "code": nul,
                "code_verifier": "v" * 43,
                "redirect_uri": redirect_uri,
            },
        ),
        ("/revoke", {"client_id": nul, "token": tokens["refresh_token"]}),
        ("/revoke", {"client_id": client_id, "token": nul}),
        ("/introspect", {"client_id": nul, "token": nul}),
    ]:
        _json_error(requests.post(server.url(path), data=form, timeout=10), 400, "invalid_request")
    basic = requests.post(server.url("/introspect"), data={"token": "x"}, auth=(nul, "secret"), timeout=10)
    _json_error(basic, 400, "invalid_request")
    _json_error(
        requests.get(server.url("/register/a%00b"), headers={"Authorization": "Bearer x"}, timeout=10),
        400,
        "invalid_request",
    )
    named = requests.post(
        server.url("/register"), json={"redirect_uris": [redirect_uri], "client_name": nul}, timeout=10
    )
    _json_error(named, 400, "invalid_client_metadata")
    keyed = requests.post(server.url("/register"), json={"redirect_uris": [redirect_uri], nul: "x"}, timeout=10)
    _json_error(keyed, 400, "invalid_client_metadata")
    _, challenge = pkce_pair()
    authorize = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s",
    }
    for field in ("client_id", "state", "scope", "redirect_uri"):
        _error_page(
            requests.get(server.url("/authorize"), params={**authorize, field: nul}, timeout=10, allow_redirects=False)
        )
    browser = Browser(server)
    login_url = browser.absolute(browser.get(server.url("/authorize"), params=authorize).headers["Location"])
    page = browser.get(login_url)
    form = {
        "csrf_token": csrf_of(page.text),
        "request_id": request_id_of(login_url),
        "username": "al\x00ice",
        "password": nul,
    }
    _error_page(browser.post(server.url("/login"), data=form))
    _error_page(browser.get(server.url("/consent"), params={"request_id": nul}))
    assert len(json.loads(server.cli("list-clients", "--json").stdout)) == before
    _no_server_error(server)


def test_non_ascii_in_any_field_is_never_a_5xx(either_store):
    """A document URL with a Unicode host (`exämple.com`: a 500 from a Unicode error
    description) or an IDNA-invalid one is an unknown client, shown on a page; a
    Unicode id elsewhere is an unknown client; a Unicode name is kept."""
    server = either_store
    _, challenge = pkce_pair()
    base = {
        "response_type": "code",
        "redirect_uri": "https://app.example/cb",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    for client_id in (
        "https://exämple.com/x",
        "https://xn--a.com/x",
        "https://a..b/x",
        "https://☃.net/c.json",
        "https://" + "a" * 70 + ".com/x",
        "https://example.com/\u2028",
        "ünknown",
    ):
        response = requests.get(
            server.url("/authorize"), params={**base, "client_id": client_id}, timeout=20, allow_redirects=False
        )
        _error_page(response)
    _json_error(
        requests.post(
            server.url("/token"),
            data={"grant_type": "refresh_token", "client_id": "ünknown", "refresh_token": "ü"},
            timeout=10,
        ),
        401,
        "invalid_client",
    )
    named = requests.post(
        server.url("/register"),
        json={"redirect_uris": ["https://app.example/cb"], "client_name": "Zoë's ☃ client"},
        timeout=10,
    )
    assert named.status_code == 201 and named.json()["client_name"] == "Zoë's ☃ client"
    unicode_uri = requests.post(server.url("/register"), json={"redirect_uris": ["https://exämple.com/cb"]}, timeout=10)
    _json_error(unicode_uri, 400, "invalid_redirect_uri")
    # Basic credentials that are not base64's ASCII (Werkzeug raised ValueError on them)
    for path in ("/token", "/revoke", "/register"):
        response = requests.post(
            server.url(path),
            data={"grant_type": "refresh_token", "refresh_token": "x"},
            headers={"Authorization": "Basic äöü"},
            timeout=10,
        )
        _json_error(response, 400, "invalid_request")
    _no_server_error(server)
