"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations

from app.pending import PendingAuthorizations
from app.providers.custom import LoginThrottle
from app.providers.oidc import MemoryCache


def test_pending_authorizations_drop_the_oldest_past_the_cap():
    pending = PendingAuthorizations(ttl=600)
    pending.MAX_ITEMS = 3
    ids = [pending.create({"client_id": ["c"]}, "browser").id for _ in range(5)]
    assert len(pending._items) == 3
    assert pending.get(ids[0], "browser") is None
    assert pending.get(ids[-1], "browser") is not None
    assert pending.get(ids[-1], "another browser") is None


def test_upstream_state_cache_is_bounded():
    cache = MemoryCache()
    cache.MAX_ITEMS = 2
    for key in "abc":
        cache.set(key, key, 60)
    assert cache.get("a") is None and cache.get("c") == "c"


def test_login_throttle_forgets_stale_names():
    throttle = LoginThrottle(limit=2, window=0)
    throttle.MAX_KEYS = 4
    for i in range(10):
        throttle.failed("1.2.3.4", f"user{i}")
    assert len(throttle._failures) <= 6
    assert throttle.retry_after("1.2.3.4", "user9") == 0
