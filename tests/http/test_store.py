"""PersistentStore on real files: modes, atomic writes, no lost update between
processes, expiry on load and save, a corrupt file stops start-up untouched."""

from __future__ import annotations

import json
import os
import stat

import requests
from support.oauth import tokens_for, verify


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_folder_and_files_are_private_and_versioned(server):
    client, _ = tokens_for(server)
    assert mode(server.data_dir) == 0o700
    assert all(mode(p) == 0o600 for p in server.data_dir.iterdir()), "journals too"
    server.stop()  # a clean stop writes the journals into the JSON files
    for name in ("clients.json", "refresh_tokens.json", "users.json", "signing_keys.json"):
        path = server.data_dir / name
        assert mode(path) == 0o600, name
        assert json.loads(path.read_text())["version"] == 1
        assert client["client_id"] in (server.data_dir / "clients.json").read_text()


def test_refresh_tokens_and_passwords_stored_only_as_hashes(server):
    client, tokens = tokens_for(server)
    everything = "".join(p.read_text() for p in server.data_dir.iterdir() if p.is_file())
    for secret in (tokens["refresh_token"], tokens["access_token"], "correct horse"):
        assert secret not in everything  # not in a JSON file, not in a journal
    server.stop()
    grants = (server.data_dir / "refresh_tokens.json").read_text()
    assert tokens["refresh_token"] not in grants
    assert tokens["access_token"] not in grants
    record = next(iter(json.loads(grants)["grants"].values()))
    assert {"grant_id", "client_id", "subject", "scope", "resource", "issued_at", "expires_at"} <= set(record)
    users = (server.data_dir / "users.json").read_text()
    assert "correct horse" not in users and "scrypt" in users
    assert not any(tokens["access_token"] in p.read_text() for p in server.data_dir.glob("*.json"))


def test_healthz_reports_an_unreadable_store(server):
    assert requests.get(server.url("/healthz"), timeout=5).json()["status"] == "ok"
    (server.data_dir / "clients.json").write_text("garbage")
    response = requests.get(server.url("/healthz"), timeout=5)
    assert response.status_code == 503


def test_hot_paths_answer_503_not_500_when_the_keys_cannot_be_read(server):
    """The JWKS and /verify are answered in front of Flask; a damaged keys file
    there must still be Flask's JSON 503, never a bare 500."""
    _, tokens = tokens_for(server)
    (server.data_dir / "signing_keys.json").write_text("garbage")
    (server.data_dir / "signing_keys.json.journal").unlink(missing_ok=True)
    jwks = requests.get(server.url("/jwks.json"), timeout=5)
    assert jwks.status_code == 503 and jwks.json()["error"] == "temporarily_unavailable"
    checked = verify(server, tokens["access_token"])
    assert checked.status_code == 503 and checked.json()["error"] == "temporarily_unavailable"
