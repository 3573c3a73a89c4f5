"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations

import threading

from app.pending import PendingAuthorizations
from app.providers.custom import LoginThrottle
from app.providers.oidc import StateCache
from app.throttle import SlidingWindow


def test_pending_authorizations_drop_the_oldest_past_the_cap():
    pending = PendingAuthorizations(ttl=600, max_items=3)
    ids = [pending.create({"client_id": ["c"]}, "browser").id for _ in range(5)]
    assert len(pending._items) == 3
    assert pending.get(ids[0], "browser") is None
    assert pending.get(ids[-1], "browser") is not None
    assert pending.get(ids[-1], "another browser") is None


def test_upstream_state_cache_is_bounded():
    cache = StateCache(max_items=2)
    for key in "abc":
        cache.set(key, key, 60)
    assert cache.get("a") is None and cache.get("c") == "c"


def test_throttle_memory_is_bounded_and_forgets_stale_keys_first():
    window = SlidingWindow(limit=2, window=60, max_keys=4)
    window.add("old", now=0)
    for name in ("a", "b", "c"):
        window.add(name, now=100)
        window.add(name, now=100)
    window.add("new", now=100)  # full: the stale "old" goes, the live ones stay
    assert len(window) == 4
    assert window.count("old", now=100) == 0
    assert window.retry_after("a", now=101) == 59  # still limited
    for i in range(10):
        window.add(f"spray{i}", now=102)
    assert len(window) == 4  # a spray of names never grows it past the cap
    assert window.count("spray9", now=102) == 1


def test_login_throttle_limits_an_address_and_only_slows_a_hot_name():
    throttle = LoginThrottle(per_name=3, per_address=100, hot=5, window=60, slow_spacing=30)
    for _ in range(3):
        assert throttle.begin("10.0.0.1", "admin")[1] is not None
    wait, attempt = throttle.begin("10.0.0.1", "admin")
    assert attempt is None and 55 <= wait <= 60
    assert throttle.begin("10.0.0.2", "admin")[1] is not None
    assert throttle.begin("10.0.0.2", "admin")[1] is not None  # 5 failures: the name is hot
    # An address that failed on the name gets one try per spacing among them all ...
    assert throttle.begin("10.0.0.2", "admin")[1] is not None
    assert throttle.begin("10.0.0.2", "admin")[1] is None
    # ... while a new address is never held back by the others.
    fresh = throttle.begin("10.0.0.9", "admin")[1]
    assert fresh is not None
    throttle.succeeded(fresh)
    assert throttle.begin("10.0.0.9", "admin")[1] is not None


def test_concurrent_guesses_at_several_instances_meet_the_limit_exactly(postgres_url):
    """Four instances' throttles on one database, thirty-two guesses at once for one
    address and name, three times: exactly `per_name` are let through each time
    (check and record are one step in the database, not one per instance)."""
    from app.storage.postgres import PostgresStore

    stores = [PostgresStore(postgres_url) for _ in range(4)]
    throttles = [LoginThrottle(per_name=5, per_address=1000, window=60, shared=store) for store in stores]
    try:
        for name in ("admin", "alice", "bob"):
            start = threading.Barrier(32)
            admitted = []

            def guess(throttle: LoginThrottle, name: str = name) -> None:
                start.wait()
                admitted.append(throttle.begin("10.0.0.1", name)[1] is not None)

            threads = [threading.Thread(target=guess, args=(throttles[i % 4],)) for i in range(32)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert admitted.count(True) == 5, (name, admitted.count(True))
    finally:
        for store in stores:
            store.close()


def test_a_shared_window_admits_exactly_its_limit_under_concurrency(postgres_url):
    """`SharedSlidingWindow.hit` from four instances, thirty-two callers at once:
    exactly `limit` events are recorded and admitted."""
    from app.storage.postgres import PostgresStore
    from app.throttle import SharedSlidingWindow

    stores = [PostgresStore(postgres_url) for _ in range(4)]
    windows = [SharedSlidingWindow(store, "test", limit=5, window=60) for store in stores]
    start = threading.Barrier(32)
    waits = []

    def hit(window: SharedSlidingWindow) -> None:
        start.wait()
        waits.append(window.hit("key"))

    threads = [threading.Thread(target=hit, args=(windows[i % 4],)) for i in range(32)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert waits.count(0) == 5 and windows[0].count("key") == 5
    finally:
        for store in stores:
            store.close()
