"""What the operator sees: /metrics in the Prometheus format (read with
prometheus_client's own parser), one log line per request, JSON logs, audit events,
and no secret anywhere in the log."""

from __future__ import annotations

import json
import os
import stat

import pytest
import requests
from support.harness import PASSWORD, free_port
from support.oauth import (
    Browser,
    auth_params,
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
from support.observability import Samples, scrape


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def failed_login(server, username: str, password: str) -> requests.Response:
    """A browser that types the wrong password at the login page."""
    client = register(server)
    browser = Browser(server)
    _, challenge = pkce_pair()
    start = browser.get(server.url("/authorize"), params=auth_params(client, challenge))
    login = browser.absolute(start.headers["Location"])
    page = browser.get(login)
    return browser.post(
        server.url("/login"),
        data={
            "csrf_token": csrf_of(page.text),
            "request_id": request_id_of(login),
            "username": username,
            "password": password,
        },
    )


def flow_with_secrets(server) -> list[str]:
    """Everything that carries a secret, once: a public and a confidential client,
    login (and a failed one), code, PKCE, refresh, a replay, introspection,
    revocation, RFC 7592 and a token in a query string. Returns the secrets."""
    secrets = [PASSWORD]
    public = register(server)
    code, verifier, _ = get_code(server, public)
    tokens = exchange(server, public, code, verifier).json()
    secrets += [code, verifier, tokens["access_token"], tokens["refresh_token"], public["registration_access_token"]]
    rotated = refresh(server, public, tokens["refresh_token"]).json()
    secrets += [rotated["access_token"], rotated["refresh_token"]]
    # OAUTH_REFRESH_GRACE=0: the old token again is a replay; the grant goes.
    assert refresh(server, public, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert verify(server, rotated["access_token"]).status_code == 401

    confidential = register(server, token_endpoint_auth_method="client_secret_basic")
    basic = (confidential["client_id"], confidential["client_secret"])
    secrets += [confidential["client_secret"], confidential["registration_access_token"]]
    code, verifier, _ = get_code(server, confidential)
    issued = requests.post(
        server.url("/token"),
        auth=basic,
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": confidential["redirect_uris"][0],
        },
        timeout=10,
    ).json()
    secrets += [code, verifier, issued["access_token"], issued["refresh_token"]]
    assert verify(server, issued["access_token"]).status_code == 200
    # A token in the query string (RFC 6750 §2.3 says no; it must not reach the log).
    requests.get(server.url("/verify"), params={"access_token": issued["access_token"]}, timeout=10)
    introspected = requests.post(server.url("/introspect"), auth=basic, data={"token": issued["access_token"]})
    assert introspected.json()["active"] is True
    revoked = requests.post(server.url("/revoke"), auth=basic, data={"token": issued["refresh_token"]}, timeout=10)
    assert revoked.status_code == 200
    bearer = {"Authorization": f"Bearer {confidential['registration_access_token']}"}
    assert requests.get(confidential["registration_client_uri"], headers=bearer, timeout=10).status_code == 200
    assert requests.delete(confidential["registration_client_uri"], headers=bearer, timeout=10).status_code == 204

    wrong = "Tr0ub4dor&3-not-the-password"
    typed_as_name = "my-password-typed-as-a-name"
    assert failed_login(server, "alice", wrong).status_code == 401
    assert failed_login(server, typed_as_name, wrong).status_code == 401
    secrets += [wrong, typed_as_name]
    return secrets


# -- /metrics -------------------------------------------------------------------------


def test_metrics_count_a_whole_flow(make_server):
    # The flow registers 4 clients: the registration rate is then spent.
    server = make_server(OAUTH_REFRESH_GRACE="0", OAUTH_REGISTRATION_RATE="4")
    before = scrape(server)
    flow_with_secrets(server)
    after = scrape(server)

    assert moved(before, after, "mcp_oauth_tokens_issued_total", grant_type="authorization_code") == 2
    assert moved(before, after, "mcp_oauth_tokens_issued_total", grant_type="refresh_token") == 1
    assert moved(before, after, "mcp_oauth_replays_detected_total", credential="refresh_token") == 1
    assert moved(before, after, "mcp_oauth_token_errors_total", grant_type="refresh_token", error="invalid_grant") == 1
    assert moved(before, after, "mcp_oauth_tokens_revoked_total") == 1
    assert moved(before, after, "mcp_oauth_registrations_total", outcome="accepted") == 4
    assert moved(before, after, "mcp_oauth_logins_total", provider="custom", outcome="succeeded") == 2
    assert moved(before, after, "mcp_oauth_logins_total", provider="custom", outcome="failed") == 2
    assert moved(before, after, "mcp_oauth_consents_total", decision="approved") == 2
    refused = requests.post(server.url("/register"), json={"redirect_uris": ["https://x.example/cb"]}, timeout=10)
    assert refused.status_code == 429
    assert moved(after, scrape(server), "mcp_oauth_registrations_total", outcome="rate_limited") == 1

    # Requests by endpoint and status, and their latency histogram.
    assert (
        moved(before, after, "mcp_oauth_http_requests_total", endpoint="token.token", method="POST", status="200") == 3
    )
    assert (
        moved(before, after, "mcp_oauth_http_requests_total", endpoint="token.token", method="POST", status="400") == 1
    )
    assert (
        moved(before, after, "mcp_oauth_http_requests_total", endpoint="verify.verify", method="GET", status="200") == 1
    )
    token_latency = moved(before, after, "mcp_oauth_http_request_duration_seconds_count", endpoint="token.token")
    assert token_latency == 4
    assert (
        moved(before, after, "mcp_oauth_http_request_duration_seconds_bucket", endpoint="token.token", le="+Inf") == 4
    )
    assert moved(before, after, "mcp_oauth_http_request_duration_seconds_sum", endpoint="token.token") > 0
    # Store writes: each grant written, each client registered, timed.
    assert moved(before, after, "mcp_oauth_store_write_duration_seconds_count", collection="grants") >= 4
    assert moved(before, after, "mcp_oauth_store_write_duration_seconds_count", collection="clients") >= 4
    assert after[("mcp_oauth_gateway_open_streams", ())] == 0


def test_metrics_count_gateway_upstream_errors_and_open_streams(make_server, upstream):
    down = make_server(OAUTH_UPSTREAM_URL=f"http://127.0.0.1:{free_port()}/mcp")
    _, tokens = tokens_for(down)
    before = scrape(down)
    answer = requests.post(down.url("/mcp"), headers={"Authorization": f"Bearer {tokens['access_token']}"}, json={})
    assert answer.status_code == 502 and answer.json()["error"] == "bad_gateway"
    after = scrape(down)
    assert moved(before, after, "mcp_oauth_gateway_upstream_errors_total", kind="unreachable") == 1
    # answered in front of Flask (app/hotpath.py), counted under the gateway's endpoint
    labels = {"endpoint": "gateway.proxy", "method": "POST", "status": "502"}
    assert moved(before, after, "mcp_oauth_http_requests_total", **labels) == 1

    up = make_server(OAUTH_UPSTREAM_URL=upstream)
    _, tokens = tokens_for(up)
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    with requests.get(up.url("/mcp/ticks?count=3&interval=1"), headers=auth, stream=True, timeout=10) as stream:
        assert stream.status_code == 200
        chunks = stream.iter_content(1)
        next(chunks)  # headers and the first bytes are in: the stream is open
        assert scrape(up)[("mcp_oauth_gateway_open_streams", ())] == 1
        assert b"tick 2" in b"".join(chunks)
    assert scrape(up)[("mcp_oauth_gateway_open_streams", ())] == 0


# -- logs -----------------------------------------------------------------------------


def json_lines(text: str) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines
    entries = [json.loads(line) for line in lines]  # every line, or this fails
    for entry in entries:
        assert {"time", "level", "event", "logger"} <= entry.keys(), entry
    return entries


def test_json_logs_one_object_per_line_with_requests_and_audit_events(make_server):
    server = make_server(OAUTH_LOG_FORMAT="json", OAUTH_REFRESH_GRACE="0")
    flow_with_secrets(server)
    answer = requests.get(server.url("/healthz"), timeout=10)
    deleted = register(server)
    cli = server.cli("delete-client", "--yes", deleted["client_id"])
    assert cli.returncode == 0, cli.stderr
    requests.get(server.url("/no/such/path%0Aforged line"), timeout=10)
    server.stop()

    entries = json_lines(server.output)
    events = [e["event"] for e in entries]
    for event in (
        "server.started",
        "login.succeeded",
        "login.failed",
        "consent.approved",
        "client.registered",
        "client.deleted",
        "token.issued",
        "token.refreshed",
        "token.revoked",
        "replay.detected",
    ):
        assert event in events, event
    requests_logged = [e for e in entries if e["event"] == "request"]
    assert {"request_id", "method", "path", "status", "duration_ms", "address"} <= requests_logged[0].keys()
    health = next(e for e in requests_logged if e["request_id"] == answer.headers["X-Request-Id"])
    assert (health["method"], health["path"], health["status"]) == ("GET", "/healthz", 200)
    # Who a request was for, where known.
    token_lines = [e for e in requests_logged if e["path"] == "/token" and e["status"] == 200]
    assert all(e.get("client_id") and e.get("subject") == "alice" for e in token_lines)
    verified = next(e for e in requests_logged if e["path"] == "/verify" and e["status"] == 200)
    assert verified["subject"] == "alice"
    # A path with a newline stays one line, encoded.
    assert any(e["path"] == "/no/such/path%0Aforged%20line" for e in requests_logged)
    started = next(e for e in entries if e["event"] == "server.started")
    assert (started["issuer"], started["store"], started["data_dir"]) == (server.issuer, "file", str(server.data_dir))
    replay = next(e for e in entries if e["event"] == "replay.detected")
    assert replay["level"] == "warning" and replay["credential"] == "refresh_token" and replay["grant_revoked"]
    failed = [e for e in entries if e["event"] == "login.failed"]
    assert [e.get("subject") for e in failed] == ["alice", None]
    assert {e["reason"] for e in failed} == {"wrong_password", "unknown_user"}

    # The CLI's change is an audit event too, in the same format.
    cli_events = json_lines(cli.stderr)
    assert [(e["event"], e["client_id"]) for e in cli_events] == [("cli.delete-client", deleted["client_id"])]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_appears_in_the_log(make_server, log_format):
    server = make_server(OAUTH_LOG_FORMAT=log_format, OAUTH_REFRESH_GRACE="0")
    secrets = flow_with_secrets(server)
    new_password = "another correct horse"
    added = server.cli("add-user", "bob", "--password-stdin", input=new_password + "\n")
    assert added.returncode == 0, added.stderr
    secrets.append(new_password)
    server.stop()
    log = server.output + added.stdout + added.stderr
    assert "mcp_oauth.request" in log or '"event": "request"' in log  # the log is there
    assert "cli.add-user" in added.stderr
    for secret in secrets:
        assert secret not in log, f"a secret is in the {log_format} log"


def test_first_password_goes_to_a_file_not_to_a_json_log(make_server, tmp_path):
    data = tmp_path / "fresh"
    server = make_server(users={}, data_dir=data, OAUTH_LOG_FORMAT="json")
    server.stop()
    password_file = data / "first-password"
    password = password_file.read_text().strip()
    assert stat.S_IMODE(os.stat(password_file).st_mode) == 0o600
    entries = json_lines(server.output)
    assert password not in server.output
    notice = next(e for e in entries if e["event"] == "user.first_password")
    assert notice["password_file"] == str(password_file)
    server.start()
    client = register(server)
    code, verifier, _ = get_code(server, client, Browser(server, "admin", password))
    assert exchange(server, client, code, verifier).status_code == 200


def test_healthz_and_metrics_name_the_version_and_count_clients_grants_and_users(server):
    from app import __version__

    health = requests.get(server.url("/healthz"), timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok", "version": __version__}
    register(server)
    tokens_for(server)  # a second client, and its grant
    samples = scrape(server)
    assert samples[("mcp_oauth_build_info", (("version", __version__),))] == 1.0
    assert samples[("mcp_oauth_clients", ())] == 2.0
    assert samples[("mcp_oauth_grants", ())] == 1.0
    assert samples[("mcp_oauth_users", ())] == 1.0  # alice
    tokens_for(server)
    server.cli("add-user", "bob", "--password-stdin", input="another good password\n")
    samples = scrape(server)  # counted anew at each scrape
    assert (samples[("mcp_oauth_clients", ())], samples[("mcp_oauth_grants", ())]) == (3.0, 2.0)
    assert samples[("mcp_oauth_users", ())] == 2.0


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_4xx_request_log_line_carries_its_oauth_error(make_server, log_format):
    server = make_server(OAUTH_LOG_FORMAT=log_format)
    client = register(server)
    refused = requests.post(
        server.url("/token"),
        data={"grant_type": "refresh_token", "refresh_token": "no-such-token", "client_id": client["client_id"]},
        timeout=10,
    )
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    unsupported = requests.post(server.url("/token"), data={"grant_type": "password"}, timeout=10)
    unknown = unsupported.json()["error"]
    challenged = verify(server, "not-a-token")  # answered in front of Flask
    assert challenged.status_code == 401
    ok = requests.get(server.url("/healthz"), timeout=10)
    server.stop()

    def line_of(response):
        request_id = response.headers["X-Request-Id"]
        if log_format == "json":
            return next(e for e in json_lines(server.output) if e.get("request_id") == request_id)
        return next(line for line in server.output.splitlines() if f"request_id={request_id}" in line)

    if log_format == "json":
        assert line_of(refused)["error"] == "invalid_grant"
        assert line_of(unsupported)["error"] == unknown
        assert line_of(challenged)["error"] == "invalid_token"
        assert "error" not in line_of(ok)
    else:
        assert " 400 " in line_of(refused) and " error=invalid_grant " in line_of(refused)
        assert f" error={unknown} " in line_of(unsupported)
        assert " 401 " in line_of(challenged) and " error=invalid_token " in line_of(challenged)
        assert "error=" not in line_of(ok)
