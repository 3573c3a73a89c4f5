"""Helpers shared by tests/{e2e,http}/test_internet.py."""

from __future__ import annotations

from .records import stored

# -- registration bounded, throttled and capped ---------------------------------------


def clients_file(server) -> dict[str, bytes]:
    return stored_files(server.data_dir)


def stored_files(data_dir) -> dict:
    """What the store files hold, JSON and journals together."""
    return stored(data_dir)
