"""The store interfaces (app/storage/base.py: `Store` and its `SharedState`), the same
tests for every backend: the file store with its journal, the memory store, and
PostgreSQL (a real server, started by the tests), each opened by `open_store` as the
server opens it. A new backend joins `BACKENDS`: one line."""

from __future__ import annotations

import threading
import time

import pytest

from app import storage
from app.storage import StaleRead, StoreError

RULES = {"grants": lambda record: record.get("expires_at")}

#: backend -> its OAUTH_STORE (None: the fixture `postgres_url` gives it)
BACKENDS = {"file": "file", "memory": "memory://", "postgresql": None}


@pytest.fixture(params=list(BACKENDS))
def open_store(request, tmp_path):
    """Opens the backend; each call another handle on the same data, as another
    process or instance would (the memory store has only the one)."""
    url = BACKENDS[request.param] or request.getfixturevalue("postgres_url")
    opened = []

    def open_one():
        if not opened or request.param != "memory":
            opened.append(storage.open_store(url, tmp_path, RULES))
        return opened[-1]

    yield open_one
    for backend in opened:
        backend.close()


def test_every_backend_the_server_may_use_is_in_this_contract():
    """A backend in `open_store`'s registry is a backend these tests run."""
    assert {storage.scheme(url or "postgresql://") for url in BACKENDS.values()} | {"postgres"} == set(storage.BACKENDS)


@pytest.fixture
def store(open_store):
    return open_store()


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


def test_changes_from_several_handles_at_once_lose_nothing(open_store):
    """Two handles (instances), four threads each, all incrementing one record: every
    increment counts, however the backend serialises them."""
    first, second = open_store(), open_store()
    first.put("grants", "g", {"grant_id": "g", "n": 0})

    errors = []

    def increment(backend) -> None:
        try:
            for _ in range(25):
                backend.change("grants", "g", lambda r: r.update(n=r["n"] + 1))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=increment, args=(b,)) for b in (first, second) * 4]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert first.get("grants", "g")["n"] == second.get("grants", "g")["n"] == 200


def test_a_change_builds_on_the_newest_record_not_on_one_read_before(open_store):
    """A read just before a change must not stand in for the record when another
    instance wrote it in between."""
    first, second = open_store(), open_store()
    first.put("grants", "g", {"grant_id": "g", "n": 1, "hashes": {"a": None}})
    assert first.find("grants", "hashes", "a")["n"] == 1
    second.change("grants", "g", lambda r: r.update(n=10))
    assert first.change("grants", "g", lambda r: r.update(n=r["n"] + 1) or r["n"]) == 11
    assert first.get("grants", "g")["n"] == 11
    second.delete("grants", "g")
    assert first.change("grants", "g", lambda r: r.update(n=0)) is None


def test_writes_wait_out_a_lock_and_land_on_what_it_wrote(open_store):
    """A restore holds the collection; a change and a delete from another handle wait
    for it, then apply to the restored records (neither lost nor undone)."""
    first, second = open_store(), open_store()
    for key in ("g1", "g2"):
        first.put("grants", key, {"grant_id": key, "n": 1})
    writers = [
        threading.Thread(target=second.change, args=("grants", "g1", lambda r: r.update(n=r["n"] + 1))),
        threading.Thread(target=second.delete, args=("grants", "g2")),
    ]
    with first.lock("grants"):
        for writer in writers:
            writer.start()
        time.sleep(0.3)
        assert all(writer.is_alive() for writer in writers)
        first.replace_all({"grants": {k: {"grant_id": k, "n": 10} for k in ("g1", "g2")}})
    for writer in writers:
        writer.join(10)
    assert first.get("grants", "g1")["n"] == 11 and first.get("grants", "g2") is None


def test_the_revision_moves_with_every_kind_of_write(open_store, monkeypatch):
    """What a derived cache (the signing keys) relies on: another handle's insert,
    update, change and delete each give the collection a new revision."""
    from app.storage.postgres import store as postgres

    monkeypatch.setattr(postgres, "REVISION_TTL", 0.0)  # no moment of trust in what was read
    first, second = open_store(), open_store()
    first.put("signing_keys", "a", {"kid": "a"})
    first.put("signing_keys", "b", {"kid": "b"})
    seen = [first.revision("signing_keys")]
    for write in (
        lambda: second.put("signing_keys", "c", {"kid": "c"}),
        lambda: second.put("signing_keys", "a", {"kid": "a", "retired_at": 1}),
        lambda: second.change("signing_keys", "b", lambda r: r.update(retired_at=2)),
        lambda: second.delete("signing_keys", "c"),
    ):
        write()
        seen.append(first.revision("signing_keys"))
    assert len(set(seen)) == len(seen)


