"""Helpers shared by tests/{e2e,http}/test_tokens.py."""

from __future__ import annotations

import threading

from .oauth import refresh


def concurrent_refreshes(server, client, refresh_token: str, n: int = 2) -> list:
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(refresh(server, client, refresh_token))) for _ in range(n)
    ]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return results
