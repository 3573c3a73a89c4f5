"""The operator's tools for testing a deployment, as real `flask oauth …` processes
beside a real server: `issue-token` (a token for a smoke test, nothing else on stdout),
`inspect-token` (valid now, and if not why), `rotate-session-secret` (everyone signs in
again, tokens unaffected), and `check` (the deployment from the outside, through a TLS
proxy)."""

from __future__ import annotations

import base64
import json
import time

import pytest
import requests
from support.harness import PASSWORD, ROOT, Server, base_env, free_port, run_cli, seed_users
from support.jwt import jwt_parts
from support.oauth import Browser, auth_params, pkce_pair, refresh, register, tokens_for, verify
from support.proxies import tls_proxy
from support.tls import TEST_HOST


def test_issue_token_prints_only_a_token_that_works_and_dies_with_its_grant(server):
    client = register(server)
    issued = server.cli("issue-token", "--user", "alice", "--client", client["client_id"], "--ttl", "600")
    assert issued.returncode == 0, issued.stderr
    token = issued.stdout.strip()
    assert issued.stdout == token + "\n" and token.count(".") == 2  # a JWT, alone on stdout
    assert token not in issued.stderr  # the audit event names the grant, never the token
    assert "cli.issue-token" in issued.stderr

    answer = verify(server, token)
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Auth-Subject"] == "alice"
    assert answer.headers["X-Auth-Client-Id"] == client["client_id"]
    grants = json.loads(server.cli("list-tokens", "--json").stdout)
    (grant,) = [g for g in grants if g["client_id"] == client["client_id"]]
    assert grant["expires_at"] <= time.time() + 600 + 5  # the grant ends with the token

    assert server.cli("delete-token", grant["grant_id"]).returncode == 0
    assert verify(server, token).status_code == 401


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--user", "nobody"], "no user 'nobody'"),
        (["--scope", "admin"], "scope must be among"),
        (["--resource", "https://elsewhere.example/mcp"], "resource must be one of"),
        (["--ttl", "0"], "--ttl"),
    ],
)
def test_issue_token_refuses_what_it_cannot_issue_in_one_line(server, args, says):
    client = register(server)
    wanted = {"--user": "alice", "--client": client["client_id"]}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        wanted[flag] = value
    result = server.cli("issue-token", *[part for pair in wanted.items() for part in pair])
    assert result.returncode != 0 and result.stdout == ""
    assert says in result.stderr and "Traceback" not in result.stderr
    unknown = server.cli("issue-token", "--user", "alice", "--client", "no-such-client")
    assert unknown.returncode == 1 and "no client 'no-such-client'" in unknown.stderr


def test_inspect_token_says_why_a_token_is_not_valid(server):
    client, tokens = tokens_for(server)
    access = tokens["access_token"]

    def inspect(token: str, **env: str) -> tuple[int, dict]:
        result = run_cli(server.data_dir, "inspect-token", token, "--json", env={**server.env, **env})
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, json.loads(result.stdout)

    code, report = inspect(access)
    assert code == 0 and report["valid"] is True and report["reason"] is None
    assert report["claims"]["sub"] == "alice" and report["claims"]["client_id"] == client["client_id"]

    _, claims = jwt_parts(access)
    payload = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "mallory"}).encode()).rstrip(b"=").decode()
    head, _, signature = access.split(".")
    forged = f"{head}.{payload}.{signature}"  # our signature, another payload
    code, report = inspect(forged)
    assert code == 1 and report["reason"].startswith("signature") and report["claims"]["sub"] == "mallory"

    code, report = inspect(access, OAUTH_RESOURCES="https://other.example/mcp")
    assert code == 1 and report["reason"].startswith("audience")

    short = server.cli("issue-token", "--user", "alice", "--client", client["client_id"], "--ttl", "1").stdout.strip()
    time.sleep(2.1)
    code, report = inspect(short)
    assert code == 1 and report["reason"].startswith("expiry")

    assert refresh(server, client, tokens["refresh_token"]).status_code == 200  # rotation keeps the grant
    requests.post(server.url("/revoke"), data={"token": access, "client_id": client["client_id"]}, timeout=10)
    code, report = inspect(access)
    assert code == 1 and report["reason"].startswith("grant revoked")

    other, other_tokens = tokens_for(server)
    gone = requests.delete(
        other["registration_client_uri"],
        headers={"Authorization": f"Bearer {other['registration_access_token']}"},
        timeout=10,
    )
    assert gone.status_code == 204  # RFC 7592 §2.3
    code, report = inspect(other_tokens["access_token"])
    assert code == 1 and report["reason"].startswith("client gone")

    code, report = inspect("not-a-token")
    assert code == 1 and "not a JWT" in report["reason"]
    human = server.cli("inspect-token", access)
    assert human.returncode == 1 and human.stdout.startswith("not valid: grant revoked")


