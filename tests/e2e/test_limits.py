"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations

import threading
import time

from app.pending import PendingAuthorizations
from app.providers.custom import LoginThrottle
from app.providers.upstream import StateCache
from app.storage.local import LocalState
from app.throttle import SlidingWindow


def test_pending_authorizations_drop_the_oldest_past_the_cap():
    state = LocalState()
    pending = PendingAuthorizations(ttl=600, max_items=3, state=state)
    ids = [pending.create({"client_id": ["c"]}, "browser").id for _ in range(5)]
    assert state.size("pending") == 3
    assert pending.get(ids[0], "browser") is None
    assert pending.get(ids[-1], "browser") is not None
    assert pending.get(ids[-1], "another browser") is None


def test_upstream_state_cache_is_bounded():
    cache = StateCache(max_items=2)
    for key in "abc":
        cache.set(key, key, 60)
    assert cache.get("a") is None and cache.get("c") == "c"


def test_throttle_memory_is_bounded_and_forgets_stale_keys_first():
    state = LocalState()
    window = SlidingWindow(limit=2, window=60, state=state, kind="t", max_keys=4)
    t = time.time()  # (an entry lives until its last event leaves the window)
    window.add("old", now=t - 100)
    for name in ("a", "b", "c"):
        window.add(name, now=t)
        window.add(name, now=t)
    window.add("new", now=t)  # full: the stale "old" goes, the live ones stay
    assert state.size("throttle:t") == 4
    assert window.count("old", now=t) == 0
    assert window.retry_after("a", now=t + 1) == 59  # still limited
    for i in range(10):
        window.add(f"spray{i}", now=t + 2)
    assert state.size("throttle:t") == 4  # a spray of names never grows it past the cap
    assert window.count("spray9", now=t + 2) == 1


def test_login_throttle_limits_an_address_and_only_slows_a_hot_name():
    throttle = LoginThrottle(per_name=3, per_address=100, hot=5, window=60, slow_spacing=30)
    for _ in range(3):
        assert throttle.begin("10.0.0.1", "admin")[1] is not None
    wait, attempt = throttle.begin("10.0.0.1", "admin")
    assert attempt is None and 55 <= wait <= 60
    assert throttle.begin("10.0.0.2", "admin")[1] is not None
    assert throttle.begin("10.0.0.2", "admin")[1] is not None  # 5 failures: the name is hot
    # From now on the name's password is checked once per spacing, for every network ...
    assert throttle.begin("10.0.0.2", "admin")[1] is not None
    assert throttle.begin("10.0.0.2", "admin")[1] is None
    wait, attempt = throttle.begin("10.0.0.9", "admin")  # a new network too
    assert attempt is None and 1 <= wait <= 30
    assert throttle.begin("10.0.0.9", "bob")[1] is not None  # other names are not slowed


def test_a_name_attacked_from_many_networks_is_checked_at_the_slow_pace_but_a_known_network_is_not_held_back():
    """An attacker with many networks (a /48 holds 65,536 /64s) gets no more password
    checks of a hot name than one per `slow_spacing` seconds, new networks included;
    a network that logged in as that user before is never held back by them."""
    throttle = LoginThrottle(per_name=10, per_address=50, hot=40, window=900, slow_spacing=1)
    home = throttle.begin("2001:db8:ffff:1::/64", "admin")[1]
    assert home is not None
    throttle.succeeded(home)  # the person logged in from home once
    admitted = 0
    t = time.time()
    for network in range(400):  # one guess from each of 400 networks, as fast as it goes
        admitted += throttle.begin(f"2001:db8:{network:x}::/64", "admin")[1] is not None
    spent = time.time() - t
    # 40 before the name is hot, then one per second at most
    assert 40 <= admitted <= 40 + int(spent) + 2, (admitted, spent)
    wait, refused = throttle.begin("2001:db8:fff0::/64", "admin")
    assert refused is None and wait == 1  # a short wait, never minutes
    for _ in range(5):  # home mistypes a few times: its own limit only
        assert throttle.begin("2001:db8:ffff:1::/64", "admin")[1] is not None


def test_concurrent_guesses_at_several_instances_meet_the_limit_exactly(postgres_url):
    """Four instances' throttles on one database, thirty-two guesses at once for one
    address and name, three times: exactly `per_name` are let through each time
    (check and record are one step in the database, not one per instance)."""
    from app.storage.postgres import PostgresStore

    stores = [PostgresStore(postgres_url) for _ in range(4)]
    throttles = [LoginThrottle(per_name=5, per_address=1000, window=60, state=store.shared) for store in stores]
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
    """`SlidingWindow.hit` on PostgreSQL from four instances, thirty-two callers at once:
    exactly `limit` events are recorded and admitted."""
    from app.storage.postgres import PostgresStore

    stores = [PostgresStore(postgres_url) for _ in range(4)]
    windows = [SlidingWindow(5, 60, store.shared, "test") for store in stores]
    start = threading.Barrier(32)
    waits = []

    def hit(window: SlidingWindow) -> None:
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


