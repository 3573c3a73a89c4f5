"""Running it for a year: the operator CLI as cron and a person at a terminal use it.
`flask oauth …` as real processes beside a running server (the file store, and
PostgreSQL for restore); effects checked on the files, the database and over HTTP."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import requests
from support.harness import run_cli
from support.oauth import refresh, register, tokens_for, verify
from support.records import stored

from app.storage import PersistentStore


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def refused(result, *texts: str) -> str:
    """A failure: non-zero, no traceback, one line on stderr naming each of `texts`."""
    assert result.returncode != 0, result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for text in texts:
        assert text in lines[0], lines[0]
    return lines[0]


def store_files(data_dir: Path) -> dict:
    """What the store holds (its JSON files and journals together: the running server
    compacts them in the background, so their bytes may change while this does not)."""
    return stored(data_dir)


def revoke(server, client: dict, token: str) -> None:
    data = {"token": token, "token_type_hint": "refresh_token", "client_id": client["client_id"]}
    assert requests.post(server.url("/revoke"), data=data, timeout=10).status_code == 200


def take_backup(server, folder: Path) -> Path:
    ok(server.cli("backup", "--output", str(folder)))
    (path,) = folder.glob("oauth-backup-*.json")
    return path


# -- restore: modes ----------------------------------------------------------------------


def test_a_grant_revoked_after_the_backup_stays_revoked(server, tmp_path):
    """Issue 27: a refresh token revoked after a backup worked again after a (default,
    merging) restore. --merge never brings a grant back; `restore` alone refuses a
    store with data; --clear replaces, after asking; into an empty data folder,
    `restore` alone restores everything."""
    client, tokens = tokens_for(server, register(server, client_name="Claude"))
    path = take_backup(server, tmp_path / "backups")
    revoke(server, client, tokens["refresh_token"])
    later = register(server, client_name="Registered later")  # not in the backup
    store = PersistentStore(server.data_dir)
    assert store.scan("grants") == {}

    line = refused(server.cli("restore", str(path)), "--clear", "--merge")
    assert "nothing was restored" in line
    dry = ok(server.cli("restore", str(path), "--merge", "--dry-run"))
    assert "1 grant" in dry and "nothing would change" in dry  # the client is still there: nothing to add
    merged = server.cli("restore", path.name, "--merge", "--dir", str(path.parent))  # a bare name
    assert "restores no grant" in ok(merged)
    assert store.scan("grants") == {} and set(store.scan("clients")) == {client["client_id"], later["client_id"]}
    assert refresh(server, client, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert verify(server, tokens["access_token"]).status_code == 401

    # --clear: what goes is named; without a terminal to ask, only with --yes.
    dry = ok(server.cli("restore", str(path), "--clear", "--dry-run"))
    assert f"remove client {later['client_id']} (Registered later)" in dry and "add grant" in dry
    refused(server.cli("restore", str(path), "--clear", input=""), "--yes")
    assert later["client_id"] in store.scan("clients")

    # Disaster recovery: the backup into an empty data folder, no mode needed.
    fresh = tmp_path / "fresh"
    assert "replace everything" in ok(run_cli(fresh, "restore", str(path)))
    files = PersistentStore(fresh)
    assert set(files.scan("clients")) == {client["client_id"]} and len(files.scan("grants")) == 1


# -- restore: the rules of live input ------------------------------------------------------


def _short_rsa_jwk(kid: str) -> dict:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    numbers = key.private_numbers()

    def b64(n: int) -> str:
        return base64.urlsafe_b64encode(n.to_bytes((n.bit_length() + 7) // 8, "big")).rstrip(b"=").decode()

    public = numbers.public_numbers
    return {
        "kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(public.n), "e": b64(public.e),
        "d": b64(numbers.d), "p": b64(numbers.p), "q": b64(numbers.q), "dp": b64(numbers.dmp1),
        "dq": b64(numbers.dmq1), "qi": b64(numbers.iqmp),
    }  # fmt: skip


def _bad_redirect(document: dict, client_id: str) -> None:
    document["clients"][client_id]["metadata"]["redirect_uris"] = ["javascript:alert(document.cookie)//"]


def _short_key(document: dict, client_id: str) -> None:
    record = next(r for r in document["signing_keys"].values() if r["use"] == "sig")
    record["jwk"] = _short_rsa_jwk(record["kid"])


def _unknown_hash(document: dict, client_id: str) -> None:
    document["users"]["alice"]["password_hash"] = "md5$salt$5f4dcc3b5aa765d61d8327deb882cf99"


def _forged_approval(document: dict, client_id: str) -> None:
    approvals = document["clients"][client_id]["approvals"]
    approvals["mallory"] = dict(next(iter(approvals.values())))


FORGERIES = [
    (_bad_redirect, ["clients", "javascript:alert"]),
    (_short_key, ["signing_keys", "2048 bits"]),
    (_unknown_hash, ["'alice'", "password_hash", "scrypt or pbkdf2"]),
    (_forged_approval, ["clients", "'mallory'", "no user"]),
]


def test_restore_refuses_what_live_input_refuses_and_changes_nothing(server, tmp_path):
    """Issue 26: restore checked types, not rules. Each of these was accepted (the
    unknown hash then made /login answer 500)."""
    client, tokens = tokens_for(server)
    original = take_backup(server, tmp_path).read_text()
    before = store_files(server.data_dir)
    for forge, named in FORGERIES:
        document = json.loads(original)
        forge(document, client["client_id"])
        path = tmp_path / f"{forge.__name__}.json"
        path.write_text(json.dumps(document))
        line = refused(server.cli("restore", str(path), "--clear", "--yes"), *named)
        assert "nothing was restored" in line
        if named[0] == "clients":
            assert client["client_id"] in line
        assert store_files(server.data_dir) == before
    assert verify(server, tokens["access_token"]).status_code == 200


# -- quiet for cron, audit.log, --keep --------------------------------------------------------


def test_cron_commands_print_nothing_and_append_to_audit_log(server, tmp_path):
    tokens_for(server)
    backups = tmp_path / "backups"
    backups.mkdir()
    old = [backups / f"oauth-backup-2020010{d}-000000.json" for d in (1, 2, 3)]
    foreign = [backups / "oauth-backup-notes.txt", backups / "keep-me.json"]
    for path in old + foreign:
        path.write_text("{}")

    for args in (["purge-expired"], ["backup", "--output", str(tmp_path / "nightly")]):
        quiet = server.cli(*args)
        assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", ""), args
    assert "Removed 0" in ok(server.cli("purge-expired", "-v"))
    kept = ok(server.cli("backup", "--output", str(backups), "--keep", "2", "-v"))
    (written,) = (p for p in backups.glob("oauth-backup-2*.json") if p not in old)
    assert str(written) in kept and "Deleted" in kept
    assert {p.name for p in backups.iterdir()} == {written.name, old[2].name, *(p.name for p in foreign)}
    shown = json.loads(ok(server.cli("backup-show", written.name, "--dir", str(backups), "--json")))  # a bare name
    assert shown["format"] == "mcp-oauth-backup" and len(shown["grants"]) == 1

    audit_log = server.data_dir / "audit.log"
    assert stat.S_IMODE(os.stat(audit_log).st_mode) == 0o600
    events = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert [e["event"] for e in events] == ["cli.purge-expired", "cli.backup", "cli.purge-expired", "cli.backup"]
    assert events[3]["removed"] == [old[1].name, old[0].name] and events[3]["keep"] == 2
    assert all(e["level"] == "info" and e.get("by") for e in events)


# -- clients: show, find by prefix, list --------------------------------------------------------


def test_show_client_tells_everything_but_secrets(server):
    client, tokens = tokens_for(server, register(server, client_name="Claude"))
    shown = ok(server.cli("show-client", client["client_id"][:8], "--json"))
    details = json.loads(shown)
    assert details["client_id"] == client["client_id"] and details["metadata"]["client_name"] == "Claude"
    assert [a["subject"] for a in details["approvals"]] == ["alice"] and not details["confidential"]
    assert [g["subject"] for g in details["grants"]] == ["alice"]
    for secret in (client["registration_access_token"], tokens["refresh_token"], "_hash", "token_hashes"):
        assert secret not in shown
    human = ok(server.cli("show-client", client["client_id"]))
    assert "Approvals (1)" in human and "alice" in human and "Grants (1)" in human


def _put_client(data_dir: Path, client_id: str, name: str) -> None:
    PersistentStore(data_dir).put(
        "clients",
        client_id,
        {
            "client_id": client_id,
            "metadata": {"client_name": name, "redirect_uris": ["https://a.example/cb"]},
            "created_at": time.time(),
        },
    )


def test_delete_client_by_prefix_asks_and_refuses_ambiguity(server):
    for client_id in ("sharedAAAA1", "sharedBBBB2"):
        _put_client(server.data_dir, client_id, f"Client {client_id[-1]}")
    ambiguous = server.cli("delete-client", "shared", "--yes")
    assert ambiguous.returncode != 0 and "sharedAAAA1" in ambiguous.stderr and "sharedBBBB2" in ambiguous.stderr
    assert "start with 'shared'" in ambiguous.stderr.splitlines()[-1] and "nothing changed" in ambiguous.stderr
    unasked = server.cli("delete-client", "sharedA", input="")  # no terminal, no --yes
    refused(unasked, "--yes")
    assert "sharedAAAA1 (Client 1)" in unasked.stdout  # what would go was listed
    store = PersistentStore(server.data_dir)
    assert len(store.scan("clients")) == 2
    assert "Deleted client sharedAAAA1" in ok(server.cli("delete-client", "sharedA", "--yes"))
    assert list(store.scan("clients")) == ["sharedBBBB2"]


def test_list_clients_cuts_long_names_and_filters(server):
    used, _ = tokens_for(server, register(server, client_name="Claude Desktop"))
    long_name = "Very long name " + "x" * 180
    unused = register(server, client_name=long_name)
    wide = run_cli(server.data_dir, "list-clients", env={**server.env, "COLUMNS": "200"})
    lines = ok(wide).splitlines()
    assert len(lines) == 3 and max(len(line) for line in lines) <= 200 and "Very long name x" in lines[2]
    named = json.loads(ok(server.cli("list-clients", "--name", "claude", "--json")))
    assert [c["client_id"] for c in named] == [used["client_id"]]
    never = json.loads(ok(server.cli("list-clients", "--unused", "--json")))
    assert [(c["client_id"], c["name"]) for c in never] == [(unused["client_id"], long_name)]  # --json: whole
