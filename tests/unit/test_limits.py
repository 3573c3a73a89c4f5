"""What anyone can create without logging in is bounded in memory."""

from __future__ import annotations

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
