"""A software WebAuthn authenticator for HTTP-level passkey tests: it makes real
ES256 credentials (attestation "none") and signs real assertions, which the server
verifies with py_webauthn exactly as it verifies a browser's. What a browser's
authenticator would never do on its own (skip user verification, reuse a counter, sign
for another origin) is a parameter, so each rule can be broken on purpose.

The browser tests (tests/e2e/test_passkeys.py) use Chromium's own virtual authenticator."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    user_handle: str
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """Answers `navigator.credentials.create()`/`.get()` options (the JSON the server
    sends) as a platform authenticator with user verification would."""

    origin: str
    #: how much the counter grows per assertion (0: a synced passkey's, always 0)
    counter_step: int = 1
    credentials: list[Credential] = field(default_factory=list)

    def create(self, options: dict, user_verified: bool = True) -> dict:
        key = ec.generate_private_key(ec.SECP256R1())
        numbers = key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})
        credential = Credential(secrets.token_bytes(16), key, options["user"]["id"])
        client_data = self._client_data("webauthn.create", options["challenge"])
        flags = UP | AT | (UV if user_verified else 0)
        auth_data = (
            hashlib.sha256(options["rp"]["id"].encode()).digest()
            + bytes([flags])
            + struct.pack(">I", 0)
            + bytes(16)
            + struct.pack(">H", len(credential.id))
            + credential.id
            + cose
        )
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials.append(credential)
        return {
            "id": b64(credential.id),
            "rawId": b64(credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "attestationObject": b64(attestation),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        }

    def get(
        self, options: dict, credential: Credential | None = None, user_verified: bool = True, rp_id: str | None = None
    ) -> dict:
        credential = credential or self.credentials[-1]
        credential.sign_count += self.counter_step
        client_data = self._client_data("webauthn.get", options["challenge"])
        flags = UP | (UV if user_verified else 0)
        auth_data = (
            hashlib.sha256((rp_id or options["rpId"]).encode()).digest()
            + bytes([flags])
            + struct.pack(">I", credential.sign_count)
        )
        signature = credential.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64(credential.id),
            "rawId": b64(credential.id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(client_data),
                "authenticatorData": b64(auth_data),
                "signature": b64(signature),
                "userHandle": credential.user_handle,
            },
            "clientExtensionResults": {},
        }

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": False}).encode()
