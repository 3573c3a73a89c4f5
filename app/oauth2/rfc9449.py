"""RFC 9449 DPoP: sender-constrained tokens. A client that sends a `DPoP` proof to /token
gets an access token bound to the proof's key (`cnf.jkt`, §6.1) and, for a public
client, a refresh token bound to it too (§5); /verify and the gateway then take that
token only as `Authorization: DPoP <token>` with a fresh proof of the same key for
that very request (§7). A token stolen from a log or a proxy is useless without the
private key.

Authlib 1.9.9 has no DPoP support (its own source says so), so the proof is checked
here with joserfc, our one JOSE library; the grants (grants.py) call
`bind_token_request`. Server nonces (§8) are optional and not used: `iat` within `WINDOW` seconds and
a `jti` seen once (in the shared state, so across instances on PostgreSQL) bound
replay instead (§11.1).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import warnings
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import InvalidGrantError, OAuth2Error
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import JWKRegistry
from joserfc.jws import JWSRegistry

from ..models import Grant
from ..repositories import DPOP_JKT
from ..storage.base import JSONValue, SharedState

#: RFC 9449 §5.1 metadata `dpop_signing_alg_values_supported`: asymmetric only (§4.3
#: point 5: never `none`, never a MAC), and the key type each takes. `Ed25519` is RFC
#: 9864's fully specified name for EdDSA with that curve, the one oauth4webapi signs with.
ALGORITHMS = ("ES256", "RS256", "EdDSA", "Ed25519")
KEY_TYPES = {
    "ES256": ("EC", ("P-256",)),
    "RS256": ("RSA", ()),
    "EdDSA": ("OKP", ("Ed25519", "Ed448")),
    "Ed25519": ("OKP", ("Ed25519",)),
}
#: RFC 7518 §3.3: an RSA key for RS256 has at least 2048 bits
MIN_RSA_BITS = 2048
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6): §4.3 point 7
PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
#: `iat` at most this many seconds from now, either way (§11.1): the contract's 5 minutes
WINDOW = 300
#: a proof is a few hundred bytes (an RSA 4096 key in its header: about 1.5 KiB)
MAX_PROOF = 8 * 1024
#: proofs remembered at most in process (only requests with a valid token or grant get
#: in: the `jti` is recorded last); a database keeps them until they expire
MAX_SEEN = 100_000
REQUIRED_CLAIMS = ("jti", "htm", "htu", "iat")


class _ProofRegistry(JWSRegistry):
    """joserfc's JWS rules with room for a key in the header: its default 512 bytes
    would refuse an RSA `jwk` (§4.2 puts the public key there)."""

    max_header_length = 4 * 1024
    max_payload_length = 4 * 1024


REGISTRY = _ProofRegistry(algorithms=list(ALGORITHMS))

# joserfc marks "EdDSA" deprecated in favour of RFC 9864's fully specified names; the
# contract and many clients still name it "EdDSA", so it stays, unwarned.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


class InvalidProof(Exception):
    """The request's DPoP proof does not pass; the message says why (never the proof)."""


class InvalidDPoPProofError(OAuth2Error):
    """RFC 9449 §5: a bad proof at the token endpoint."""

    error = "invalid_dpop_proof"


@dataclass(frozen=True)
class Proof:
    """A proof that passed: its key's RFC 7638 thumbprint and its `jti`."""

    jkt: str
    jti: str


