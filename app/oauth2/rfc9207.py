"""RFC 9207: the authorization server's issuer identifier on authorization responses."""

from __future__ import annotations

from authlib.oauth2.rfc9207 import IssuerParameter


class Issuer(IssuerParameter):
    """RFC 9207: `iss` on every authorization response, errors included."""

    def __init__(self, issuer: str):
        self.issuer = issuer

    def get_issuer(self) -> str:
        return self.issuer