def test_a_shared_window_counts_and_waits_as_the_one_in_memory(postgres_url):
    """`SlidingWindow` on PostgreSQL and in memory (`LocalState`) given the same
    events at the same times answer alike: admitted or the same wait, the same count,
    events leaving the window one by one, an undone event given back."""
    from app.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url)
    t = time.time()  # the database keeps an entry until its last event leaves the window
    try:
        windows = [SlidingWindow(limit=3, window=60), SlidingWindow(3, 60, store.shared, "test")]

        def both(call, *args):
            answers = [getattr(window, call)(*args) for window in windows]
            assert answers[0] == answers[1], (call, args, answers)
            return answers[0]

        assert [both("hit", "k", at) for at in (t, t + 10, t + 20)] == [0, 0, 0]
        assert both("hit", "k", t + 30) == 30 and both("count", "k", t + 30) == 3
        assert both("hit", "other", t + 30) == 0  # keys apart
        assert both("hit", "k", t + 60) == 0  # the first event left the window
        assert both("hit", "k", t + 65) == 5 and both("count", "k", t + 65) == 3
        both("undo", "k", t + 60)
        assert both("count", "k", t + 65) == 2 and both("hit", "k", t + 66) == 0
        both("add", "k", t + 67)  # recorded whatever the count
        assert both("count", "k", t + 67) == 4 and both("retry_after", "k", t + 67) == 13
        assert both("hit", "k", t + 200) == 0 and both("count", "k", t + 200) == 1
    finally:
        store.close()


def test_shared_window_events_recorded_at_once_from_every_instance_are_all_kept(postgres_url):
    """`SlidingWindow.add` (failed logins) on PostgreSQL from four instances, thirty-two
    callers at once: every event is kept."""
    from app.storage.postgres import PostgresStore

    stores = [PostgresStore(postgres_url) for _ in range(4)]
    windows = [SlidingWindow(5, 60, store.shared, "test") for store in stores]
    start = threading.Barrier(32)
    t = time.time()

    def add(window: SlidingWindow, at: float) -> None:
        start.wait()
        window.add("key", at)

    threads = [threading.Thread(target=add, args=(windows[i % 4], t + i)) for i in range(32)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert windows[0].count("key", t + 40) == 32
    finally:
        for store in stores:
            store.close()


def test_shared_window_entries_of_many_addresses_do_not_outlive_their_window(postgres_url, monkeypatch):
    """Anyone can make a shared window's entry (its key is their address): entries
    whose events all left the window are deleted as new hits come, as the in-memory
    window forgets them, so a flood from many addresses leaves no lasting rows."""
    import psycopg

    from app.storage.postgres import PostgresStore, shared

    monkeypatch.setattr(shared, "EPHEMERAL_SWEEP", 0.0)  # every hit may sweep
    store = PostgresStore(postgres_url)
    try:
        window = SlidingWindow(30, 60, store.shared, "registration")
        long_ago = time.time() - 300
        for n in range(50):
            assert window.hit(f"198.51.100.{n}", long_ago) == 0
        assert window.hit("203.0.113.1") == 0
        with psycopg.connect(postgres_url) as conn:
            keys = [row[0] for row in conn.execute("SELECT key FROM ephemeral WHERE kind = 'throttle:registration'")]
        assert keys == ["203.0.113.1"]
    finally:
        store.close()


def test_a_write_counted_by_a_window_is_stored_only_within_its_limit(postgres_url):
    """`put_counted`, in memory (any store) and shared (in the same statement as the
    window's): past the limit it raises LimitReached with the wait and stores nothing;
    the window then knows the wait without asking anyone."""
    import pytest

    from app.storage.memory import MemoryStore
    from app.storage.postgres import PostgresStore
    from app.throttle import LimitReached

    shared = PostgresStore(postgres_url)
    memory = MemoryStore()
    try:
        for store, window in (
            (memory, SlidingWindow(2, 60, memory.shared)),
            (shared, SlidingWindow(2, 60, shared.shared, "test-put")),
        ):
            assert window.wait_known_here("203.0.113.5") == 0
            for i in range(2):
                window.put_counted("203.0.113.5", store, "clients", f"c{i}", {"client_id": f"c{i}"})
            with pytest.raises(LimitReached) as refused:
                window.put_counted("203.0.113.5", store, "clients", "c2", {"client_id": "c2"})
            assert refused.value.key == "203.0.113.5" and 1 <= refused.value.wait <= 60
            assert store.get("clients", "c2") is None and store.get("clients", "c1") is not None
            assert 1 <= window.wait_known_here("203.0.113.5") <= 60
            window.put_counted("203.0.113.6", store, "clients", "c3", {"client_id": "c3"})  # another key
            assert store.get("clients", "c3") is not None
    finally:
        shared.close()


def test_password_guesses_from_one_ipv6_64_count_as_one_network(server):
    """Any address of a /64 is one subscriber's (the test speaks for the client through
    a trusted proxy, loopback): ten wrong passwords for a name from ten addresses of
    one /64, then the eleventh, from yet another, waits; another /64 does not."""
    import requests
    from support.oauth import csrf_of

    session = requests.Session()
    token = csrf_of(session.get(server.url("/login"), timeout=10).text)

    def guess(address: str, password: str = "wrong") -> requests.Response:
        return session.post(
            server.url("/login"),
            data={"csrf_token": token, "username": "alice", "password": password},
            headers={"X-Forwarded-For": address},
            allow_redirects=False,
            timeout=10,
        )

    assert [guess(f"2001:db8:1:2::{n:x}").status_code for n in range(1, 11)] == [401] * 10
    refused = guess("2001:db8:1:2:ffff:ffff:ffff:fffe")
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 900
    assert guess("2001:db8:1:3::1").status_code == 401  # the next /64 is someone else
