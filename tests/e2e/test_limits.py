"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations

import threading
import time

from app.providers.custom import LoginThrottle
from app.throttle import SlidingWindow


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
