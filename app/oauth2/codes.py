"""Authorization codes: in memory, single use, kept after use for replay detection
and the retry window."""

from __future__ import annotations

import threading
import time

from ..models import AuthorizationCode


class AuthorizationCodeStore:
    """Codes live in memory, single use; a redeemed code is kept until it would have
    expired so that a replay can be recognised and answered."""

    def __init__(self, retry_window: int) -> None:
        self._codes: dict[str, AuthorizationCode] = {}
        self._lock = threading.Lock()
        self._redeem_locks: dict[str, threading.Lock] = {}
        self.retry_window = retry_window

    def save(self, code: AuthorizationCode) -> None:
        with self._lock:
            now = time.time()
            for key in [k for k, c in self._codes.items() if c.expires_at <= now]:
                del self._codes[key]
                self._redeem_locks.pop(key, None)
            # A cached token response is only needed during the retry window.
            for old in self._codes.values():
                if old.redeemed_at is not None and now - old.redeemed_at > self.retry_window:
                    old.response = None
            self._codes[code.code] = code
            self._redeem_locks[code.code] = threading.Lock()

    def get(self, code: str) -> AuthorizationCode | None:
        with self._lock:
            record = self._codes.get(code)
        if record is None or record.is_expired():
            return None
        return record

    def redeem_lock(self, code: str) -> threading.Lock:
        with self._lock:
            return self._redeem_locks.setdefault(code, threading.Lock())

    def discard_for_client(self, client_id: str) -> None:
        with self._lock:
            for key in [k for k, c in self._codes.items() if c.client_id == client_id]:
                del self._codes[key]
