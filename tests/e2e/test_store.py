"""PersistentStore on real files: modes, atomic writes, no lost update between
processes, expiry on load and save, a corrupt file stops start-up untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from support.harness import ROOT, Server, base_env, failed_start, free_port, run_cli
from support.oauth import register, tokens_for, verify
from support.records import grant

from app.storage import PersistentStore

WRITER = """
import sys
from app.storage import PersistentStore
store = PersistentStore(sys.argv[1])
for i in range(int(sys.argv[3])):
    store.put("clients", f"{sys.argv[2]}-{i}", {"client_id": f"{sys.argv[2]}-{i}", "n": i})
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path):
    data = tmp_path / "data"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(data), name, "60"], cwd=ROOT, env=base_env(data))
        for name in ("a", "b")
    ]
    assert [p.wait(60) for p in procs] == [0, 0]
    store = PersistentStore(data)
    assert len(store.scan("clients")) == 120
    store.compact()
    items = json.loads((data / "clients.json").read_text())["clients"]
    assert len(items) == 120
    assert not list(data.glob("*.tmp"))


COMPACTING_WRITER = """
import sys
from app.storage import PersistentStore
store = PersistentStore(sys.argv[1])
for i in range(2000):
    store.put("clients", f"c{i}", {"client_id": f"c{i}", "padding": "p" * 100})
store.compact()
print("ready", flush=True)
i = 0
while True:  # every compaction rewrites both files of the collection
    store.put("clients", f"c{i % 2000}", {"client_id": f"c{i % 2000}", "padding": "q" * 100, "n": i})
    store.compact("clients")
    i += 1
"""


def test_readers_never_see_a_torn_file(tmp_path):
    """While another process rewrites a 300 KB collection as fast as it can, every
    read of either file, at any instant, is a whole file that parses: files are
    replaced by rename, never written in place (which a reader sees half-written)."""
    writer = subprocess.Popen(
        [sys.executable, "-c", COMPACTING_WRITER, str(tmp_path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        text=True,
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        snapshot, journal = tmp_path / "clients.json", tmp_path / "clients.json.journal"
        torn, reads, deadline = [], 0, time.time() + 1.5
        while time.time() < deadline and len(torn) < 5:
            data = snapshot.read_bytes()
            try:
                assert len(json.loads(data)["clients"]) == 2000
            except (ValueError, KeyError, AssertionError):
                torn.append(len(data))
            header = journal.read_bytes().split(b"\n", 1)[0]
            try:
                assert "generation" in json.loads(header)
            except (ValueError, AssertionError):
                torn.append(len(header))
            reads += 1
        assert writer.poll() is None, "the writer stopped"
    finally:
        writer.kill()
        writer.wait()
    assert not torn, f"{len(torn)} torn reads (sizes {torn}) in {reads}"
    assert reads > 20


def test_corrupt_file_stops_startup_with_its_name(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "refresh_tokens.json").write_text('{"version": 1, "grants": [1, 2]}')
    assert "refresh_tokens.json" in failed_start(tmp_path, data)
    assert (data / "refresh_tokens.json").read_text() == '{"version": 1, "grants": [1, 2]}'


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PORT", "eighty"),
        ("OAUTH_ACCESS_TOKEN_TTL", "-5"),
        ("OAUTH_PROVIDER", "gitlab"),
        ("OAUTH_ISSUER", "http://example.com"),
        ("OAUTH_ISSUER", "not a url"),
        ("OAUTH_RESOURCE_PATH", "mcp"),
        ("OAUTH_UPSTREAM_URL", "ftp://x"),
    ],
)
def test_bad_configuration_stops_startup_with_one_line(tmp_path, variable, value):
    assert variable in failed_start(tmp_path, tmp_path / "data", **{variable: value})


def test_dotenv_file_is_read(tmp_path):
    port = free_port()
    (tmp_path / ".env").write_text(f"OAUTH_SCOPES=mcp files\nOAUTH_ISSUER=http://127.0.0.1:{port}\n")
    server = Server(tmp_path / "data", tmp_path, PORT=str(port))
    server.env.pop("OAUTH_ISSUER")
    try:
        server.start()
        metadata = requests.get(server.base + "/.well-known/oauth-authorization-server", timeout=5).json()
        assert metadata["scopes_supported"] == ["mcp", "files"]
    finally:
        server.stop()


def test_first_start_creates_admin_and_prints_password_once(make_server):
    server = make_server(users={})
    output = server.output
    assert "created user 'admin' with password:" in output
    password = output.split("with password:")[1].split()[0]
    assert not any(password in p.read_text() for p in server.data_dir.iterdir() if p.is_file())
    from support.oauth import Browser, get_code

    client = register(server)
    get_code(server, client, browser=Browser(server, "admin", password))
    server.restart()
    assert server.output.count("with password:") == 1


def test_cli_deletion_takes_effect_in_running_server(server):
    client, tokens = tokens_for(server)
    assert verify(server, tokens["access_token"]).status_code == 200
    result = server.cli("delete-client", "--yes", client["client_id"])
    assert result.returncode == 0, result.stderr
    assert verify(server, tokens["access_token"]).status_code == 401


def test_a_store_that_cannot_be_written_stops_startup_with_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o700)
    (data / ".signing_keys.json.lock").mkdir()  # the lock file cannot be opened
    assert "signing_keys.json" in failed_start(tmp_path, data)


