"""The hot paths: the verified-token cache never outlives what makes a token valid,
and the WSGI layer in front of Flask answers exactly as the Flask views do."""

from __future__ import annotations

import time

from app.cache import TTLCache


def test_ttl_cache_is_bounded_keeps_what_is_used_and_expires():
    cache: TTLCache[str, int] = TTLCache(max_items=3)
    now = time.time()
    for i in range(3):
        cache.put(f"k{i}", i, now + 60)
    assert cache.get("k0") == 0  # k0 used: k1 is now the least recently used
    cache.put("k3", 3, now + 60)
    assert len(cache) == 3 and cache.get("k1") is None and cache.get("k0") == 0
    cache.put("short", 9, now + 0.05)
    assert cache.get("short") == 9
    assert cache.get("short", now=now + 0.06) is None
    for i in range(10_000):
        cache.put(f"flood{i}", i, now + 60)
    assert len(cache) == 3
