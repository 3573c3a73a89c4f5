"""/token, /revoke, /introspect and /verify: code retry window and replay, refresh
rotation with its grace window, invalid_client, revocation, introspection."""

from __future__ import annotations

import base64
import json
import secrets
import threading

import requests
from support.harness import CHATGPT_CALLBACK
from support.jwt import jwt_parts
from support.oauth import exchange, get_code, refresh, register, tokens_for, verify
from support.tokens import concurrent_refreshes


def test_same_code_twice_within_window_gets_same_response(server):
    client = register(server, redirect_uris=[CHATGPT_CALLBACK])
    code, verifier, _ = get_code(server, client)
    first = exchange(server, client, code, verifier)
    second = exchange(server, client, code, verifier)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert verify(server, first.json()["access_token"]).status_code == 200


def test_concurrent_redemptions_get_one_grant(server):
    client = register(server)
    code, verifier, _ = get_code(server, client)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(exchange(server, client, code, verifier))) for _ in range(4)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    bodies = {r.json()["access_token"] for r in results if r.status_code == 200}
    assert len(bodies) == 1 and all(r.status_code == 200 for r in results)


def test_code_replay_with_other_verifier_revokes_what_it_issued(server):
    client = register(server)
    code, verifier, _ = get_code(server, client)
    tokens = exchange(server, client, code, verifier).json()
    replay = exchange(server, client, code, "x" * 50)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert verify(server, tokens["access_token"]).status_code == 401
    assert refresh(server, client, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_code_of_another_client_is_refused(server):
    a, b = register(server), register(server)
    code, verifier, _ = get_code(server, a)
    response = exchange(server, b, code, verifier, redirect_uri=a["redirect_uris"][0])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_unknown_or_deleted_client_gets_401_invalid_client(server):
    client, tokens = tokens_for(server)
    requests.delete(
        client["registration_client_uri"], headers={"Authorization": f"Bearer {client['registration_access_token']}"}
    )
    response = refresh(server, client, tokens["refresh_token"])
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    unknown = requests.post(
        server.url("/token"),
        data={
            "grant_type": "authorization_code",
            "code": "x",
            "client_id": "never-registered",
            "code_verifier": "y" * 43,
        },
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"
    assert verify(server, tokens["access_token"]).status_code == 401


def test_confidential_client_must_authenticate(server):
    client = register(server, token_endpoint_auth_method="client_secret_basic")
    code, verifier, _ = get_code(server, client)
    no_secret = exchange(server, client, code, verifier)
    assert no_secret.status_code == 401 and no_secret.json()["error"] == "invalid_client"
    wrong = requests.post(
        server.url("/token"),
        auth=(client["client_id"], "wrong"),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": client["redirect_uris"][0],
        },
    )
    assert wrong.status_code == 401
    ok = requests.post(
        server.url("/token"),
        auth=(client["client_id"], client["client_secret"]),
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": client["redirect_uris"][0],
        },
    )
    assert ok.status_code == 200, ok.text


def test_bad_token_requests_get_json_errors(server):
    for data, error in (({"grant_type": "password"}, "unsupported_grant_type"), ({}, "unsupported_grant_type")):
        response = requests.post(server.url("/token"), data=data)
        assert response.status_code == 400 and response.json()["error"] == error
    client = register(server)
    missing = requests.post(
        server.url("/token"), data={"grant_type": "refresh_token", "client_id": client["client_id"]}
    )
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    unknown = refresh(server, client, "not-a-token")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
    get = requests.get(server.url("/token"))
    assert get.status_code == 405 and get.json()["error"] == "invalid_request"


def test_concurrent_refreshes_both_succeed_inside_the_grace_window(server):
    client, tokens = tokens_for(server)
    results = concurrent_refreshes(server, client, tokens["refresh_token"])
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    assert results[0].json()["refresh_token"] != results[1].json()["refresh_token"]


def test_a_refresh_token_names_its_grant_but_the_name_alone_proves_nothing(server):
    """The grant id in a refresh token is public (every access token carries it): a
    token made of it and any other secret is refused, and revokes nothing."""
    client, tokens = tokens_for(server)
    grant_id = jwt_parts(tokens["access_token"])[1]["grant_id"]
    named, _, secret = tokens["refresh_token"].partition(".")
    assert named == grant_id and len(secret) >= 43  # 256 random bits
    forged = f"{grant_id}.{secrets.token_urlsafe(32)}"
    refused = refresh(server, client, forged)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    revoke = requests.post(server.url("/revoke"), data={"token": forged, "client_id": client["client_id"]})
    assert revoke.status_code == 200
    assert verify(server, tokens["access_token"]).status_code == 200
    assert refresh(server, client, tokens["refresh_token"]).status_code == 200


def test_refresh_token_of_another_client_is_refused(server):
    a, tokens = tokens_for(server)
    b = register(server)
    response = refresh(server, b, tokens["refresh_token"])
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant"


