"""`flask oauth …` as real separate processes against the data folder of a running
server; effects checked on the files and on the live server over HTTP."""

from __future__ import annotations

import json
import os
import stat

from support.harness import run_cli
from support.oauth import refresh, register, tokens_for, verify
from support.records import stored


def ok(result):
    assert result.returncode == 0, result.stderr
    return result.stdout


def fails(result, text):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr + result.stdout
    assert text in result.stderr, result.stderr
    return result.stderr


def test_help_lists_every_command(server):
    out = ok(server.cli("--help"))
    for name in (
        "stats",
        "list-clients",
        "list-tokens",
        "show-all",
        "delete-client",
        "delete-token",
        "delete-all-clients",
        "delete-all-tokens",
        "purge-expired",
        "test-cleanup",
        "backup",
        "backups",
        "backup-show",
        "restore",
        "add-user",
        "list-users",
        "delete-user",
        "set-password",
        "rotate-keys",
        "show-client",
    ):
        assert name in out, name
    commands = out.split("Commands:")[1]
    assert "..." not in commands  # one whole line of help each


def test_listings_human_and_json(server):
    client, _ = tokens_for(server, register(server, client_name="Claude"))
    assert "Claude" in ok(server.cli("list-clients"))
    clients = json.loads(ok(server.cli("list-clients", "--json")))
    assert clients[0]["client_id"] == client["client_id"] and clients[0]["auth_method"] == "none"
    grants = json.loads(ok(server.cli("list-tokens", "--json")))
    assert grants[0]["subject"] == "alice" and grants[0]["client_id"] == client["client_id"]
    stats = json.loads(ok(server.cli("stats", "--json")))
    assert stats["clients"] == 1 and stats["grants_active"] == 1 and stats["users_seen"] == 1
    everything = json.loads(ok(server.cli("show-all", "--json")))
    assert set(everything) == {"stats", "clients", "grants"}
    assert "grants active" in ok(server.cli("show-all"))


def test_delete_client_revokes_live_tokens(server):
    client, tokens = tokens_for(server)
    dry = ok(server.cli("delete-client", client["client_id"], "--dry-run"))
    assert "Would delete" in dry and verify(server, tokens["access_token"]).status_code == 200
    out = ok(server.cli("delete-client", client["client_id"], "--yes"))
    assert "1 grant" in out
    # The grants go with it (not merely unusable while the client is missing).
    assert server.app.extensions["oauth"].store.scan("grants") == {}
    assert verify(server, tokens["access_token"]).status_code == 401
    assert refresh(server, client, tokens["refresh_token"]).status_code == 401
    fails(server.cli("delete-client", "nope"), "no client")


def test_delete_token_by_prefix_and_ambiguity(server):
    import time

    from app.storage import PersistentStore

    client, tokens = tokens_for(server)
    store = PersistentStore(server.data_dir)
    for grant_id in ("sharedAAA1", "sharedBBB2", "-dashedC3"):
        store.put(
            "grants",
            grant_id,
            {
                "grant_id": grant_id,
                "client_id": client["client_id"],
                "subject": "bob",
                "scope": "mcp",
                "resource": [],
                "issued_at": time.time(),
                "expires_at": time.time() + 600,
                "refresh_token_hashes": {},
            },
        )
    fails(server.cli("delete-token", "nothing-like-it"), "no grant")
    err = fails(server.cli("delete-token", "shared"), "ambiguous")
    assert "sharedAAA1" in err and "sharedBBB2" in err
    assert len(json.loads(ok(server.cli("list-tokens", "--json")))) == 4
    ok(server.cli("delete-token", "sharedA"))
    # One id in 64 starts with "-": it is an id, not an option.
    ok(server.cli("delete-token", "-dash"))
    fails(server.cli("delete-client", "-no-such-client"), "-no-such-client")
    left = {g["grant_id"] for g in json.loads(ok(server.cli("list-tokens", "--json")))}
    assert "sharedAAA1" not in left and "-dashedC3" not in left and "sharedBBB2" in left and len(left) == 2
    real = next(g for g in left if not g.startswith("shared"))
    ok(server.cli("delete-token", real[:10]))
    assert verify(server, tokens["access_token"]).status_code == 401


def test_delete_all_needs_confirmation(server):
    tokens_for(server)
    fails(server.cli("delete-all-tokens"), "--yes")
    assert len(json.loads(ok(server.cli("list-tokens", "--json")))) == 1
    assert "Would delete 1" in ok(server.cli("delete-all-tokens", "--dry-run"))
    ok(server.cli("delete-all-tokens", "--yes"))
    assert json.loads(ok(server.cli("list-tokens", "--json"))) == []
    ok(server.cli("delete-all-clients", "--yes"))
    assert json.loads(ok(server.cli("list-clients", "--json"))) == []


