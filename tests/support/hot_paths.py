"""Helpers shared by tests/{app,e2e,http,unit}/test_hot_paths.py."""

from __future__ import annotations

import requests

VOLATILE = {"date", "server", "x-request-id"}


def comparable(response: requests.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items() if k.lower() not in VOLATILE}
