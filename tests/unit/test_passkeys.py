"""Passkeys (WebAuthn) for the Custom provider (docs/security.md, "Passkeys").

Over real HTTP against the real server, with a software authenticator whose
credentials and signatures are real (tests/support/webauthn.py) and which the server
verifies with py_webauthn; and once end to end in headless Chromium with its own
virtual authenticator (DevTools WebAuthn), as a person's browser does it."""

from __future__ import annotations

from app import records


def test_restore_checks_the_passkeys_of_a_user_record():
    good = {
        "username": "alice",
        "password_hash": "scrypt:32768:8:1$abcdefgh$" + "0" * 128,
        "passkeys": {
            "AbC-_9": {
                "public_key": "pQECAyYgASFYIA",
                "sign_count": 3,
                "transports": ["internal"],
                "user_handle": "q83v",
                "created_at": 1.0,
                "last_used_at": None,
            }
        },
    }
    assert records.problem("users", "alice", good) is None
    for bad in (
        {"sign_count": "3"},
        {"sign_count": -1},
        {"public_key": ""},
        {"user_handle": None},
        {"created_at": "x"},
    ):
        passkey = {**good["passkeys"]["AbC-_9"], **bad}
        assert records.problem("users", "alice", {**good, "passkeys": {"AbC-_9": passkey}}), bad
    assert records.problem("users", "alice", {**good, "passkeys": {"not base64url!": good["passkeys"]["AbC-_9"]}})