def test_purge_expired_is_quiet_for_cron(make_server):
    server = make_server(OAUTH_REFRESH_TOKEN_TTL="1")
    tokens_for(server)
    import time

    time.sleep(1.5)
    assert "grant" in ok(server.cli("purge-expired", "--dry-run"))
    quiet = server.cli("purge-expired")  # cron mails whatever a job prints, stderr too
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert json.loads((server.data_dir / "refresh_tokens.json").read_text())["grants"] == {}
    assert "Removed 0" in ok(server.cli("purge-expired", "-v"))


def test_test_cleanup_removes_only_test_clients(server):
    test_client, _ = tokens_for(server, register(server, client_name="TEST smoke"))
    keep = register(server, client_name="Production")
    dry = ok(server.cli("test-cleanup", "--dry-run"))
    assert "1 test client" in dry and f"{test_client['client_id']}  TEST smoke" in dry
    ok(server.cli("test-cleanup"))
    assert [c["client_id"] for c in json.loads(ok(server.cli("list-clients", "--json")))] == [keep["client_id"]]


def test_backup_wipe_restore_roundtrip_into_fresh_dir(server, tmp_path, make_server):
    client, tokens = tokens_for(server)
    out = ok(server.cli("backup", "--output", str(tmp_path / "bk"), "-v"))
    files = list((tmp_path / "bk").glob("oauth-backup-*.json"))
    assert len(files) == 1 and str(files[0]) in out
    assert stat.S_IMODE(os.stat(files[0]).st_mode) == 0o600
    shown = ok(server.cli("backup-show", str(files[0]), "--json"))
    assert tokens["refresh_token"] not in shown and "password_hash" in shown and "scrypt" not in shown

    fresh = make_server(users={})
    fresh.stop()
    ok(run_cli(fresh.data_dir, "restore", str(files[0]), "--clear", "--yes", env=fresh.env))
    fresh.start()
    # The restored client keeps working there, refresh token included.
    renewed = refresh(fresh, client, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text


def test_restore_merges_and_dry_run_changes_nothing(server, tmp_path):
    a, _ = tokens_for(server)
    ok(server.cli("backup", "--output", str(tmp_path)))
    backup = next(tmp_path.glob("oauth-backup-*.json"))
    ok(server.cli("delete-client", a["client_id"], "--yes"))
    dry = ok(server.cli("restore", str(backup), "--merge", "--dry-run"))
    assert f"add client {a['client_id']}" in dry
    assert json.loads(ok(server.cli("list-clients", "--json"))) == []
    ok(server.cli("restore", str(backup), "--merge"))
    assert [c["client_id"] for c in json.loads(ok(server.cli("list-clients", "--json")))] == [a["client_id"]]


def test_bad_backup_is_refused_and_changes_nothing(server, tmp_path):
    client = register(server)
    files = lambda: stored(server.data_dir)  # noqa: E731
    before = files()
    bad = tmp_path / "oauth-backup-20260101-000000.json"
    for content, text in (
        ("{nope", "not a readable JSON"),
        (json.dumps({"format": "other"}), "not an mcp-oauth backup"),
        (
            json.dumps(
                {
                    "format": "mcp-oauth-backup",
                    "version": 1,
                    "clients": {"x": {"client_id": "y"}},
                    "grants": {},
                    "users": {},
                    "signing_keys": {},
                }
            ),
            "missing or invalid metadata",
        ),
    ):
        bad.write_text(content)
        fails(server.cli("restore", str(bad), "--clear", "--yes"), text)
    fails(server.cli("restore", str(tmp_path / "missing.json")), "does not exist")
    assert files() == before
    assert client["client_id"] in json.loads(server.cli("list-clients", "--json").stdout)[0]["client_id"]


def test_users(server):
    ok(server.cli("add-user", "bob", "--password-stdin", input="a good password\n"))
    fails(server.cli("add-user", "bob", "--password-stdin", input="another one!\n"), "already exists")
    fails(server.cli("add-user", "carol", "--password-stdin", input="short\n"), "at least")
    users = json.loads(ok(server.cli("list-users", "--json")))
    assert [u["username"] for u in users] == ["alice", "bob"]
    ok(server.cli("set-password", "bob", "--password-stdin", input="a new password\n"))
    from support.oauth import Browser, get_code

    client = register(server)
    get_code(server, client, browser=Browser(server, "bob", "a new password"))
    ok(server.cli("delete-user", "bob"))
    fails(server.cli("delete-user", "bob"), "no user")


def test_corrupt_store_is_one_line_error(server):
    (server.data_dir / "clients.json").write_text("{")
    err = fails(server.cli("list-clients"), "clients.json")
    assert len(err.strip().splitlines()) == 1
