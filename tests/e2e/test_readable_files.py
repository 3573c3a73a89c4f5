"""The JSON files are the readable truth while the server runs, not only after a clean
stop: what a person reads in `.oauth_data/` (to debug, to back up) is what the server
knows, within seconds of each change, and after a crash the next start makes them whole.
Real `python wsgi.py` processes, real files read as an operator would."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import requests
from support.harness import CLAUDE_CALLBACK
from support.oauth import refresh, register, tokens_for

from app.storage import PersistentStore

#: the contract's bound: an acknowledged change is in its JSON file within this
WITHIN = 5.0
FILES = ("clients.json", "refresh_tokens.json", "users.json", "signing_keys.json")


def document(data_dir: Path, name: str) -> dict:
    """A JSON file as a person reads it: the file alone, never its journal."""
    return json.loads((data_dir / name).read_text())


def until_in_file(data_dir: Path, name: str, collection: str, wanted: set[str]) -> float:
    """Seconds until every key in `wanted` is in the file (fails after WITHIN + 1 s)."""
    started = time.monotonic()
    while True:
        missing = wanted - set(document(data_dir, name)[collection])
        if not missing:
            return time.monotonic() - started
        waited = time.monotonic() - started
        assert waited < WITHIN + 1, f"{len(missing)} still missing from {name}: {sorted(missing)[:3]}"
        time.sleep(0.1)


def test_first_start_writes_every_file(make_server):
    server = make_server(users={})  # no users: the first start creates admin
    for name in FILES:
        assert document(server.data_dir, name)["version"] == 1, name
    until_in_file(server.data_dir, "users.json", "users", {"admin"})
    deadline = time.monotonic() + WITHIN
    while not document(server.data_dir, "signing_keys.json")["signing_keys"]:  # made at the first start
        assert time.monotonic() < deadline, "the signing key never reached signing_keys.json"
        time.sleep(0.1)


def test_registrations_refreshes_and_cli_writes_reach_the_files_within_seconds(make_server):
    server = make_server()
    client, tokens = tokens_for(server)
    grant_id = tokens["refresh_token"].split(".")[0]
    until_in_file(server.data_dir, "clients.json", "clients", {client["client_id"]})
    until_in_file(server.data_dir, "refresh_tokens.json", "grants", {grant_id})

    # A refresh: the grant's new hash is in the file, not only in the journal.
    answer = refresh(server, client, tokens["refresh_token"])
    assert answer.status_code == 200, answer.text
    issued = json.dumps(document(server.data_dir, "refresh_tokens.json")["grants"][grant_id])
    deadline = time.monotonic() + WITHIN
    while json.dumps(document(server.data_dir, "refresh_tokens.json")["grants"][grant_id]) == issued:
        assert time.monotonic() < deadline, "the refresh never reached refresh_tokens.json"
        time.sleep(0.1)

    # The operator's CLI beside the running server.
    assert server.cli("add-user", "bob", "--password-stdin", input="a long enough password\n").returncode == 0
    until_in_file(server.data_dir, "users.json", "users", {"bob"})


def test_under_a_write_load_the_files_follow_but_are_not_rewritten_per_write(make_server, tmp_path):
    # A store of some size, as a server that has run for a while has: a journal is
    # also compacted once it outgrows its snapshot, which in an empty store happens
    # after every doubling, whatever the time.
    data = tmp_path / "busy"
    record = {"client_id": "", "metadata": {"client_name": "x" * 200}, "created_at": time.time()}
    PersistentStore(data).replace_all({"clients": {f"c{n}": {**record, "client_id": f"c{n}"} for n in range(5000)}})
    server = make_server(
        data_dir=data, OAUTH_REGISTRATION_RATE="0", OAUTH_MAX_CLIENTS="0", OAUTH_MAX_CLIENTS_PER_ADDRESS="0"
    )
    path = server.data_dir / "clients.json"
    rewrites: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # each compaction renames a new file into place: a new inode
        last = os.stat(path).st_ino
        while not stop.is_set():
            inode = os.stat(path).st_ino
            if inode != last:
                rewrites.append(inode)
                last = inode
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    registered: set[str] = set()
    session = requests.Session()
    started = time.monotonic()
    try:
        while time.monotonic() - started < 7:
            answer = session.post(
                server.url("/register"),
                json={"client_name": "load", "redirect_uris": [CLAUDE_CALLBACK], "token_endpoint_auth_method": "none"},
                timeout=10,
            )
            assert answer.status_code == 201, answer.text
            registered.add(answer.json()["client_id"])
    finally:
        stop.set()
        watcher.join()
    # Rewritten while the load went on (not only once it paused) ...
    assert rewrites, "clients.json was never rewritten during 7 s of registrations"
    # ... but at most every few seconds, however many writes (hundreds here).
    assert len(registered) > 50
    assert len(rewrites) <= 4, f"{len(rewrites)} rewrites in 7 s for {len(registered)} registrations"
    until_in_file(server.data_dir, "clients.json", "clients", registered)


def test_after_a_crash_the_next_start_makes_the_files_whole(make_server):
    server = make_server()
    first = register(server)
    until_in_file(server.data_dir, "clients.json", "clients", {first["client_id"]})
    # Registered and acknowledged, then SIGKILL before the files could follow.
    after = [register(server)["client_id"] for _ in range(3)]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()
    assert not set(after) <= set(document(server.data_dir, "clients.json")["clients"])
    server.start()
    assert until_in_file(server.data_dir, "clients.json", "clients", {first["client_id"], *after}) < WITHIN