# `refresh_token_hashes` has a column and an index of its own in PostgreSQL (migration 4)
@pytest.mark.parametrize("field", ["hashes", "refresh_token_hashes"])
def test_find_follows_every_change(store, field):
    store.put("grants", "g1", {"grant_id": "g1", field: {"a": None}})
    store.put("grants", "g2", {"grant_id": "g2", field: {"b": 1.0}})
    assert store.find("grants", field, "b")["grant_id"] == "g2"
    store.change("grants", "g2", lambda r: r.update({field: {"c": None}}))
    assert store.find("grants", field, "b") is None
    assert store.find("grants", field, "c")["grant_id"] == "g2"
    store.change("grants", "g2", lambda r: r.pop(field))
    assert store.find("grants", field, "c") is None
    store.delete_where("grants", lambda r: r["grant_id"] == "g1")
    assert store.find("grants", field, "a") is None


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


def test_a_read_ahead_answers_each_first_get_then_reads_live(open_store):
    """`read_ahead`: the first get of each record in the block may come from the read
    made on entry (as of then); a second get, a write here, and the block's end all
    mean live reads again. Absent and expired records stay absent."""
    store, other = open_store(), open_store()
    store.put("clients", "c", {"client_id": "c", "n": 1})
    store.put("grants", "g", {"grant_id": "g", "n": 1})
    store.put("grants", "old", {"grant_id": "old", "expires_at": time.time() - 1})
    wanted = [("clients", "c"), ("grants", "g"), ("grants", "old"), ("grants", "none")]
    with store.read_ahead(wanted):
        other.put("clients", "c", {"client_id": "c", "n": 2})
        other.put("grants", "g", {"grant_id": "g", "n": 2})
        assert store.get("clients", "c")["n"] in (1, 2)  # the read ahead, or live
        assert store.get("clients", "c")["n"] == 2
        store.put("grants", "unrelated", {"grant_id": "unrelated"})  # a write drops the grants read ahead
        assert store.get("grants", "g")["n"] == 2
        assert store.get("grants", "old") is None and store.get("grants", "none") is None
        # a change right after a read ahead stores over what it read, not blindly
        other.put("clients", "c", {"client_id": "c", "n": 3})
    with store.read_ahead(wanted):
        other.put("clients", "c", {"client_id": "c", "n": 4})
        store.get("clients", "c")
        assert store.change("clients", "c", lambda r: r.update(n=r["n"] + 10)) is None
        assert other.get("clients", "c")["n"] == 14
    assert store.get("clients", "c")["n"] == 14


