"""PersistentStore on real files: modes, atomic writes, no lost update between
processes, expiry on load and save, a corrupt file stops start-up untouched."""

from __future__ import annotations

import json
import os
import time

import pytest

from app.storage import CorruptStoreError, PersistentStore


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
