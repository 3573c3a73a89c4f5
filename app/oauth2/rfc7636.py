"""PKCE (RFC 7636) as OAuth 2.1 and the MCP specification require it."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge


class S256CodeChallenge(CodeChallenge):
    """PKCE as OAuth 2.1 and the MCP specification require: a `code_challenge` on
    every authorization request, method `S256` only (`plain` is refused)."""

    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: send code_challenge with code_challenge_method=S256.")
        method = data.get("code_challenge_method")
        if method != "S256":
            raise InvalidRequestError("code_challenge_method must be S256 ('plain' is not allowed).")
        super().validate_code_challenge(grant, redirect_uri)