def access_token_hash(token: str) -> str:
    """RFC 9449 §4.2 `ath`: base64url (no padding) of the SHA-256 of the token."""
    digest = hashlib.sha256(token.encode("ascii", "surrogateescape")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normal_path(path: str) -> str:
    """RFC 3986 §6.2.2.2: percent-encodings in upper case, unreserved ones decoded;
    §6.2.3: an empty path is `/`."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "%" and i + 3 <= len(path):
            code = path[i + 1 : i + 3]
            try:
                char = chr(int(code, 16))
            except ValueError:
                out.append(path[i])
                i += 1
                continue
            out.append(char if char in _UNRESERVED else "%" + code.upper())
            i += 3
        else:
            out.append(path[i])
            i += 1
    return "".join(out) or "/"


def normal_url(url: str) -> tuple[str, str, int, str] | None:
    """What §4.3 point 9 compares of a URL: scheme, host, port and path, normalised
    (RFC 3986 §6.2.2 and §6.2.3: case, default port, percent-encoding, empty path);
    the query and fragment are left out. None for what is no http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    return scheme, parts.hostname.lower(), port or (443 if scheme == "https" else 80), _normal_path(parts.path)


def _header_and_claims(value: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The proof's JOSE header and claims, unverified (the key is in the header)."""
    try:
        compact = jws.extract_compact(value.encode("ascii"), registry=REGISTRY)
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, TypeError, UnicodeError):
        raise InvalidProof("The DPoP proof is not a JWT.") from None
    if not isinstance(claims, dict):
        raise InvalidProof("The DPoP proof's claims are not a JSON object.")
    return dict(compact.headers()), claims


def _public_key(header: dict[str, Any]) -> Any:
    """The header's `jwk`, a public key of the type its `alg` takes (§4.3 points 5-7)."""
    alg, jwk = header.get("alg"), header.get("jwk")
    if alg not in ALGORITHMS:
        raise InvalidProof(f"The DPoP proof's alg must be one of: {' '.join(ALGORITHMS)}.")
    if not isinstance(jwk, dict):
        raise InvalidProof("The DPoP proof's header has no jwk.")
    if PRIVATE_MEMBERS & jwk.keys():
        raise InvalidProof("The DPoP proof's jwk must be a public key, not a private one.")
    kty, curves = KEY_TYPES[alg]
    if jwk.get("kty") != kty or (curves and jwk.get("crv") not in curves):
        raise InvalidProof(f"The DPoP proof's jwk is not a key for {alg}.")
    try:
        key = JWKRegistry.import_key(jwk)
    except (JoseError, ValueError, TypeError):
        raise InvalidProof("The DPoP proof's jwk is not a valid key.") from None
    if kty == "RSA" and getattr(key.raw_value, "key_size", 0) < MIN_RSA_BITS:
        raise InvalidProof(f"The DPoP proof's RSA key is shorter than {MIN_RSA_BITS} bits.")
    return key


class ProofChecker:
    """RFC 9449 §4.3: checks a `DPoP` header's proof for one request; the `jti`s seen,
    each until its proof could no longer pass (`iat` + `WINDOW`), in the shared state."""

    KIND = "dpop_jti"

    def __init__(self, state: SharedState):
        self.state = state
        state.bound(self.KIND, MAX_SEEN)

    def check(
        self, value: str | None, method: str, url: str, access_token: str | None = None, jkt: str | None = None
    ) -> Proof:
        """The proof in `value` (the `DPoP` header) for `method` at `url`; with an
        `access_token` (a protected resource, §7), its `ath` and, with `jkt`, the key
        the token is bound to. Raises InvalidProof; the `jti` counts as used only
        when everything else passed."""
        if not value:
            raise InvalidProof("A DPoP proof (the DPoP header) is required.")
        # §4.3 point 1: one proof; repeated header lines arrive joined by commas, and a
        # compact JWS has none.
        if "," in value or len(value) > MAX_PROOF:
            raise InvalidProof("Send exactly one DPoP proof.")
        header, claims = _header_and_claims(value.strip())
        if header.get("typ") != "dpop+jwt":
            raise InvalidProof("The DPoP proof's typ must be dpop+jwt.")
        key = _public_key(header)
        try:
            jws.deserialize_compact(value.strip(), key, algorithms=[header["alg"]], registry=REGISTRY)
        except (JoseError, ValueError, TypeError):
            raise InvalidProof("The DPoP proof's signature does not verify with its jwk.") from None
        for name in REQUIRED_CLAIMS:
            if name not in claims:
                raise InvalidProof(f"The DPoP proof has no {name} claim.")
        jti, iat = claims["jti"], claims["iat"]
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            raise InvalidProof("The DPoP proof's jti must be a short string.")
        if claims["htm"] != method:
            raise InvalidProof(f"The DPoP proof is for another method (htm), not {method}.")
        wanted = normal_url(url)
        if not isinstance(claims["htu"], str) or wanted is None or normal_url(claims["htu"]) != wanted:
            raise InvalidProof("The DPoP proof is for another URL (htu) than this request's.")
        now = time.time()
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or abs(now - iat) > WINDOW:
            raise InvalidProof(f"The DPoP proof's iat is not within {WINDOW} seconds of now.")
        if access_token is not None:
            ath = claims.get("ath")
            if not isinstance(ath, str) or not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise InvalidProof("The DPoP proof is for another access token (ath).")
        thumbprint = key.thumbprint()
        if jkt is not None and not hmac.compare_digest(thumbprint, jkt):
            raise InvalidProof("The DPoP proof is signed by another key than the token is bound to.")
        if not self._first_use(thumbprint, jti, float(iat) + WINDOW):
            raise InvalidProof("The DPoP proof was already used (jti).")
        return Proof(thumbprint, jti)

    def _first_use(self, jkt: str, jti: str, until: float) -> bool:
        """Record the `jti` of a key's proof; whether it was new (§11.1), atomically
        across instances (`SharedState.update`)."""

        def seen(value: JSONValue) -> tuple[JSONValue, float, bool]:
            return 1, until, value is None

        key = hashlib.sha256(f"{jkt}\0{jti}".encode()).hexdigest()
        return self.state.update(self.KIND, key, seen)


def bound_key(claims: dict[str, Any]) -> str | None:
    """RFC 9449 §6.1: the thumbprint an access token is bound to (`cnf.jkt`), or None."""
    cnf = claims.get("cnf")
    jkt = cnf.get("jkt") if isinstance(cnf, dict) else None
    return jkt if isinstance(jkt, str) else None


def bind_token_request(proofs: ProofChecker, request: Any) -> None:
    """At /token (RFC 9449 §5), once the grant's request is valid: the `DPoP` proof,
    for POST at the token endpoint's URL, is checked and its key's thumbprint kept as
    `request.dpop_jkt` for the token issued (tokens.py); a refresh token bound to a
    key (a public client's) needs a proof of that key. Called by both grants."""
    refresh = getattr(request, "refresh_token", None)
    bound = refresh.record.get(DPOP_JKT) if isinstance(refresh, Grant) else None
    value = request.headers.get("DPoP")
    request.dpop_jkt = None
    if value is None and bound is None:
        return  # a Bearer token, as before
    if value is None:
        raise InvalidGrantError("This refresh token is bound to a DPoP key: send a DPoP proof made with it.")
    try:
        proof = proofs.check(value, "POST", request.uri)
    except InvalidProof as exc:
        raise InvalidDPoPProofError(str(exc)) from None
    if bound is not None and not hmac.compare_digest(bound, proof.jkt):
        raise InvalidGrantError("This refresh token is bound to another DPoP key.")
    request.dpop_jkt = proof.jkt
