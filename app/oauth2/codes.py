"""Authorization codes: single use, kept after use for replay detection and the retry
window (RFC 6749 §4.1.2), in the store's short-lived state: this process's memory with
the file store, PostgreSQL when instances share one (a code issued by one instance is
redeemed at another).

`redeeming(code)` gives the code's current state, held against every other
redemption (a lock here, a row lock in the database) until the block ends, when what
the block changed is kept."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..models import AuthorizationCode
from ..storage.base import JSONValue, SharedState


class CodeStore:
    """Codes in the store's short-lived state (`SharedState`): in this process with
    the file store, in PostgreSQL for instances behind one load balancer. A code is
    kept under its SHA-256, and the token response kept for the retry window is
    encrypted with a key derived from the code itself: neither a database dump nor
    this process's memory reveals codes or tokens, and only a client that holds the
    code can be given the response again. A code is kept past its use until it would
    have expired (replay detection); its response goes at the first redemption past
    the retry window."""

    KIND = "code"
    #: codes kept at most in process (only people who signed in make them)
    MAX_CODES = 100_000

    def __init__(self, state: SharedState, retry_window: int) -> None:
        self.state = state
        self.retry_window = retry_window
        state.bound(self.KIND, self.MAX_CODES)

    @staticmethod
    def _key(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    @staticmethod
    def _cipher(code: str) -> AESGCM:
        return AESGCM(hashlib.sha256(b"mcp-oauth code response\0" + code.encode()).digest())

    def _encode(self, code: AuthorizationCode) -> dict[str, Any]:
        # A shallow copy (the fields are JSON already): `dataclasses.asdict` copied
        # every list and dict in them too, ten times the cost of the rest.
        fields = dict(vars(code))
        fields.pop("code")
        response = fields.pop("response")
        if response is not None:
            nonce = os.urandom(12)
            sealed = self._cipher(code.code).encrypt(nonce, json.dumps(response).encode(), None)
            fields["sealed_response"] = base64.b64encode(nonce + sealed).decode()
        return fields

    def _decode(self, code: str, fields: JSONValue) -> AuthorizationCode | None:
        if fields is None:
            return None
        fields = dict(fields)
        sealed = fields.pop("sealed_response", None)
        response = None
        if sealed is not None:
            raw = base64.b64decode(sealed)
            response = json.loads(self._cipher(code).decrypt(raw[:12], raw[12:], None))
        return AuthorizationCode(code=code, response=response, **fields)

    def save(self, code: AuthorizationCode) -> None:
        # Kept past its use until it would have expired (replay detection).
        self.state.put(self.KIND, self._key(code.code), self._encode(code), code.expires_at)

    def get(self, code: str) -> AuthorizationCode | None:
        return self._decode(code, self.state.get(self.KIND, self._key(code)))

    @contextmanager
    def redeeming(self, code: str) -> Iterator[AuthorizationCode | None]:
        with self.state.locked(self.KIND, self._key(code)) as holder:
            current = self._decode(code, holder[0])
            yield current
            if current is not None:
                if current.redeemed_at is not None and time.time() - current.redeemed_at > self.retry_window:
                    current.response = None
                holder[0] = self._encode(current)

    def discard_for_client(self, client_id: str) -> None:
        self.state.delete_where(self.KIND, "client_id", client_id)
