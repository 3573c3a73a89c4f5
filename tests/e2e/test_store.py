"""PersistentStore on real files: modes, atomic writes, no lost update between
processes, expiry on load and save, a corrupt file stops start-up untouched."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time

import pytest
import requests
from support.harness import ROOT, Server, base_env, failed_start, free_port, run_cli
from support.oauth import register, tokens_for, verify
from support.records import grant

from app.storage import CorruptStoreError, PersistentStore


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


def test_cache_sees_changes_made_by_another_process(tmp_path):
    store = PersistentStore(tmp_path)
    store.put("clients", "x", {"client_id": "x"})
    assert store.get("clients", "x") is not None
    other = PersistentStore(tmp_path)
    other.delete("clients", "x")
    assert store.get("clients", "x") is None


def test_expired_entries_dropped_on_load_and_save(tmp_path):
    rules = {"grants": lambda record: record["expires_at"]}
    store = PersistentStore(tmp_path, rules)
    store.put("grants", "old", {"grant_id": "old", "expires_at": time.time() + 0.5})
    store.put("grants", "new", {"grant_id": "new", "expires_at": time.time() + 100})
    time.sleep(0.6)
    assert store.get("grants", "old") is None
    assert set(PersistentStore(tmp_path, rules).scan("grants")) == {"new"}
    store.put("grants", "another", {"grant_id": "another", "expires_at": time.time() + 100})
    store.compact()  # the save: what is expired is not written
    on_disk = json.loads((tmp_path / "refresh_tokens.json").read_text())["grants"]
    assert set(on_disk) == {"new", "another"}
    assert set(PersistentStore(tmp_path, rules).scan("grants")) == {"new", "another"}


def test_corrupt_file_is_refused_and_never_overwritten(tmp_path):
    (tmp_path / "clients.json").write_text("{broken")
    store = PersistentStore(tmp_path)
    with pytest.raises(CorruptStoreError, match="clients.json"):
        store.get("clients", "x")
    with pytest.raises(CorruptStoreError):
        store.put("clients", "x", {"client_id": "x"})
    assert (tmp_path / "clients.json").read_text() == "{broken"


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


def test_add_change_find_and_delete_where(tmp_path):
    store = PersistentStore(tmp_path)
    assert store.add("users", "a", {"username": "a"}) is True
    assert store.add("users", "a", {"username": "other"}) is False
    assert store.get("users", "a") == {"username": "a"}
    assert store.change("users", "missing", lambda r: 1) is None
    assert not (tmp_path / "clients.json").exists()  # a change of nothing writes nothing
    store.put("grants", "g1", {"grant_id": "g1", "client_id": "c1", "refresh_token_hashes": {"h1": None}})
    store.put("grants", "g2", {"grant_id": "g2", "client_id": "c2", "refresh_token_hashes": {"h2": 5.0}})
    assert store.find("grants", "refresh_token_hashes", "h2")["grant_id"] == "g2"
    # Another process's write is seen by the index at once.
    PersistentStore(tmp_path).change("grants", "g1", lambda r: r["refresh_token_hashes"].update(h3=None))
    assert store.find("grants", "refresh_token_hashes", "h3")["grant_id"] == "g1"
    assert [r["grant_id"] for r in store.delete_where("grants", lambda r: r["client_id"] == "c1")] == ["g1"]
    assert store.find("grants", "refresh_token_hashes", "h1") is None
    assert store.count("grants") == 1


# -- the journal -------------------------------------------------------------------------


def test_a_torn_last_journal_line_is_dropped_and_cut_by_the_next_writer(tmp_path):
    store = PersistentStore(tmp_path)
    store.put("clients", "a", {"client_id": "a"})
    store.put("clients", "b", {"client_id": "b"})
    journal = tmp_path / "clients.json.journal"
    with open(journal, "ab") as handle:  # a writer killed mid-append
        handle.write(b'{"put":"c","record":{"client_id":')
    assert set(PersistentStore(tmp_path).scan("clients")) == {"a", "b"}
    writer = PersistentStore(tmp_path)
    writer.put("clients", "d", {"client_id": "d"})
    assert set(PersistentStore(tmp_path).scan("clients")) == {"a", "b", "d"}
    assert all(json.loads(line) for line in journal.read_bytes().splitlines())


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


def test_readers_and_writers_in_one_process_keep_one_view(tmp_path):
    """Threads writing while another reads: the reader may replay a writer's line
    before the writer applies it, and the line must count once (a double count made
    every later read reload the whole store)."""
    import threading

    store = PersistentStore(tmp_path)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            store.get("grants", "g0")

    journal = tmp_path / "refresh_tokens.json.journal"
    ahead: list[int] = []

    def write(worker: int) -> None:
        for i in range(60):
            store.put("grants", f"g{worker}-{i}", {"grant_id": f"g{worker}-{i}"})
            # The journal only grows here (far below the compaction size), so a view
            # past its end counted a line twice.
            offset = store._state["grants"].offset
            if offset > journal.stat().st_size:
                ahead.append(offset)

    reader = threading.Thread(target=read)
    reader.start()
    writers = [threading.Thread(target=write, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    stop.set()
    reader.join()
    assert not ahead
    assert store._state["grants"].offset == journal.stat().st_size
    assert len(store.scan("grants")) == 240 == len(PersistentStore(tmp_path).scan("grants"))


def test_start_up_sweeps_temporary_files_a_crash_left_behind(tmp_path):
    """A process killed between writing a temporary file and renaming it leaves the
    file; the next start removes it, but never a fresh one another process may be
    about to rename."""
    store = PersistentStore(tmp_path)
    store.put("clients", "a", {"client_id": "a"})
    old = tmp_path / ".refresh_tokens.json.4242.17.tmp"
    probe = tmp_path / ".probe.4242.17"
    fresh = tmp_path / ".clients.json.4343.18.tmp"
    for path in (old, probe, fresh):
        path.write_bytes(b'{"half": ')
    hours_ago = time.time() - 2 * 3600
    for path in (old, probe):
        os.utime(path, (hours_ago, hours_ago))
    assert set(PersistentStore(tmp_path).sweep()) == {old, probe}
    assert not old.exists() and not probe.exists() and fresh.exists()
    assert PersistentStore(tmp_path).get("clients", "a") == {"client_id": "a"}