CHANGE_WORKER = """
import sys
from app.storage import PersistentStore
store = PersistentStore(sys.argv[1])
store.get("grants", "g")
print("ready", flush=True)
sys.stdin.readline()  # all start incrementing at once
for _ in range(int(sys.argv[2])):
    store.change("grants", "g", lambda r: r.__setitem__("n", r["n"] + 1))
"""


def test_change_is_atomic_across_processes(tmp_path):
    """Three processes incrementing one record at the same moment: no increment is
    lost (each read-modify-write holds the collection's file lock)."""
    store = PersistentStore(tmp_path)
    store.put("grants", "g", {"grant_id": "g", "n": 0})
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", CHANGE_WORKER, str(tmp_path), "150"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    assert [w.stdout.readline().strip() for w in workers] == ["ready"] * 3
    for w in workers:
        w.stdin.write("go\n")
        w.stdin.flush()
    assert all(w.wait(60) == 0 for w in workers)
    assert PersistentStore(tmp_path).get("grants", "g")["n"] == 450


KILLED_WRITER = """
import sys
from app.storage import PersistentStore, jsonfile as module
module.MIN_COMPACTION_BYTES = 2048  # compact often
store = PersistentStore(sys.argv[1])
i = int(sys.argv[2])  # each run its own keys
print("writing", flush=True)
while True:
    store.put("grants", f"g{i}", {"grant_id": f"g{i}", "padding": "p" * 200})
    print(f"g{i}", flush=True)  # acknowledged
    if i % 7 == 0:
        store.delete("grants", f"g{i}")
        print(f"-g{i}", flush=True)
    i += 1
"""


def test_sigkill_at_any_instant_keeps_every_acknowledged_write(tmp_path):
    """A writer that compacts every few writes is SIGKILLed at 12 arbitrary moments
    while another process reads all along: no read ever meets a torn file, and after
    each kill a fresh reader holds every acknowledged write."""
    import random
    import signal

    rng = random.Random(7)
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", KILLED_WRITER, str(tmp_path), str(run * 1_000_000)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        # Killed at a random moment of its writing (not of its start-up, which on a
        # loaded machine can take longer than the whole window).
        assert proc.stdout is not None and proc.stdout.readline() == "writing\n"
        deadline = time.time() + 0.3 + rng.random() * 0.5
        while time.time() < deadline:  # a reader throughout: never a torn file
            PersistentStore(tmp_path).scan("grants")
        proc.send_signal(signal.SIGKILL)
        out, _ = proc.communicate()
        for line in out.split():
            (deleted.add(line[1:]) if line.startswith("-") else acknowledged.add(line))
        keys = set(PersistentStore(tmp_path).scan("grants"))
        # Puts never deleted (a key that is a multiple of 7 may have been deleted just
        # before the kill, unacknowledged), and acknowledged deletions, both hold.
        kept = {k for k in acknowledged if int(k[1:]) % 7}
        assert kept <= keys
        assert not (deleted & keys)
        for path in tmp_path.glob("*.json"):
            json.loads(path.read_text())
    assert len(acknowledged) > 100


def test_a_cli_write_during_a_write_storm_from_the_server(make_server):
    """Registrations stream into the running server while the CLI adds a user and
    deletes a client: every change of both is kept."""
    from concurrent.futures import ThreadPoolExecutor

    server = make_server(OAUTH_REGISTRATION_RATE="0")
    victim = register(server)

    def register_one(_: int) -> str:
        return register(server)["client_id"]

    with ThreadPoolExecutor(4) as pool:
        storm = pool.map(register_one, range(60))
        added = server.cli("add-user", "bob", "--password-stdin", input="a good password\n")
        deleted = server.cli("delete-client", "--yes", victim["client_id"])
        registered = list(storm)
    assert added.returncode == 0 and deleted.returncode == 0, added.stderr + deleted.stderr
    stored = {c["client_id"] for c in json.loads(server.cli("list-clients", "--json").stdout)}
    assert set(registered) <= stored and victim["client_id"] not in stored
    assert "bob" in {u["username"] for u in json.loads(server.cli("list-users", "--json").stdout)}


def test_backup_and_restore_round_trip_at_10000_records(tmp_path):
    now = time.time()
    source = PersistentStore(tmp_path / "a")
    grants = {f"g{i}": grant(i, client_id=f"c{i}", searched=True) for i in range(10_000)}
    clients = {
        f"c{i}": {"client_id": f"c{i}", "metadata": {"redirect_uris": ["https://a.example/cb"]}, "created_at": now}
        for i in range(10_000)
    }
    source.replace_all({"grants": grants, "clients": clients})
    out = tmp_path / "backups"
    assert run_cli(tmp_path / "a", "backup", "--output", str(out)).returncode == 0
    backup = next(out.glob("oauth-backup-*.json"))
    restored = run_cli(tmp_path / "b", "restore", str(backup), "--clear", "--yes")
    assert restored.returncode == 0, restored.stderr
    target = PersistentStore(tmp_path / "b")
    assert target.scan("grants") == grants and len(target.scan("clients")) == 10_000
    assert target.find("grants", "refresh_token_hashes", f"{9999:064x}")["grant_id"] == "g9999"
