"""A real, small OpenID Connect provider for the tests: `python oidc_idp.py PORT`.

It serves discovery (Google style at the root, Entra ID style under
`/<tenant>/v2.0`), a JWKS, an authorization endpoint that logs in whoever the test
chose (POST /_control), and a token endpoint that checks the client secret and the
PKCE verifier and returns an RS256-signed ID token. `mode` makes it misbehave on
purpose: a bad signature, a wrong `aud`, `iss` or `nonce`, an expired token, or an
`access_denied` answer; `root_discovery_issuer` makes the discovery document at the
root name another issuer. GET /_stats counts token requests.

For the upstream-token tests it also issues refresh tokens and access tokens that live
`expires_in` seconds (POST /_control), refreshes them (`refresh_mode: "fail"` refuses
with `invalid_grant`), and reports the latest access token it issued and what the last
authorization request asked for (`scope`, `access_type`, `prompt`).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import threading
import time
from urllib.parse import urlencode

from flask import Flask, abort, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey
from waitress import serve

MULTI_TENANT = {"common", "organizations", "consumers"}

app = Flask(__name__)
signing_key = RSAKey.generate_key(2048, parameters={"kid": "idp-key", "alg": "RS256", "use": "sig"}, private=True)
rogue_key = RSAKey.generate_key(2048, parameters={"kid": "idp-key", "alg": "RS256", "use": "sig"}, private=True)
state: dict = {
    "user": {"sub": "user-1"},
    "mode": "ok",
    "token_requests": 0,
    "codes": {},
    "refresh_tokens": {},
    "refreshes": 0,
    "last_access_token": None,
    "last_authorize": {},
    "issued": [],
}
lock = threading.Lock()


def base() -> str:
    return request.host_url.rstrip("/")


def discovery(issuer: str, prefix: str = "") -> dict:
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base()}{prefix}/authorize",
        "token_endpoint": f"{base()}{prefix}/token",
        "jwks_uri": f"{base()}/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
    }


@app.get("/.well-known/openid-configuration")
def google_discovery():
    # `root_discovery_issuer`: a document naming another issuer than the URL it is at.
    return jsonify(discovery(state.get("root_discovery_issuer") or base()))


@app.get("/<tenant>/v2.0/.well-known/openid-configuration")
def azure_discovery(tenant: str):
    issuer = f"{base()}/{{tenantid}}/v2.0" if tenant in MULTI_TENANT else f"{base()}/{tenant}/v2.0"
    # A discovery document that names another tenant (a misconfigured or hostile one).
    return jsonify(discovery(state.get("discovery_issuer") or issuer, f"/{tenant}/oauth2/v2.0"))


@app.get("/jwks")
def jwks():
    return jsonify(KeySet([signing_key]).as_dict(private=False))


@app.post("/_control")
def control():
    with lock:
        state.update(request.get_json())
    return jsonify(ok=True)


@app.get("/_stats")
def stats():
    return jsonify(
        token_requests=state["token_requests"],
        refreshes=state["refreshes"],
        last_access_token=state["last_access_token"],
        last_authorize=state["last_authorize"],
        issued=state["issued"],
    )


def new_tokens(client_id: str) -> dict:
    """An access token living `expires_in` seconds, and a refresh token for it."""
    access, refresh = "up-at-" + secrets.token_urlsafe(16), "up-rt-" + secrets.token_urlsafe(16)
    state["refresh_tokens"][refresh] = client_id
    state["last_access_token"] = access
    state["issued"] += [access, refresh]
    return {
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": state.get("expires_in") or 3600,
        "refresh_token": refresh,
    }


def refresh_grant():
    """RFC 6749 §6, the refresh token rotated."""
    client_id = request.form.get("client_id") or (request.authorization.username if request.authorization else None)
    secret = request.form.get("client_secret") or (request.authorization.password if request.authorization else None)
    if secret != state.get("client_secret", "idp-secret"):
        return jsonify(error="invalid_client"), 401
    with lock:
        owner = state["refresh_tokens"].pop(request.form.get("refresh_token", ""), None)
        if owner is None or owner != client_id or state.get("refresh_mode") == "fail":
            return jsonify(error="invalid_grant"), 400
        state["refreshes"] += 1
        return jsonify(new_tokens(client_id))


@app.get("/authorize")
@app.get("/<tenant>/oauth2/v2.0/authorize")
def authorize(tenant: str | None = None):
    args = request.args
    target = args["redirect_uri"]
    if state["mode"] == "deny":
        return redirect(f"{target}?{urlencode({'error': 'access_denied', 'state': args['state']})}")
    if args.get("code_challenge_method") != "S256" or not args.get("code_challenge") or not args.get("nonce"):
        abort(400, "PKCE S256 and nonce are required")
    code = secrets.token_urlsafe(16)
    with lock:
        state["last_authorize"] = {k: args.get(k) for k in ("scope", "access_type", "prompt")}
        state["codes"][code] = {
            "client_id": args["client_id"],
            "redirect_uri": target,
            "nonce": args["nonce"],
            "challenge": args["code_challenge"],
            "tenant": tenant,
        }
    return redirect(f"{target}?{urlencode({'code': code, 'state': args['state']})}")


@app.post("/token")
@app.post("/<tenant>/oauth2/v2.0/token")
def token(tenant: str | None = None):
    if request.form.get("grant_type") == "refresh_token":
        return refresh_grant()
    with lock:
        state["token_requests"] += 1
        grant = state["codes"].pop(request.form.get("code", ""), None)
    if grant is None:
        return jsonify(error="invalid_grant"), 400
    client_id = request.form.get("client_id") or (request.authorization.username if request.authorization else None)
    secret = request.form.get("client_secret") or (request.authorization.password if request.authorization else None)
    if client_id != grant["client_id"] or secret != state.get("client_secret", "idp-secret"):
        return jsonify(error="invalid_client"), 401
    verifier = request.form.get("code_verifier", "")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    if challenge != grant["challenge"] or request.form.get("redirect_uri") != grant["redirect_uri"]:
        return jsonify(error="invalid_grant"), 400

    user = dict(state["user"])
    mode = state["mode"]
    now = int(time.time())
    issuer = f"{base()}/{user.get('tid', grant['tenant'])}/v2.0" if grant["tenant"] else base()
    claims = {
        "iss": "https://evil.example" if mode == "wrong_iss" else state.get("issuer_override") or issuer,
        "aud": "someone-else" if mode == "wrong_aud" else client_id,
        "iat": now,
        "exp": now - 600 if mode == "expired" else now + 600,
        "nonce": "not-the-nonce" if mode == "wrong_nonce" else grant["nonce"],
        **user,
    }
    key = rogue_key if mode == "bad_signature" else signing_key
    id_token = jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)
    with lock:
        return jsonify(id_token=id_token, **new_tokens(client_id))


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4)