def test_a_block_that_assumes_known_records_never_acts_on_stale_ones(open_store):
    """`read_ahead(…, assume_known=True)` may answer from the records as this handle
    last saw them (PostgreSQL does, with no read), but nothing is decided on one that
    another handle changed since: the block reads it as it now is, or raises
    StaleRead having written nothing; run again, it reads the newest."""
    store, other = open_store(), open_store()
    wanted = [("clients", "c"), ("grants", "g")]

    def attempt(block):
        try:
            with store.read_ahead(wanted, assume_known=True):
                return block()
        except StaleRead:
            return "stale"

    def learn():  # this handle reads both, as a refresh does, and writes the grant
        return attempt(lambda: (store.get("clients", "c"), store.change("grants", "g", lambda r: None)))

    other.put("clients", "c", {"client_id": "c", "n": 1})
    other.put("grants", "g", {"grant_id": "g", "n": 1})
    learn()

    # A block that only reads: checked at its end.
    other.put("clients", "c", {"client_id": "c", "n": 2})
    assert attempt(lambda: store.get("clients", "c")["n"]) in (2, "stale")
    assert attempt(lambda: store.get("clients", "c")["n"]) == 2  # run again: the newest

    # A change of the grant decided on a client changed elsewhere is not written.
    learn()
    other.put("clients", "c", {"client_id": "c", "n": 3})

    def add_ten_if_client_is_three():
        client = store.get("clients", "c")
        return store.change("grants", "g", lambda r: r.update(n=r["n"] + 10, seen=client["n"]))

    outcome = attempt(add_ten_if_client_is_three)
    assert (outcome, other.get("grants", "g")["n"]) in ((None, 11), ("stale", 1))
    if outcome == "stale":
        assert attempt(add_ten_if_client_is_three) is None
    assert other.get("grants", "g") == {"grant_id": "g", "n": 11, "seen": 3}

    # A grant changed elsewhere: the change lands on the newest, as after any read.
    learn()
    other.put("grants", "g", {"grant_id": "g", "n": 100})
    assert attempt(lambda: store.change("grants", "g", lambda r: r.update(n=r["n"] + 1))) is None
    assert other.get("grants", "g")["n"] == 101

    # Any other write in the block is checked first: nothing is written on a stale read.
    learn()
    other.put("clients", "c", {"client_id": "c", "n": 4})

    def record_what_was_seen():
        store.put("users", "u", {"seen": store.get("clients", "c")["n"]})

    if attempt(record_what_was_seen) == "stale":
        assert other.get("users", "u") is None
        attempt(record_what_was_seen)
    assert other.get("users", "u") == {"seen": 4}

    # ... a delete too (a refresh presenting a rotated token deletes its grant).
    learn()
    other.put("clients", "c", {"client_id": "c", "n": 5})

    def delete_the_grant_unless_client_is_five():
        if store.get("clients", "c")["n"] != 5:
            store.delete("grants", "g")

    if attempt(delete_the_grant_unless_client_is_five) == "stale":
        attempt(delete_the_grant_unless_client_is_five)
    assert other.get("grants", "g") is not None

    # A record deleted elsewhere is not assumed back to life.
    learn()
    other.delete("clients", "c")
    assert attempt(lambda: store.get("clients", "c")) in (None, "stale")
    assert attempt(lambda: store.get("clients", "c")) is None


def test_a_key_holding_nul_is_never_stored_and_reads_as_absent(store):
    """PostgreSQL's text cannot hold NUL (psycopg raised on a lookup of `a%00b`: a
    500); every backend agrees that such a key is never stored: reads, `change` and
    `delete` answer as for an absent record, `put` and `add` refuse it, and nothing
    else changes."""
    store.put("clients", "a", {"client_id": "a"})
    store.put("grants", "g", {"grant_id": "g", "hashes": {"h": None}})
    for key in ("a\x00", "\x00", "a\x00b"):
        assert store.get("clients", key) is None
        assert store.find("grants", "hashes", key) is None
        assert store.change("clients", key, lambda record: 1) is None
        assert store.delete("clients", key) is None
        with store.read_ahead([("clients", key), ("clients", "a")]):
            assert store.get("clients", key) is None
            assert store.get("clients", "a") == {"client_id": "a"}
        with pytest.raises(ValueError):
            store.put("clients", key, {"client_id": key})
        with pytest.raises(ValueError):
            store.add("clients", key, {"client_id": key})
    assert set(store.scan("clients")) == {"a"} and store.get("grants", "g") is not None


# -- the short-lived state (`SharedState`, `Store.shared`) -----------------------------------


def _handles(open_store, state):
    """Two handles on one short-lived state: two instances' on a database; for a state
    in process (one process serves the store), the same one twice."""
    return [state, state] if state.in_process else [open_store().shared for _ in range(2)]


def test_shared_state_keeps_each_entry_until_its_expiry(store):
    state, now = store.shared, time.time()
    assert state.get("k", "a") is None and state.pop("k", "a") is None
    state.put("k", "a", {"n": 1}, now + 60)
    state.put("other", "a", [1, 2], now + 60)  # kinds apart
    state.put("k", "gone", {"n": 2}, now - 1)  # expired as put: absent
    assert state.get("k", "a") == {"n": 1} and state.get("other", "a") == [1, 2]
    assert state.get("k", "gone") is None and state.pop("k", "gone") is None
    state.put("k", "a", {"n": 3}, now + 60)  # replaced
    assert state.pop("k", "a") == {"n": 3}
    assert state.get("k", "a") is None and state.get("other", "a") == [1, 2]


