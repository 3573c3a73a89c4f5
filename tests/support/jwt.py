"""Reading a JWT in tests, without verifying it (what a token says, not whether to
believe it: the server's own checks are what the tests exercise)."""

from __future__ import annotations

import base64
import json


def jwt_parts(token: str) -> tuple[dict, dict]:
    """(header, claims) of a compact JWT."""
    header, payload, _ = token.split(".")

    def decode(part: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))

    return decode(header), decode(payload)
