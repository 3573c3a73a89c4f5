"""A bounded, seeded fuzzer: a few thousand hostile requests over every endpoint
(methods, content types, invalid UTF-8, repeated parameters, huge values, hostile
headers, NUL bytes and non-ASCII in any field, JSON nested a thousand deep), some with
real credentials so that the deeper paths run too. It fails on any
5xx or traceback, then checks that /healthz is 200 and every store file parses. It runs
on the file store and on PostgreSQL."""

from __future__ import annotations

import base64
import json
import os
import random
import socket
from urllib.parse import quote

import pytest
import requests
from support.harness import CHATGPT_CALLBACK
from support.oauth import Browser, csrf_of, pkce_pair, register, tokens_for

#: FUZZ_SEED=N explores other inputs; the suite always runs the same ones
SEED = int(os.environ.get("FUZZ_SEED", "20261123"))
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "2500"))

PATHS = [
    "/.well-known/oauth-authorization-server",
    "/.well-known/oauth-protected-resource",
    "/.well-known/oauth-protected-resource/mcp",
    "/register",
    "/register/{client_id}",
    "/authorize",
    "/token",
    "/revoke",
    "/introspect",
    "/jwks.json",
    "/verify",
    "/healthz",
    "/login",
    "/consent",
    "/mcp",
    "/mcp/echo",
    "/mcp/path/x",
    "/static/style.css",
    "/nope",
]
FIELDS = [
    "grant_type", "code", "code_verifier", "redirect_uri", "client_id", "client_secret", "refresh_token",
    "token", "token_type_hint", "scope", "resource", "state", "response_type", "code_challenge",
    "code_challenge_method", "request_id", "username", "password", "csrf_token", "decision", "prompt",
    "redirect_uris", "token_endpoint_auth_method", "client_name", "grant_types", "contacts",
]  # fmt: skip
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]
NON_ASCII = [
    "https://exämple.com/x", "https://xn--a.com/x", "https://a..b/x", "https://☃.net/c.json", "https://exa\u200bmple.com/x",
    "https://" + "a" * 70 + ".com/x", "https://example.com/\u2028", "ünknown", "Zoë ☃", "\ufeffmcp", "𝒳" * 40,
    "https://app.example/cb/ä", "http://127.0.0.1:1455/ä", "mcp\u00a0offline_access",
]  # fmt: skip


