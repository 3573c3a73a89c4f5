"""Authorization codes: single use, kept after use for replay detection and the retry
window (RFC 6749 §4.1.2). In this process's memory with the file store; in PostgreSQL
when instances share one (a code issued by one instance is redeemed at another).

Both stores offer `redeeming(code)`: the code's current state, held against every
other redemption (a lock here, a row lock in the database) until the block ends, when
what the block changed is kept."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..models import AuthorizationCode

if TYPE_CHECKING:
    from ..storage.postgres import PostgresStore


class CodeStore(Protocol):
    retry_window: int

    def save(self, code: AuthorizationCode) -> None: ...

    def get(self, code: str) -> AuthorizationCode | None: ...

    def redeeming(self, code: str) -> Any:
        """Context manager: the code (None when unknown or expired) held until the
        block ends; changes to it are kept."""

    def discard_for_client(self, client_id: str) -> None: ...


class AuthorizationCodeStore:
    """Codes in memory, single use; a redeemed code is kept until it would have
    expired so that a replay can be recognised and answered.

    Every code lives `auth_code_ttl` and is kept in the order it was made, so the
    expired ones are at the front; redeemed codes are queued in the order they were
    redeemed, so those past the retry window are at the front of that queue. Saving a
    code forgets what is due and no more: its cost does not grow with the codes kept
    (some hundred thousand on a busy server)."""

    def __init__(self, retry_window: int) -> None:
        self._codes: OrderedDict[str, AuthorizationCode] = OrderedDict()
        self._lock = threading.Lock()
        self._redeem_locks: dict[str, threading.Lock] = {}
        self._redeemed: deque[tuple[float, str]] = deque()
        self.retry_window = retry_window

    def save(self, code: AuthorizationCode) -> None:
        with self._lock:
            now = time.time()
            while self._codes:
                key, first = next(iter(self._codes.items()))
                if first.expires_at > now:
                    break
                del self._codes[key]
                self._redeem_locks.pop(key, None)
            # A cached token response is only needed during the retry window.
            while self._redeemed and now - self._redeemed[0][0] > self.retry_window:
                _, key = self._redeemed.popleft()
                redeemed = self._codes.get(key)
                if redeemed is not None:
                    redeemed.response = None
            self._codes[code.code] = code
            self._redeem_locks[code.code] = threading.Lock()

    def get(self, code: str) -> AuthorizationCode | None:
        with self._lock:
            record = self._codes.get(code)
        if record is None or record.is_expired():
            return None
        return record

    @contextmanager
    def redeeming(self, code: str) -> Iterator[AuthorizationCode | None]:
        with self._lock:
            lock = self._redeem_locks.get(code) or threading.Lock()  # a forgotten code: get() says so
        with lock:
            record = self.get(code)
            was_redeemed = record is not None and record.redeemed_at is not None
            yield record
            if record is not None and not was_redeemed and record.redeemed_at is not None:
                with self._lock:
                    self._redeemed.append((record.redeemed_at, code))

    def discard_for_client(self, client_id: str) -> None:
        with self._lock:
            for key in [k for k, c in self._codes.items() if c.client_id == client_id]:
                del self._codes[key]
                self._redeem_locks.pop(key, None)


class SharedCodeStore:
    """Codes in PostgreSQL, for instances behind one load balancer. A code is stored
    under its SHA-256, and the token response kept for the retry window is encrypted
    with a key derived from the code itself: a database dump reveals neither codes nor
    tokens, and only a client that holds the code can be given the response again."""

    KIND = "code"

    def __init__(self, store: PostgresStore, retry_window: int) -> None:
        self.store = store
        self.retry_window = retry_window

    @staticmethod
    def _key(code: str) -> str:
        return hashlib.sha256(code.encode()).hexdigest()

    @staticmethod
    def _cipher(code: str) -> AESGCM:
        return AESGCM(hashlib.sha256(b"mcp-oauth code response\0" + code.encode()).digest())

    def _encode(self, code: AuthorizationCode) -> dict[str, Any]:
        fields = dataclasses.asdict(code)
        fields.pop("code")
        response = fields.pop("response")
        if response is not None:
            nonce = os.urandom(12)
            sealed = self._cipher(code.code).encrypt(nonce, json.dumps(response).encode(), None)
            fields["sealed_response"] = base64.b64encode(nonce + sealed).decode()
        return fields

    def _decode(self, code: str, fields: dict[str, Any] | None) -> AuthorizationCode | None:
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
        self.store.ephemeral_put(self.KIND, self._key(code.code), self._encode(code), code.expires_at)

    def get(self, code: str) -> AuthorizationCode | None:
        return self._decode(code, self.store.ephemeral_get(self.KIND, self._key(code)))

    @contextmanager
    def redeeming(self, code: str) -> Iterator[AuthorizationCode | None]:
        with self.store.ephemeral_locked(self.KIND, self._key(code)) as holder:
            current = self._decode(code, holder[0])
            yield current
            if current is not None:
                if current.redeemed_at is not None and time.time() - current.redeemed_at > self.retry_window:
                    current.response = None
                holder[0] = self._encode(current)

    def discard_for_client(self, client_id: str) -> None:
        self.store.ephemeral_delete_where(self.KIND, "client_id", client_id)
