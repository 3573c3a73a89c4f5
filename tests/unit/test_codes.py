"""The authorization-code store (app/oauth2/codes.py) over the short-lived state, in
process (`LocalState`) and on PostgreSQL: what it keeps, and for how long. The protocol
around it (retry window, replay revocation) is tested over HTTP in tests/http/test_tokens.py."""

from __future__ import annotations

import time

import pytest

from app.models import AuthorizationCode
from app.oauth2.codes import CodeStore
from app.storage.local import LocalState


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


def _redeem(store: CodeStore, name: str, seconds_ago: float) -> AuthorizationCode:
    with store.redeeming(name) as code:
        assert code is not None
        code.redeemed_at = time.time() - seconds_ago
        code.response = {"access_token": "a token"}
    return code


@pytest.fixture(params=["memory", "postgresql"])
def codes(request):
    """A code store in process, or on a real PostgreSQL."""
    if request.param == "memory":
        yield CodeStore(LocalState(), retry_window=10)
        return
    from app.storage.postgres import PostgresStore

    store = PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        yield CodeStore(store.shared, retry_window=10)
    finally:
        store.close()


def test_expired_codes_are_forgotten_when_the_next_is_saved():
    state = LocalState()
    store = CodeStore(state, retry_window=10)
    for name in ("a", "b", "c"):
        store.save(_code(name, expires_in=-1))
    store.save(_code("live", expires_in=600))
    assert state.size(CodeStore.KIND) == 1  # not merely refused by get(): gone
    assert store.get("live") is not None


def test_neither_a_code_nor_its_token_response_is_kept_as_such(codes):
    """What is kept is found only with the code: its SHA-256 is the key, and the
    response is sealed with a key derived from the code."""
    codes.save(_code("the-code", expires_in=600))
    _redeem(codes, "the-code", seconds_ago=0)
    kept = codes.state.get(CodeStore.KIND, CodeStore._key("the-code"))
    assert "the-code" not in repr(kept) and "a token" not in repr(kept)
    assert codes.get("the-code").response == {"access_token": "a token"}


def test_a_kept_token_response_is_dropped_once_the_retry_window_has_passed(codes):
    codes.save(_code("old", expires_in=600))
    codes.save(_code("recent", expires_in=600))
    _redeem(codes, "old", seconds_ago=11)
    _redeem(codes, "recent", seconds_ago=1)
    for name in ("old", "recent"):  # presented again (a retry, or a replay)
        with codes.redeeming(name):
            pass
    old, recent = codes.get("old"), codes.get("recent")
    assert old.response is None and old.redeemed_at is not None  # kept, for replay detection
    assert "sealed_response" not in codes.state.get(CodeStore.KIND, CodeStore._key("old"))
    assert recent.response == {"access_token": "a token"}


def test_a_code_is_redeemed_by_one_of_several_at_once(codes):
    """`redeeming` holds the code: of two redemptions at once, the second sees the
    first's change."""
    import threading

    codes.save(_code("a", expires_in=600))
    seen: list[float | None] = []
    inside = threading.Event()

    def first() -> None:
        with codes.redeeming("a") as code:
            inside.set()
            time.sleep(0.2)
            code.redeemed_at = time.time()

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with codes.redeeming("a") as code:
        seen.append(code.redeemed_at)
    thread.join()
    assert seen[0] is not None


def test_codes_of_a_deleted_client_are_forgotten(codes):
    codes.save(_code("a", expires_in=600))
    codes.discard_for_client("client")
    assert codes.get("a") is None