class Fuzzer:
    def __init__(self, server, rng: random.Random, credentials: dict[str, str]):
        self.server = server
        self.rng = rng
        self.credentials = credentials
        self.session = requests.Session()

    def value(self) -> str:
        rng = self.rng
        choice = rng.randrange(15)
        if choice == 12:  # a NUL inside an id, a token or a name (PostgreSQL's text cannot hold one)
            held = rng.choice([*self.credentials.values(), "alice", "https://app.example/doc.json", "x"])
            at = rng.randrange(len(held) + 1)
            return held[:at] + "\x00" + held[at:]
        if choice == 13:  # non-ASCII where ASCII is expected, and hosts IDNA refuses
            return rng.choice(NON_ASCII)
        if choice == 14:  # a credential or id with one character made non-ASCII
            held = rng.choice(list(self.credentials.values()))
            at = rng.randrange(len(held))
            return held[:at] + rng.choice("äé☃\u2028\ufeff𝒳") + held[at + 1 :]
        if choice == 0:
            return "x" * rng.choice([2001, 20_000, 300_000])
        if choice == 1:
            return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(1, 40)))
        if choice == 2:
            return rng.choice(list(self.credentials.values()))
        if choice == 3:
            return rng.choice(["", " ", "\x00", "\r\n", "%", "%zz", "..", "../..", "null", "[]", "{}", "-1"])
        if choice == 4:
            return rng.choice(["authorization_code", "refresh_token", "client_credentials", "code", "S256", "plain"])
        if choice == 5:
            return rng.choice(["https://evil.example/cb", CHATGPT_CALLBACK, "javascript:alert(1)", "http://[::1"])
        if choice == 6:
            return rng.choice(["mcp", "mcp offline_access", "admin", "mcp mcp", '"'])
        return "".join(rng.choice("abcdefghij0123456789-_.~%/?&=+") for _ in range(rng.randrange(0, 30)))

    def json_value(self, depth: int = 0) -> object:
        rng = self.rng
        kind = rng.randrange(7 if depth < 3 else 4)
        if kind == 0:
            return self.value()
        if kind == 1:
            return rng.choice([None, True, False, 0, -1, 1.5, 10**30])
        if kind == 2:
            return [self.value() for _ in range(rng.randrange(0, 12))]
        if kind == 3:
            return rng.choice([CHATGPT_CALLBACK, "none", "client_secret_basic"])
        if kind == 4:
            return [self.json_value(depth + 1) for _ in range(rng.randrange(0, 4))]
        return {rng.choice(FIELDS): self.json_value(depth + 1) for _ in range(rng.randrange(0, 6))}

    def deep_json(self) -> bytes:
        """JSON nested past any parser's recursion limit, bare or in a metadata object."""
        depth = self.rng.choice([40, 1100, 5000])
        opening, closing = self.rng.choice([("[", "]"), ('{"a":', "}")])
        nested = opening * depth + ("1" if opening != "[" else "") + closing * depth
        if self.rng.random() < 0.5:
            return nested.encode()
        return ('{"redirect_uris": ["' + CHATGPT_CALLBACK + '"], "client_name": ' + nested + "}").encode()

    def params(self) -> list[tuple[str, str]]:
        fields = [self.rng.choice(FIELDS) for _ in range(self.rng.randrange(0, 8))]
        return [(f, self.value()) for f in fields + fields[: self.rng.randrange(0, 2)]]  # some repeated

    def headers(self) -> dict[str, str]:
        rng = self.rng
        headers: dict[str, str] = {}
        for _ in range(rng.randrange(0, 4)):
            name = rng.choice(
                ["Authorization", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Uri", "X-Forwarded-Proto",
                 "Host", "Cookie", "Origin", "Accept", "Connection", "Forwarded", "Mcp-Session-Id", "Range"]
            )  # fmt: skip
            value = self.value()
            if name == "Authorization":
                basic = base64.b64encode(f"{self.value()}:{self.value()}".encode()).decode()  # NUL, non-ASCII too
                value = rng.choice(["Bearer ", "Basic ", "Bearer  ", "", "Digest "]) + rng.choice(
                    [value, self.credentials["access_token"], "Og==", "!!!", quote(value), basic]
                )
            headers[name] = value.replace("\r", "").replace("\n", "").encode("utf-8").decode("latin-1")[:8000]
        return headers

    def one(self) -> tuple[str, str, int]:
        rng = self.rng
        client_id = rng.choice([self.credentials["client_id"], "-x", "%2e%2e", "a%00b", "ex%C3%A4mple", "%FF"])
        path = rng.choice(PATHS).format(client_id=client_id)
        method = rng.choice(METHODS)
        query = self.params() if rng.random() < 0.6 else []
        body_kind = rng.randrange(6)
        kwargs: dict = {"params": query, "headers": self.headers(), "allow_redirects": False, "timeout": 20}
        if body_kind == 0:
            kwargs["data"] = self.params()
        elif body_kind == 1:
            kwargs["data"] = json.dumps(self.json_value()).encode()
            kwargs["headers"]["Content-Type"] = rng.choice(["application/json", "text/plain", "application/json; x"])
        elif body_kind == 5:
            kwargs["data"] = self.deep_json()
            kwargs["headers"]["Content-Type"] = "application/json"
        elif body_kind == 2:
            kwargs["data"] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))  # invalid UTF-8
            kwargs["headers"]["Content-Type"] = rng.choice(
                ["application/json", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"]
            )
        try:
            response = self.session.request(method, self.server.base + path, **kwargs)
        except (ValueError, UnicodeError):
            return method, path, 0  # refused by the client library itself: never sent
        return method, path, response.status_code

    def raw(self) -> int:
        """A request line or header with bytes no HTTP library would send."""
        rng = self.rng
        path = rng.choice(["/token", "/mcp/x", "/verify", "/authorize", "/register"])
        junk = bytes(rng.randrange(0x80, 0x100) for _ in range(5))
        line = rng.choice(
            [
                b"GET " + path.encode() + b"?q=" + junk + b" HTTP/1.1\r\n",
                b"GET " + path.encode() + b"/%C3%28%ff HTTP/1.1\r\n",
                b"POST " + path.encode() + b" HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 12\r\n",
                b"GET " + path.encode() + b" HTTP/1.1\r\nX-Forwarded-Uri: " + junk + b"\r\n",
            ]
        )
        body = b"a=%ff&b=" + junk if b"POST" in line else b""
        request = line + b"Host: 127.0.0.1\r\nConnection: close\r\n\r\n" + body
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=20) as sock:
            sock.sendall(request)
            data = sock.recv(200)
        return int(data.split()[1]) if data.startswith(b"HTTP/") else 0


@pytest.mark.parametrize("store", ["file", "postgresql"])
def test_fuzz_every_endpoint(make_server, upstream, request, store):
    """Either store: a client can make a request fail, never make the server fail."""
    backend = {"OAUTH_STORE": request.getfixturevalue("postgres_url")} if store == "postgresql" else {}
    server = make_server(OAUTH_UPSTREAM_URL=upstream, OAUTH_REGISTRATION_RATE="0", OAUTH_MAX_CLIENTS="300", **backend)
    client, tokens = tokens_for(server)
    confidential = register(server, token_endpoint_auth_method="client_secret_post", redirect_uris=[CHATGPT_CALLBACK])
    browser = Browser(server)
    verifier, challenge = pkce_pair()
    credentials = {
        "client_id": client["client_id"],
        "confidential_id": confidential["client_id"],
        "client_secret": confidential["client_secret"],
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "registration_access_token": client["registration_access_token"],
        "csrf_token": csrf_of(browser.get(server.url("/login")).text),
        "code_verifier": verifier,
        "code_challenge": challenge,
    }
    fuzzer = Fuzzer(server, random.Random(SEED), credentials)
    fuzzer.session.cookies = browser.session.cookies  # the login session, for the forms
    failures = []
    for i in range(REQUESTS):
        method, path, status = fuzzer.one() if i % 25 else ("RAW", "", fuzzer.raw())
        if status >= 500:
            failures.append((method, path, status))
    assert not failures, failures[:20]
    log = server.output
    assert "Traceback" not in log and "unhandled" not in log, log[-3000:]
    assert requests.get(server.url("/healthz"), timeout=10).status_code == 200
    for path in server.data_dir.glob("*.json"):
        assert "version" in json.loads(path.read_text()), path
