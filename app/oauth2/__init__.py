"""OAuth 2.1 on Authlib, laid out as Authlib lays out the standards.

- `server.py`: the `AuthorizationServer`; registers every grant and endpoint.
- `grants.py`: authorization code (+ PKCE) and refresh token, with their state.
- `codes.py`: authorization codes, in memory or in the database instances share.
- `tokens.py`: RFC 9068 access tokens, issued and verified.
- `requests.py`: requests built from a stored authorization or a WSGI environ.
- one module per extension or endpoint standard: `rfc7009` (revocation),
  `rfc7591`/`rfc7592` (registration), `rfc7636` (PKCE), `rfc7662` (introspection),
  `rfc8707` (resource indicators), `rfc9207` (`iss`), `rfc9449` (DPoP).
"""

from .server import OAuthServer
from .tokens import AccessTokenVerifier, InvalidAccessToken

__all__ = ["AccessTokenVerifier", "InvalidAccessToken", "OAuthServer"]
