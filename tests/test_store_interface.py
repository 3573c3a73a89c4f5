"""The store interface (app/storage/base.py), the same tests for every backend: the file
store with its journal, the memory store, and PostgreSQL (a real server, started by the
tests). A new backend joins the parameter list."""

from __future__ import annotations

import time

import pytest

from app.storage import PersistentStore, StoreError
from app.storage.memory import MemoryStore

RULES = {"grants": lambda record: record.get("expires_at")}


@pytest.fixture(params=["file", "memory", "postgresql"])
def store(request, tmp_path):
    if request.param == "postgresql":
        from app.storage.postgres import PostgresStore

        backend = PostgresStore(request.getfixturevalue("postgres_url"), RULES)
        yield backend
        backend.close()
        return
    yield PersistentStore(tmp_path, RULES) if request.param == "file" else MemoryStore(RULES)


def test_put_get_add_and_delete(store):
    assert store.get("clients", "a") is None
    store.put("clients", "a", {"client_id": "a", "n": 1})
    assert store.get("clients", "a") == {"client_id": "a", "n": 1}
    assert store.add("clients", "a", {"client_id": "a", "n": 2}) is False
    assert store.add("clients", "b", {"client_id": "b"}) is True
    assert store.delete("clients", "a") == {"client_id": "a", "n": 1}
    assert store.delete("clients", "a") is None
    assert set(store.scan("clients")) == {"b"} and store.count("clients") == 1


def test_change_is_a_read_modify_write_of_one_record(store):
    store.put("grants", "g", {"grant_id": "g", "n": 1, "hashes": {"h": None}})
    assert store.change("grants", "g", lambda r: r.update(n=r["n"] + 1) or r["n"]) == 2
    assert store.get("grants", "g")["n"] == 2
    assert store.change("grants", "missing", lambda r: 1) is None
    before = store.revision("grants")
    store.change("grants", "g", lambda r: r["hashes"].update(h2=None))
    assert store.revision("grants") != before
    assert store.find("grants", "hashes", "h2")["grant_id"] == "g"


def test_find_follows_every_change(store):
    store.put("grants", "g1", {"grant_id": "g1", "hashes": {"a": None}})
    store.put("grants", "g2", {"grant_id": "g2", "hashes": {"b": 1.0}})
    assert store.find("grants", "hashes", "b")["grant_id"] == "g2"
    store.change("grants", "g2", lambda r: r.update(hashes={"c": None}))
    assert store.find("grants", "hashes", "b") is None
    assert store.find("grants", "hashes", "c")["grant_id"] == "g2"
    store.delete_where("grants", lambda r: r["grant_id"] == "g1")
    assert store.find("grants", "hashes", "a") is None


def test_expired_records_are_invisible_and_purged(store):
    store.put("grants", "old", {"grant_id": "old", "expires_at": time.time() - 1, "hashes": {"o": None}})
    store.put("grants", "new", {"grant_id": "new", "expires_at": time.time() + 100})
    assert store.get("grants", "old") is None and store.find("grants", "hashes", "o") is None
    assert set(store.scan("grants")) == {"new"}
    assert store.add("grants", "old", {"grant_id": "old", "expires_at": time.time() + 100}) is True
    store.put("grants", "gone", {"grant_id": "gone", "expires_at": time.time() - 1})
    assert [r["grant_id"] for r in store.purge("grants", dry_run=True)] == ["gone"]
    assert [r["grant_id"] for r in store.purge("grants")] == ["gone"]
    assert store.purge("grants") == []


def test_snapshot_and_replace_all(store):
    store.put("clients", "a", {"client_id": "a"})
    store.put("users", "u", {"username": "u"})
    snapshot = store.snapshot()
    assert snapshot["clients"] == {"a": {"client_id": "a"}} and snapshot["users"] == {"u": {"username": "u"}}
    store.replace_all({"clients": {"b": {"client_id": "b"}}, "users": {}})
    assert set(store.scan("clients")) == {"b"} and store.scan("users") == {}
    with pytest.raises(StoreError):
        store.replace_all({"clients": {}, "nonsense": {}})
    assert set(store.scan("clients")) == {"b"}  # refused as a whole


def test_health_checks_and_lock(store):
    store.check()
    store.check_writable()
    with store.lock("clients"):
        store.put("clients", "x", {"client_id": "x"})  # the holder may still write
    store.compact()
    assert store.get("clients", "x") == {"client_id": "x"}