def test_shared_state_update_is_a_read_modify_write_of_one_entry(open_store):
    """Values as `update` sees them, what it returns, and deletion; and from several
    handles (instances) and threads at once, no update is lost."""
    state, now = open_store().shared, time.time()
    assert state.update("k", "a", lambda held: (None, 0.0, held)) is None  # absent, stays absent
    assert state.update("k", "a", lambda held: ({"n": 1}, now + 60, "made")) == "made"
    assert state.update("k", "a", lambda held: ({"n": held["n"] + 1}, now + 60, held["n"])) == 1
    assert state.get("k", "a") == {"n": 2}
    state.update("k", "a", lambda held: (None, 0.0, None))
    assert state.get("k", "a") is None
    state.put("k", "old", {"n": 5}, now - 1)
    assert state.update("k", "old", lambda held: (None, 0.0, held)) is None  # expired: absent

    handles = _handles(open_store, state)
    errors = []

    def increment(each) -> None:
        try:
            for _ in range(10):
                each.update("k", "count", lambda held: ((held or 0) + 1, time.time() + 60, None))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=increment, args=(handles[i % 2],)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and handles[0].get("k", "count") == 60


def test_shared_state_locked_holds_an_entry_and_keeps_what_the_block_put_back(store):
    state, now = store.shared, time.time()
    state.put("k", "a", {"n": 1}, now + 60)
    with state.locked("k", "a") as holder:
        assert holder == [{"n": 1}]
        holder[0] = {"n": 2}
    assert state.get("k", "a") == {"n": 2}
    with pytest.raises(RuntimeError), state.locked("k", "a") as holder:
        holder[0] = {"n": 3}
        raise RuntimeError("the block failed")
    assert state.get("k", "a") == {"n": 2}  # nothing kept from a failed block
    with state.locked("k", "absent") as holder:
        assert holder == [None]
        holder[0] = {"n": 4}
    assert state.get("k", "absent") is None  # an absent entry stays absent

    inside, order = threading.Event(), []

    def first() -> None:
        with state.locked("k", "a") as held:
            inside.set()
            time.sleep(0.2)
            held[0] = {"n": 5}
            order.append("first")

    thread = threading.Thread(target=first)
    thread.start()
    inside.wait(5)
    with state.locked("k", "a") as holder:  # waits for the first block
        order.append("second")
        assert holder == [{"n": 5}]
    thread.join()
    assert order == ["first", "second"]


def test_shared_state_append_within_admits_exactly_its_limit(open_store):
    """A sliding window's check-and-record: old times leave the window, at most
    `limit` stay; from several handles and threads at once, exactly `limit` pass."""
    state, t = open_store().shared, time.time()
    assert [state.append_within("w", "a", t + i, 60, 2) for i in range(3)] == [True, True, False]
    assert state.get("w", "a") == [t, t + 1]
    assert state.append_within("w", "a", t + 60, 60, 2) is True  # the first left the window
    assert state.get("w", "a") == [t + 1, t + 60]

    handles = _handles(open_store, state)
    start, admitted = threading.Barrier(16), []

    def hit(each) -> None:
        start.wait()
        admitted.append(each.append_within("w", "b", time.time(), 60, 5))

    threads = [threading.Thread(target=hit, args=(handles[i % 2],)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 5 and len(handles[0].get("w", "b")) == 5


def test_shared_state_delete_where_and_purge(store):
    state, now = store.shared, time.time()
    state.put("code", "a", {"client_id": "c1"}, now + 60)
    state.put("code", "b", {"client_id": "c2"}, now + 60)
    state.delete_where("code", "client_id", "c1")
    assert state.get("code", "a") is None and state.get("code", "b") == {"client_id": "c2"}
    state.put("code", "old", {"client_id": "c3"}, now - 3600)  # long expired
    assert state.purge(dry_run=True) == 1
    assert state.purge() == 1 and state.purge() == 0
    assert state.get("code", "b") == {"client_id": "c2"}


def test_a_write_counted_by_the_shared_state_is_stored_only_within_its_window(store):
    """`Store.put_counted`: the record and its window's event together, or neither."""
    t = time.time()
    for i in range(2):
        assert store.put_counted("clients", f"c{i}", {"client_id": f"c{i}"}, "w", "net", t + i, 60, 2) is True
    assert store.put_counted("clients", "c2", {"client_id": "c2"}, "w", "net", t + 2, 60, 2) is False
    assert store.get("clients", "c2") is None and set(store.scan("clients")) == {"c0", "c1"}
    assert store.shared.get("w", "net") == [t, t + 1]
    with pytest.raises(ValueError):  # a write that fails takes its event back
        store.put_counted("clients", "a\x00", {"client_id": "x"}, "w", "other", t, 60, 2)
    assert store.shared.get("w", "other") in (None, [])
