"""The in-memory authorization-code store (app/oauth2/codes.py): what it keeps, and
for how long. The protocol around it (retry window, replay revocation) is tested over
HTTP in test_tokens.py."""

from __future__ import annotations

import time

from app.models import AuthorizationCode
from app.oauth2.codes import AuthorizationCodeStore


def _code(name: str, expires_in: float) -> AuthorizationCode:
    return AuthorizationCode(
        code=name,
        client_id="client",
        redirect_uri="https://app.example/cb",
        scope="mcp",
        resource=["https://as.example/mcp"],
        subject="alice",
        code_challenge="challenge",
        code_challenge_method="S256",
        expires_at=time.time() + expires_in,
    )


def _redeem(store: AuthorizationCodeStore, name: str, seconds_ago: float) -> AuthorizationCode:
    with store.redeeming(name) as code:
        assert code is not None
        code.redeemed_at = time.time() - seconds_ago
        code.response = {"access_token": "a token"}
    return code


def test_expired_codes_are_forgotten_when_the_next_is_saved():
    store = AuthorizationCodeStore(retry_window=10)
    for name in ("a", "b", "c"):
        store.save(_code(name, expires_in=-1))
    store.save(_code("live", expires_in=600))
    assert list(store._codes) == ["live"]  # not merely refused by get(): gone
    assert set(store._redeem_locks) == {"live"}
    assert store.get("live") is not None


def test_a_kept_token_response_is_dropped_once_the_retry_window_has_passed():
    store = AuthorizationCodeStore(retry_window=10)
    store.save(_code("old", expires_in=600))
    store.save(_code("recent", expires_in=600))
    old = _redeem(store, "old", seconds_ago=11)
    recent = _redeem(store, "recent", seconds_ago=1)
    store.save(_code("next", expires_in=600))
    assert old.response is None and old.redeemed_at is not None  # kept, for replay detection
    assert recent.response == {"access_token": "a token"}


def test_a_code_redeemed_twice_is_queued_once():
    """The second redemption (the retry window's repeat) finds it already redeemed."""
    store = AuthorizationCodeStore(retry_window=10)
    store.save(_code("a", expires_in=600))
    _redeem(store, "a", seconds_ago=11)
    with store.redeeming("a"):
        pass
    assert len(store._redeemed) == 1


def test_codes_of_a_deleted_client_are_forgotten_with_their_locks():
    store = AuthorizationCodeStore(retry_window=10)
    store.save(_code("a", expires_in=600))
    store.discard_for_client("client")
    assert store.get("a") is None and not store._codes and not store._redeem_locks