def test_revoke_refresh_token_revokes_grant(server):
    client, tokens = tokens_for(server)
    response = requests.post(
        server.url("/revoke"), data={"token": tokens["refresh_token"], "client_id": client["client_id"]}
    )
    assert response.status_code == 200
    assert verify(server, tokens["access_token"]).status_code == 401
    assert refresh(server, client, tokens["refresh_token"]).status_code == 400
    again = requests.post(
        server.url("/revoke"), data={"token": tokens["refresh_token"], "client_id": client["client_id"]}
    )
    assert again.status_code == 200  # RFC 7009: unknown tokens are not an error


def test_revoke_access_token(server):
    client, tokens = tokens_for(server)
    response = requests.post(
        server.url("/revoke"),
        data={"token": tokens["access_token"], "token_type_hint": "access_token", "client_id": client["client_id"]},
    )
    assert response.status_code == 200
    assert verify(server, tokens["access_token"]).status_code == 401


def test_verify_refusals(server):
    _, tokens = tokens_for(server)
    missing = verify(server, None)
    assert missing.status_code == 401
    challenge = missing.headers["WWW-Authenticate"]
    metadata_url = f"{server.issuer}/.well-known/oauth-protected-resource/mcp"
    assert challenge == f'Bearer resource_metadata="{metadata_url}"'  # RFC 6750 §3.1: no error code
    assert verify(server, "abc.def.ghi").status_code == 401
    header, payload, signature = tokens["access_token"].split(".")
    tampered = f"{header}.{payload[:-2]}AA.{signature}"
    assert verify(server, tampered).status_code == 401
    short = verify(server, tokens["access_token"], scope="admin")
    assert short.status_code == 403
    assert short.headers["WWW-Authenticate"].startswith(
        f'Bearer error="insufficient_scope", resource_metadata="{metadata_url}", scope="admin", error_description='
    )
    assert verify(server, tokens["access_token"], scope="mcp").status_code == 200
    # A request that needs scopes names them in its 401 too, with or without a token.
    needs = verify(server, None, scope="mcp admin")
    assert needs.headers["WWW-Authenticate"] == f'Bearer resource_metadata="{metadata_url}", scope="mcp admin"'
    assert 'scope="mcp admin"' in verify(server, "abc.def.ghi", scope="mcp admin").headers["WWW-Authenticate"]


def test_tokens_signed_with_our_key_are_refused_unless_they_are_our_access_tokens(server):
    """The signature alone is not enough (RFC 9068 §4): a JWT signed with the
    server's own key is refused unless its `typ` is `at+jwt` and its `iss` is us."""
    from joserfc import jwt
    from support.jwt import jwt_parts

    from app.keys import KeyManager
    from app.storage import PersistentStore

    _, tokens = tokens_for(server)
    header, claims = jwt_parts(tokens["access_token"])
    key = KeyManager(PersistentStore(server.data_dir)).current

    def signed(header_changes: dict, claim_changes: dict) -> str:
        return jwt.encode({**header, **header_changes}, {**claims, **claim_changes}, key)

    assert verify(server, signed({}, {"jti": "resigned"})).status_code == 200  # the key is ours
    for header_changes, claim_changes in (
        ({"typ": "JWT"}, {}),  # an ID token or any other JWT of ours
        ({}, {"iss": "https://other.example"}),
        ({}, {"iss": server.issuer + "/"}),
    ):
        refused = verify(server, signed(header_changes, claim_changes))
        assert refused.status_code == 401, (header_changes, claim_changes)
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


def test_a_token_whose_signature_is_not_ours_is_refused_whatever_it_claims(server):
    """The signature is what makes a token ours (RFC 9068 §4): the live token's very
    header and claims, signed by another key under our `kid`, with its payload altered
    under our signature, or unsigned (`alg: none`), are each refused as invalid_token."""
    from joserfc import jwt
    from joserfc.jwk import RSAKey

    _, tokens = tokens_for(server)
    genuine = tokens["access_token"]
    header, claims = jwt_parts(genuine)
    assert verify(server, genuine).status_code == 200

    def b64(data: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    stranger = RSAKey.generate_key(2048, parameters={"kid": header["kid"]})
    signature = genuine.rsplit(".", 1)[1]
    forged = {
        "another key under our kid": jwt.encode(header, claims, stranger),
        "payload altered under our signature": f"{b64(header)}.{b64({**claims, 'scope': 'mcp admin'})}.{signature}",
        "unsigned (alg none)": f"{b64({**header, 'alg': 'none'})}.{b64(claims)}.",
    }
    for what, token in forged.items():
        refused = verify(server, token)
        assert refused.status_code == 401, what
        assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"], what
    assert verify(server, genuine).status_code == 200  # the genuine one still passes


def test_confidential_client_may_post_its_secret(server):
    client = register(server, token_endpoint_auth_method="client_secret_basic")
    code, verifier, _ = get_code(server, client)
    response = exchange(server, client, code, verifier, client_secret=client["client_secret"])
    assert response.status_code == 200, response.text


def test_refresh_with_a_foreign_resource_is_invalid_target(server):
    client, tokens = tokens_for(server)
    response = refresh(server, client, tokens["refresh_token"], resource="https://elsewhere.example/mcp")
    assert response.status_code == 400 and response.json()["error"] == "invalid_target"
    assert refresh(server, client, tokens["refresh_token"], resource=server.issuer + "/mcp").status_code == 200