def test_rotate_session_secret_signs_everyone_out_but_keeps_tokens(make_server):
    server = make_server()
    browser = Browser(server)
    client, tokens = tokens_for(server, browser=browser)
    # Signed in: a second authorization needs no password.
    _, challenge = pkce_pair()
    again = browser.get(server.url("/authorize"), params=auth_params(client, challenge))
    assert again.status_code == 302 and "/login" not in again.headers["Location"]

    rotated = server.cli("rotate-session-secret")
    assert rotated.returncode == 0, rotated.stderr
    # The running server follows at once: the same browser is asked to sign in.
    after = browser.get(server.url("/authorize"), params=auth_params(client, challenge))
    assert after.status_code == 302 and "/login" in after.headers["Location"]
    assert verify(server, tokens["access_token"]).status_code == 200
    assert refresh(server, client, tokens["refresh_token"]).status_code == 200


def test_check_from_the_outside_behind_a_tls_proxy(tmp_path, upstream, test_ca):
    listen, oauth_port = free_port(), free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    server = Server(tmp_path / "data", tmp_path, PORT=str(oauth_port), OAUTH_ISSUER=issuer, OAUTH_UPSTREAM_URL=upstream)
    seed_users(server.data_dir, {"alice": PASSWORD})
    server.start()

    def check(*args: str, trust: bool = True, **env: str):
        environment = {**server.env, **env}
        environment["PYTHONPATH"] = f"{ROOT / 'tests' / 'support' / 'hosts'}:{ROOT}"
        environment["MCP_OAUTH_TEST_HOSTS"] = f"{TEST_HOST}=127.0.0.1"
        for name in ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
            environment.pop(name, None)
        if trust:  # the standard variable, as for metadata documents: the system's CAs and this one
            environment["SSL_CERT_FILE"] = str(test_ca.ca_file)
        result = run_cli(server.data_dir, "check", *args, env=environment)
        assert "Traceback" not in result.stderr, result.stderr
        return result.returncode, result.stdout.splitlines()

    try:
        with tls_proxy("caddy", "Caddyfile.gateway", tmp_path, listen, {8000: oauth_port}, test_ca):
            code, lines = check()
            assert code == 0, lines
            assert [line.split(":")[0] for line in lines] == [
                "ok   metadata",
                "ok   https",
                "ok   health",
                "ok   protected resource",
                "ok   upstream",
                "ok   clock",
            ]

            # An issuer the deployment does not serve (the operator's OAUTH_ISSUER is
            # not what the proxy publishes): named, and the command fails.
            code, lines = check(OAUTH_ISSUER=issuer + "/oauth")
            assert code == 1
            assert lines[0].startswith("FAIL metadata:") and "/.well-known/oauth-authorization-server/oauth" in lines[0]

            # A certificate this machine does not trust.
            code, lines = check(trust=False)
            assert code == 1 and lines[0].startswith("FAIL metadata: TLS to"), lines
    finally:
        server.stop()


def test_check_names_a_plain_http_public_issuer_and_an_unreachable_upstream(tmp_path):
    port = free_port()
    env = base_env(tmp_path / "data", OAUTH_ISSUER=f"http://127.0.0.1:{port}", OAUTH_UPSTREAM_URL="http://127.0.0.1:9/mcp")
    result = run_cli(tmp_path / "data", "check", "--issuer", "http://mcp.example.invalid", env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = dict(line.split(": ", 1) for line in result.stdout.splitlines())
    assert lines["FAIL https"].startswith("http://mcp.example.invalid is not https")
    assert "FAIL upstream" in lines and "unreachable" in lines["FAIL upstream"]
