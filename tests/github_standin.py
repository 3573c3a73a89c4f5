"""A stand-in GitHub for the tests: `python github_standin.py PORT`.

What mcp-oauth's GitHub login uses of GitHub, over real HTTP, as GitHub documents it:
- `GET /login/oauth/authorize`: logs in the user the test chose (POST /_control) and
  redirects back with `code` and `state`; PKCE S256 is required here (GitHub takes
  it; requiring it proves we send it).
- `POST /login/oauth/access_token`: `client_id` and `client_secret` as form
  parameters, the code's `redirect_uri` and `code_verifier` checked; also
  `grant_type=refresh_token`. The answer is JSON when the request accepts
  `application/json`, else form-encoded (GitHub's default); errors come, as at
  GitHub, with status 200 and an `error` field. `app: "oauth"` issues tokens that never
  expire; `app: "github"` (a GitHub App with expiring user tokens) issues tokens with
  `expires_in`, a `refresh_token` and `refresh_token_expires_in`, the refresh token
  used once.
- `GET /user`, `GET /user/emails`, `GET /user/memberships/orgs/{org}` (403 unless the
  token's scopes include `read:org`, as for an OAuth App; 404 when not a member).
`mode: "deny"` answers the authorization with `access_denied`. GET /_stats tells what
was asked (the scopes, the token requests, the API paths).
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import sys
import threading
import time
from urllib.parse import urlencode

from flask import Flask, Response, abort, jsonify, redirect, request
from waitress import serve

CLIENT_ID = "github-client-id"
CLIENT_SECRET = "github-client-secret"

app = Flask(__name__)
lock = threading.Lock()
state: dict = {
    "user": {"id": 1, "login": "octocat", "name": "", "emails": [], "orgs": {}},
    "app": "oauth",
    "mode": "ok",
    "codes": {},
    "tokens": {},
    "refresh_tokens": {},
    "stats": {"scopes": [], "token_requests": 0, "accept": [], "api": []},
}


@app.post("/_control")
def control():
    with lock:
        state.update(request.get_json())
    return jsonify(ok=True)


@app.get("/_stats")
def stats():
    return jsonify(state["stats"])


@app.get("/login/oauth/authorize")
def authorize():
    args = request.args
    target = args["redirect_uri"]
    if args.get("client_id") != CLIENT_ID:
        abort(404)
    if state["mode"] == "deny":
        return redirect(f"{target}?{urlencode({'error': 'access_denied', 'state': args['state']})}")
    if args.get("code_challenge_method") != "S256" or not args.get("code_challenge") or not args.get("state"):
        abort(400, "PKCE S256 and state are required here")
    code = secrets.token_hex(10)
    with lock:
        state["stats"]["scopes"].append(args.get("scope", ""))
        state["codes"][code] = {
            "redirect_uri": target,
            "challenge": args["code_challenge"],
            "scope": args.get("scope", ""),
            "user": dict(state["user"]),
        }
    return redirect(f"{target}?{urlencode({'code': code, 'state': args['state']})}")


def answer(body: dict) -> Response:
    """JSON when asked for, else GitHub's default: form-encoded (status 200 either way)."""
    if "application/json" in request.headers.get("Accept", ""):
        return jsonify(body)
    return Response(urlencode(body), content_type="application/x-www-form-urlencoded")


def issue(grant: dict) -> dict:
    token = "gho_" + secrets.token_hex(16)
    body = {"access_token": token, "token_type": "bearer", "scope": grant["scope"].replace(" ", ",")}
    expires_at = None
    if state["app"] == "github":
        refresh_token = "ghr_" + secrets.token_hex(16)
        body |= {"expires_in": 28800, "refresh_token": refresh_token, "refresh_token_expires_in": 15897600}
        expires_at = time.time() + 28800
        state["refresh_tokens"][refresh_token] = grant
    state["tokens"][token] = {**grant, "expires_at": expires_at}
    return body


@app.post("/login/oauth/access_token")
def access_token():
    form = request.form
    with lock:
        state["stats"]["token_requests"] += 1
        state["stats"]["accept"].append(request.headers.get("Accept", ""))
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return answer({"error": "incorrect_client_credentials", "error_description": "wrong client"})
        if form.get("grant_type") == "refresh_token":
            grant = state["refresh_tokens"].pop(form.get("refresh_token", ""), None)
            if grant is None:
                return answer({"error": "bad_refresh_token", "error_description": "unknown or used"})
            return answer(issue(grant))
        grant = state["codes"].pop(form.get("code", ""), None)
        if grant is None:
            return answer({"error": "bad_verification_code", "error_description": "unknown or used"})
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge != grant["challenge"] or form.get("redirect_uri") != grant["redirect_uri"]:
            return answer({"error": "bad_verification_code", "error_description": "PKCE or redirect_uri"})
        return answer(issue(grant))


def token_grant() -> dict:
    """The grant of the request's token (`Bearer` or GitHub's `token` scheme), or 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    grant = state["tokens"].get(token) if scheme.lower() in ("bearer", "token") else None
    if grant is None or (grant["expires_at"] is not None and grant["expires_at"] < time.time()):
        abort(401)
    state["stats"]["api"].append(request.path)
    return grant


@app.get("/user")
def user():
    who = token_grant()["user"]
    return jsonify(id=who["id"], login=who["login"], name=who.get("name") or None, type="User")


@app.get("/user/emails")
def emails():
    return jsonify(token_grant()["user"]["emails"])


@app.get("/user/memberships/orgs/<org>")
def membership(org: str):
    grant = token_grant()
    if state["app"] == "oauth" and "read:org" not in grant["scope"].split():
        return jsonify(message="Resource not accessible by integration"), 403
    member = {k.lower(): v for k, v in grant["user"]["orgs"].items()}.get(org.lower())
    if member is None:
        return jsonify(message="Not Found"), 404
    return jsonify(state=member, role="member", organization={"login": org}, user={"login": grant["user"]["login"]})


if __name__ == "__main__":
    serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=4)
