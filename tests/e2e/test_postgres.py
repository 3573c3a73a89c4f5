"""OAUTH_STORE=postgresql://…: the server, the CLI and backups on a real PostgreSQL
(Debian's package, started by the tests: tests/support/postgres.py)."""

from __future__ import annotations

import base64
import json
import time

import requests
from support.harness import CHATGPT_CALLBACK
from support.oauth import exchange, get_code, refresh, register, tokens_for, verify


def test_whole_flow_and_a_restart_on_postgresql(make_server, postgres_url):
    server = make_server(OAUTH_STORE=postgres_url)
    client, tokens = tokens_for(server, register(server, redirect_uris=[CHATGPT_CALLBACK]))
    assert verify(server, tokens["access_token"]).status_code == 200
    assert not list(server.data_dir.glob("*.json"))  # nothing went to files
    server.restart()
    assert verify(server, tokens["access_token"]).status_code == 200
    refreshed = refresh(server, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    replay = refresh(server, client, tokens["refresh_token"])  # inside the grace window: allowed
    assert replay.status_code == 200
    code, verifier, _ = get_code(server, client)
    assert exchange(server, client, code, verifier).status_code == 200
    assert requests.get(server.url("/healthz"), timeout=10).status_code == 200


def test_a_database_that_goes_away_is_503_and_the_server_recovers_by_itself(make_server, postgres, postgres_url):
    server = make_server(OAUTH_STORE=postgres_url)
    client, tokens = tokens_for(server)
    postgres.stop()
    try:
        for response in (
            verify(server, tokens["access_token"]),
            refresh(server, client, tokens["refresh_token"]),
            requests.post(server.url("/register"), json={"redirect_uris": [CHATGPT_CALLBACK]}, timeout=30),
        ):
            assert response.status_code == 503, (response.request.url, response.status_code, response.text[:200])
            assert response.json()["error"] == "temporarily_unavailable"
        health = requests.get(server.url("/healthz"), timeout=30)
        assert health.status_code == 503
    finally:
        postgres.start()
    # Recovered by itself: /healthz and then every kind of request answer again within
    # seconds (the pool refills its connections in the background, on its own backoff,
    # so a request may still meet a 503 for a moment after /healthz passes).
    deadline = time.time() + 20
    while not (
        requests.get(server.url("/healthz"), timeout=30).status_code == 200
        and verify(server, tokens["access_token"]).status_code == 200
    ):
        assert time.time() < deadline, "the server did not recover"
        time.sleep(0.2)
    while (renewed := refresh(server, client, tokens["refresh_token"])).status_code == 503:
        assert time.time() < deadline, "refresh did not recover"  # a 503 rotated nothing: the same token again
        time.sleep(0.2)
    assert renewed.status_code == 200, renewed.text
    assert "Traceback" not in server.output


def test_two_instances_behind_round_robin_nginx_act_as_one(tmp_path, postgres_url, test_ca):
    """Two server processes on one database behind nginx (examples/nginx-two-instances.conf):
    whole flows whose steps alternate between them, a code redeemed through one and
    replayed through the other, a CLI deletion seen by both at once, and one instance
    SIGKILLed mid-run while the other carries on."""
    import signal

    from support.harness import PASSWORD, Server, free_port, seed_users
    from support.oauth import Browser
    from support.proxies import tls_proxy
    from support.tls import TEST_HOST

    listen = free_port()
    issuer = f"https://{TEST_HOST}:{listen}"
    seed_users(tmp_path / "a", {"alice": PASSWORD}, postgres_url)
    instances = [
        Server(tmp_path / name, tmp_path, OAUTH_ISSUER=issuer, OAUTH_STORE=postgres_url).start() for name in "ab"
    ]
    try:
        ports = {8000: instances[0].port, 8001: instances[1].port}
        # Each instance reached directly, past nginx (only its URLs are used).
        direct = [Server(tmp_path / "x", tmp_path, PORT=str(s.port), OAUTH_ISSUER=s.base) for s in instances]
        with tls_proxy("nginx", "nginx-two-instances.conf", tmp_path, listen, ports, test_ca):
            front = Server(tmp_path / "front", tmp_path, OAUTH_ISSUER=issuer)
            front.base = issuer
            for _ in range(3):  # each flow's steps land on both instances in turn
                client, tokens = tokens_for(front, browser=Browser(front))
                for _ in range(2):
                    assert verify(front, tokens["access_token"]).status_code == 200
                renewed = refresh(front, client, tokens["refresh_token"])
                assert renewed.status_code == 200, renewed.text

            # A code redeemed at one instance, replayed at the other: the grant dies.
            client = register(front, redirect_uris=[CHATGPT_CALLBACK])
            code, verifier, _ = get_code(front, client)
            first = exchange(direct[0], client, code, verifier)
            assert first.status_code == 200, first.text
            again = exchange(direct[1], client, code, verifier)  # the retry window holds across instances
            assert again.status_code == 200 and again.json() == first.json()
            replay = exchange(direct[1], client, code, "x" * 43)  # another verifier: a replay
            assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
            access = first.json()["access_token"]
            assert all(verify(d, access).status_code == 401 for d in direct)

            # A CLI deletion is seen by both instances at once.
            client, tokens = tokens_for(front)
            assert all(verify(d, tokens["access_token"]).status_code == 200 for d in direct)
            deleted = instances[0].cli("delete-client", "--yes", "--", client["client_id"])
            assert deleted.returncode == 0, deleted.stderr
            assert all(verify(d, tokens["access_token"]).status_code == 401 for d in direct)

            # One instance killed outright: the other serves every step.
            instances[1].proc.send_signal(signal.SIGKILL)
            instances[1].proc.wait(10)
            client, tokens = tokens_for(front)
            assert refresh(front, client, tokens["refresh_token"]).status_code == 200
    finally:
        for server in instances:
            server.stop()


MIGRATING = """
import sys
from app.storage.postgres import PostgresStore
sys.stdin.readline()  # every process starts at the same moment
store = PostgresStore(sys.argv[1])
print(store.schema_version())
"""


def test_instances_migrating_one_empty_database_at_once(postgres, postgres_url):
    import os
    import subprocess
    import sys

    from support.harness import ROOT

    from app.storage.postgres import MIGRATIONS

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", MIGRATING, postgres_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for _ in range(4)
    ]
    time.sleep(1.0)  # all imported and waiting
    for proc in procs:
        proc.stdin.write("go\n")
        proc.stdin.flush()
    outputs = [proc.communicate(timeout=60) for proc in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    latest = MIGRATIONS[-1][0]
    assert [out.strip() for out, _ in outputs] == [str(latest)] * 4
    database = postgres_url.rsplit("/", 1)[1]
    applied = postgres.psql("SELECT version FROM schema_migrations ORDER BY version", database).split()
    assert applied == [str(v) for v, _ in MIGRATIONS]


def test_backup_from_files_restores_into_postgresql_and_back(tmp_path, make_server, postgres_url):
    """`flask oauth backup` on a file store, `restore` into PostgreSQL: the same
    clients and grants, and tokens issued before the move still work; then back."""
    from support.harness import run_cli

    files = make_server()
    client, tokens = tokens_for(files)
    made = files.cli("backup", "--output", str(tmp_path / "backups"))
    assert made.returncode == 0, made.stderr
    (backup,) = (tmp_path / "backups").glob("*.json")
    files.stop()

    on_postgres = make_server(data_dir=tmp_path / "pg-data", OAUTH_STORE=postgres_url, PORT=str(files.port))
    # The database holds a user already: `restore` alone refuses; --merge adds the
    # client and the keys it lacks, and no grant (a grant missing may have been revoked).
    alone = on_postgres.cli("restore", str(backup))
    assert alone.returncode == 1 and "choose --clear" in alone.stderr, alone.stderr
    merged = on_postgres.cli("restore", "--merge", str(backup))
    assert "clients: 1 added" in merged.stdout and "restores no grant" in merged.stdout, merged.stderr
    assert refresh(on_postgres, client, tokens["refresh_token"]).status_code == 400
    restored = on_postgres.cli("restore", "--clear", "--yes", str(backup))
    assert restored.returncode == 0, restored.stderr
    listed = json.loads(on_postgres.cli("list-clients", "--json").stdout)
    assert client["client_id"] in {c["client_id"] for c in listed}
    assert verify(on_postgres, tokens["access_token"]).status_code == 200  # same keys, same grant
    renewed = refresh(on_postgres, client, tokens["refresh_token"])
    assert renewed.status_code == 200, renewed.text

    made = on_postgres.cli("backup", "--output", str(tmp_path / "back"))
    assert made.returncode == 0, made.stderr
    (back,) = (tmp_path / "back").glob("*.json")
    on_postgres.stop()
    fresh = tmp_path / "fresh"
    assert run_cli(fresh, "restore", "--clear", "--yes", str(back)).returncode == 0
    again = make_server(users={}, data_dir=fresh, PORT=str(files.port))
    assert verify(again, renewed.json()["access_token"]).status_code == 200
    assert refresh(again, client, renewed.json()["refresh_token"]).status_code == 200


def test_guesses_spread_over_instances_meet_one_throttle(make_server, postgres_url):
    """Login throttles and the registration rate live in the shared database: ten
    wrong passwords spread over two instances, and the eleventh is refused by either."""
    from support.harness import PASSWORD
    from support.oauth import Browser, csrf_of

    first = make_server(OAUTH_STORE=postgres_url, OAUTH_REGISTRATION_RATE="3")
    second = make_server(users={}, OAUTH_STORE=postgres_url, OAUTH_REGISTRATION_RATE="3")
    browsers = [Browser(first), Browser(second)]
    tokens = [csrf_of(b.get(s.url("/login")).text) for b, s in zip(browsers, (first, second), strict=True)]

    def guess(i: int, password: str) -> int:
        server = (first, second)[i % 2]
        form = {"csrf_token": tokens[i % 2], "username": "alice", "password": password}
        return browsers[i % 2].post(server.url("/login"), data=form).status_code

    assert [guess(i, f"guess{i}") for i in range(10)] == [401] * 10
    assert guess(10, "guess10") == 429 and guess(11, PASSWORD) == 429

    statuses = [
        requests.post(s.url("/register"), json={"redirect_uris": [CHATGPT_CALLBACK]}, timeout=10).status_code
        for s in (first, second, first, second)
    ]
    assert statuses == [201, 201, 201, 429]


def test_a_key_rotated_at_one_instance_verifies_at_once_at_the_other(postgres_url, tmp_path):
    """An instance trusts the keys' revision for a moment (one query less per token
    check); a token signed with a key it has not read yet makes it read the keys.
    Two apps on one database and one issuer, in this process."""
    from joserfc import jwt

    from app import create_app
    from app.config import Config

    config = Config.from_env({"OAUTH_STORE": postgres_url, "OAUTH_DATA_DIR": str(tmp_path / "d")}, env_file=None)
    first, second = create_app(config), create_app(config)

    def signed_by(app) -> str:
        key = app.extensions["oauth"].keys.current
        header = {"alg": "RS256", "kid": key.kid, "typ": "at+jwt"}
        return jwt.encode(header, {"iss": config.issuer, "exp": int(time.time()) + 60}, key)

    verifier = first.extensions["oauth"].verifier
    old = signed_by(first)
    assert verifier.decode(old)["iss"] == config.issuer  # the first has read the keys
    new_kid = second.extensions["oauth"].keys.rotate()
    fresh = signed_by(second)
    assert json.loads(base64.urlsafe_b64decode(fresh.split(".")[0] + "=="))["kid"] == new_kid
    assert verifier.decode(fresh)["iss"] == config.issuer
    assert verifier.decode(old)["iss"] == config.issuer  # the old key still verifies


def test_refresh_tokens_stored_before_migration_4_still_refresh_after_it(make_server, postgres_url, monkeypatch):
    """Migration 4 moves the refresh-token hashes of earlier grants into a column of
    their own: a grant stored before it (its token names no grant) is found after."""
    import hashlib
    import secrets

    from app.storage import postgres
    from app.storage.postgres import schema

    monkeypatch.setattr(schema, "MIGRATIONS", [m for m in schema.MIGRATIONS if m[0] < 4])
    # (a version before the per-address client cap, whose column came in migration 5)
    before = make_server(in_thread=True, OAUTH_STORE=postgres_url, OAUTH_MAX_CLIENTS_PER_ADDRESS="0")
    client, tokens = tokens_for(before)
    before.stop()
    store = postgres.PostgresStore(postgres_url)
    assert store.schema_version() == 3
    from support.jwt import jwt_parts

    grant_id = jwt_parts(tokens["access_token"])[1]["grant_id"]
    record = store.get("grants", grant_id)
    legacy = secrets.token_urlsafe(32)
    record.pop("token_hashes")
    record["refresh_token_hashes"] = {hashlib.sha256(legacy.encode()).hexdigest(): None}
    store.put("grants", grant_id, record)
    store.close()
    monkeypatch.undo()

    after = make_server(users={}, in_thread=True, OAUTH_STORE=postgres_url, PORT=str(before.port))
    refreshed = refresh(after, client, legacy)
    assert refreshed.status_code == 200, refreshed.text
    assert refreshed.json()["refresh_token"].startswith(f"{grant_id}.")
    assert refresh(after, client, refreshed.json()["refresh_token"]).status_code == 200


def _statements_naming(postgres, database: str, name: str, work) -> list[str]:
    """The statements PostgreSQL ran while `work()` ran that name `name` (in their text
    or parameters), from its own log (`log_statement = all` for `database`)."""
    import re

    log = postgres.folder / "log"
    start = log.stat().st_size
    work()
    with log.open(encoding="utf-8", errors="replace") as text:
        text.seek(start)
        # an entry: its LOG line and the DETAIL lines after it (the parameters)
        entries = re.split(r"\n(?=\S+ \S+ \S+ \[\d+\] LOG:)", text.read())
    return [e for e in entries if name in e and re.search(r"LOG:  (statement|execute [^:]*):", e)]


def _two_instances(make_server, postgres_url: str) -> list:
    """Two server processes on one database and one issuer, each reached directly."""
    first = make_server(OAUTH_STORE=postgres_url)
    second = make_server(users={}, OAUTH_STORE=postgres_url, OAUTH_ISSUER=first.issuer)
    second.issuer = second.base  # only where the tests send its requests
    return [first, second]


def test_an_instance_refreshes_a_grant_it_refreshed_last_in_one_statement(make_server, postgres, postgres_url):
    """The instance that served a grant's last refresh assumes its client and grant as
    it left them: the next refresh reads neither, and its one statement, the grant's
    rewrite, checks both. Another instance's first refresh of it reads them first, and
    where the rows assumed turn out stale, a refresh costs one read more."""
    from app.repositories import grant_named_by

    database = postgres_url.rsplit("/", 1)[1]
    postgres.psql(f"ALTER DATABASE {database} SET log_statement = 'all'")
    first, second = _two_instances(make_server, postgres_url)
    client, tokens = tokens_for(first)
    token = tokens["refresh_token"]
    grant_id = grant_named_by(token)
    assert grant_id

    def refresh_at(server):
        nonlocal token
        response = refresh(server, client, token)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]

    refresh_at(first)  # it now knows both rows as it wrote them
    again = _statements_naming(postgres, database, grant_id, lambda: refresh_at(first))
    assert len(again) == 1 and "UPDATE records" in again[0] and client["client_id"] in again[0], again
    elsewhere = _statements_naming(postgres, database, grant_id, lambda: refresh_at(second))
    assert len(elsewhere) == 2 and "SELECT" in elsewhere[0] and "UPDATE records" in elsewhere[1], elsewhere
    # Back at the first, whose grant is now stale: the token presented is not in the
    # grant it assumed, so it reads the grant, finds it changed, and starts again.
    back = _statements_naming(postgres, database, grant_id, lambda: refresh_at(first))
    assert [e.split("LOG:", 1)[1].split()[2] for e in back] == ["SELECT", "SELECT", "WITH"], back


def test_refreshes_taking_turns_between_instances_never_act_on_what_one_saw_last(make_server, postgres_url):
    """Each instance remembers the client and grant as it last saw them. A client
    deleted behind an instance's back (its grant left in place) is refused at once, not
    served from memory. Refreshes that alternate between two instances find the grant
    changed by the other every time: each is still served from the newest grant (no
    valid token taken for a replay, no grant revoked)."""
    from app.config import Config
    from app.repositories import expiry_rules
    from app.storage.postgres import PostgresStore

    instances = _two_instances(make_server, postgres_url)
    first = instances[0]

    client, tokens = tokens_for(first)
    token = tokens["refresh_token"]
    for _ in range(2):  # the first learns both rows, the second assumes them
        response = refresh(first, client, token)
        assert response.status_code == 200, response.text
        token = response.json()["refresh_token"]
    store = PostgresStore(postgres_url, expiry_rules(Config()))
    try:
        assert store.delete("clients", client["client_id"]) is not None
        assert any(g["client_id"] == client["client_id"] for g in store.scan("grants").values())
    finally:
        store.close()
    refused = refresh(first, client, token)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client", refused.text

    client, tokens = tokens_for(first)
    token = tokens["refresh_token"]
    for turn in range(8):
        response = refresh(instances[turn % 2], client, token)
        assert response.status_code == 200, (turn, response.text)
        token = response.json()["refresh_token"]
    # (no other request in between: /verify reads the grant, and that read is remembered)
    assert all(verify(s, response.json()["access_token"]).status_code == 200 for s in instances)
    for server in instances:
        assert "Traceback" not in server.output and "replay.detected" not in server.output


def test_registrations_from_one_address_at_two_instances_at_once_store_exactly_the_rate(
    make_server, postgres, postgres_url
):
    """The rate is counted in the statement that stores the client: twelve registrations
    from one address at once, spread over two instances, store four clients and refuse
    eight; and a registration is that one statement. An instance that saw the address
    refused refuses it again without a statement, until the window frees."""
    from concurrent.futures import ThreadPoolExecutor

    from app.storage.postgres import PostgresStore

    database = postgres_url.rsplit("/", 1)[1]
    postgres.psql(f"ALTER DATABASE {database} SET log_statement = 'all'")
    instances = [
        make_server(OAUTH_STORE=postgres_url, OAUTH_REGISTRATION_RATE="4"),
        make_server(users={}, OAUTH_STORE=postgres_url, OAUTH_REGISTRATION_RATE="4"),
    ]
    body = {"redirect_uris": [CHATGPT_CALLBACK], "token_endpoint_auth_method": "none"}

    def post(i: int, address: str = "203.0.113.40") -> requests.Response:
        server = instances[i % 2]
        return requests.post(server.url("/register"), json=body, headers={"X-Forwarded-For": address}, timeout=10)

    store = PostgresStore(postgres_url)
    try:
        before = store.count("clients")
        with ThreadPoolExecutor(12) as pool:
            statuses = [r.status_code for r in pool.map(post, range(12))]
        assert sorted(statuses) == [201] * 4 + [429] * 8
        assert store.count("clients") == before + 4
    finally:
        store.close()

    # the per-address cap's count, then the one statement that stores
    one = _statements_naming(postgres, database, "203.0.113.41", lambda: post(0, "203.0.113.41"))
    assert len(one) == 2 and "unused_client_network" in one[0] and "INSERT INTO records" in one[1], one
    again: list[requests.Response] = []
    assert _statements_naming(postgres, database, "203.0.113.40", lambda: again.append(post(0))) == []
    assert again[0].status_code == 429 and 1 <= int(again[0].headers["Retry-After"]) <= 60


def test_purge_expired_removes_the_databases_expired_short_lived_entries(tmp_path, postgres, postgres_url):
    """Instances sweep expired codes, pending logins and throttle windows as they go;
    `flask oauth purge-expired` removes them too, from a database no instance uses."""
    from support.harness import base_env, run_cli

    from app.storage.postgres import EPHEMERAL_GRACE, PostgresStore

    store = PostgresStore(postgres_url)
    try:
        now = time.time()
        store.shared.put("code", "live", {"n": 1}, now + 600)  # the store's first put sweeps: first
        store.shared.put("code", "long-expired", {"n": 2}, now - EPHEMERAL_GRACE - 5)
        store.shared.put("code", "just-expired", {"n": 3}, now - 1)  # within the grace
        env = base_env(tmp_path, OAUTH_STORE=postgres_url)
        dry = run_cli(tmp_path, "purge-expired", "--dry-run", "--json", env=env)
        assert dry.returncode == 0 and json.loads(dry.stdout)["short_lived_removed"] == 1, dry.stderr
        done = run_cli(tmp_path, "purge-expired", "-v", env=env)
        assert done.returncode == 0 and "1 expired short-lived entries" in done.stdout, done.stderr
        database = postgres_url.rsplit("/", 1)[1]
        left = postgres.psql("SELECT key FROM ephemeral WHERE kind = 'code' ORDER BY key", database)
        assert left.split() == ["just-expired", "live"]
    finally:
        store.close()


def test_threads_keep_a_connection_and_give_it_back_when_they_end(postgres, postgres_url):
    """A thread keeps the connection it used last; when the thread ends, the connection
    goes back to the pool. A pool of five (three may be kept) serves a dozen threads one
    after another, and the database sees no more connections than the pool's size."""
    import gc
    import threading

    from app.storage.postgres import PostgresStore

    store = PostgresStore(postgres_url, max_connections=5)
    database = postgres_url.rsplit("/", 1)[1]
    try:
        for i in range(12):
            worker = threading.Thread(target=store.shared.put, args=("test", f"k{i}", i, time.time() + 60))
            worker.start()
            worker.join()
            del worker
            gc.collect()
        assert store.shared.get("test", "k11") == 11
        connections = postgres.psql(f"SELECT count(*) FROM pg_stat_activity WHERE datname = '{database}'")
        assert int(connections) <= 5
    finally:
        store.close()


def test_a_kept_connection_the_database_closed_is_replaced_before_use(make_server, postgres, postgres_url):
    """Connections the database ended while they idled (a restart, an administrator)
    are tested before use once idle a while: no request fails for them."""
    server = make_server(OAUTH_STORE=postgres_url)
    client, tokens = tokens_for(server)
    database = postgres_url.rsplit("/", 1)[1]
    ended = postgres.psql(f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}'")
    assert int(ended) >= 1
    time.sleep(2.2)  # CHECK_AFTER_IDLE
    for _ in range(8):  # whichever threads serve them
        assert verify(server, tokens["access_token"]).status_code == 200
    assert refresh(server, client, tokens["refresh_token"]).status_code == 200


def test_the_per_address_client_cap_on_postgresql(make_server, postgres_url):
    from support.registration import check_the_per_address_cap

    check_the_per_address_cap(make_server(in_thread=True, OAUTH_STORE=postgres_url, OAUTH_MAX_CLIENTS_PER_ADDRESS="3"))


def test_eviction_at_the_client_cap_on_postgresql(make_server, postgres_url):
    from support.registration import check_eviction_at_the_cap

    check_eviction_at_the_cap(make_server(in_thread=True, OAUTH_STORE=postgres_url, OAUTH_MAX_CLIENTS="3"))


def test_every_store_counts_and_evicts_never_used_clients_alike(tmp_path, postgres_url):
    """`unused_clients_from` and `evict_oldest_unused_client` on the file store, memory
    and PostgreSQL: only clients never used (no `last_used_at`) count and may go,
    oldest first; a used client, or a resource server, never goes."""
    from app.config import Config
    from app.repositories import expiry_rules
    from app.storage import PersistentStore
    from app.storage.memory import MemoryStore
    from app.storage.postgres import PostgresStore

    rules = expiry_rules(Config.from_env({"OAUTH_DATA_DIR": str(tmp_path)}, env_file=None))
    now = time.time()

    def client(key: str, age: float, used: bool = False, **extra) -> dict:
        return {
            "client_id": key,
            "created_at": now - age,
            "last_used_at": now if used else None,
            "metadata": {"redirect_uris": [CHATGPT_CALLBACK]},
            **extra,
        }

    postgres = PostgresStore(postgres_url, rules)
    postgres.migrate()
    try:
        for store in (PersistentStore(tmp_path / "files", rules), MemoryStore(rules), postgres):
            store.put("clients", "used", client("used", 500, used=True, registered_from="2001:db8::/64"))
            store.put("clients", "operator", client("operator", 400, resource_server=True))
            store.put("clients", "older", client("older", 300, registered_from="2001:db8::/64"))
            store.put("clients", "old", client("old", 200, registered_from="2001:db8::/64"))
            store.put("clients", "other", client("other", 100, registered_from="192.0.2.1"))
            assert store.unused_clients_from("2001:db8::/64") == 2, store
            assert store.unused_clients_from("192.0.2.1") == 1
            assert [store.evict_oldest_unused_client()["client_id"] for _ in range(3)] == ["older", "old", "other"]
            assert store.evict_oldest_unused_client() is None, store
            assert sorted(store.scan("clients")) == ["operator", "used"]
            assert store.unused_clients_from("2001:db8::/64") == 0
            # Counted as it changes, after it was counted once (the file store keeps an
            # index of the never-used clients by network that follows each write).
            store.put("clients", "late", client("late", 50, registered_from="2001:db8::/64"))
            assert store.unused_clients_from("2001:db8::/64") == 1
            store.put("clients", "late", client("late", 50, used=True, registered_from="2001:db8::/64"))
            assert store.unused_clients_from("2001:db8::/64") == 0
    finally:
        postgres.close()


def test_a_database_of_the_previous_release_is_carried_forward(make_server, postgres_url, monkeypatch):
    """Upgrading on PostgreSQL: a database written by the release before (schema 4, no
    per-network client columns) is migrated at the next start, and everything in it
    keeps working: its client, its refresh token, its user; new registrations count
    per network as this release does."""
    from app.storage import postgres
    from app.storage.postgres import schema

    previous = [m for m in schema.MIGRATIONS if m[0] <= 4]
    monkeypatch.setattr(schema, "MIGRATIONS", previous)
    # (the previous release had no per-network cap: nothing here asks for its columns)
    before = make_server(in_thread=True, OAUTH_STORE=postgres_url, OAUTH_MAX_CLIENTS_PER_ADDRESS="0")
    client, tokens = tokens_for(before)
    before.stop()
    old = postgres.PostgresStore(postgres_url)
    assert old.schema_version() == 4
    old.close()
    monkeypatch.undo()

    after = make_server(users={}, in_thread=True, OAUTH_STORE=postgres_url, PORT=str(before.port))
    current = postgres.PostgresStore(postgres_url)
    assert current.schema_version() == schema.MIGRATIONS[-1][0] > 4
    current.close()
    assert verify(after, tokens["access_token"]).status_code == 200
    refreshed = refresh(after, client, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    assert client["client_id"] in after.cli("list-clients", "--json").stdout
    assert get_code(after, client)[0]  # alice, stored by the previous release, still signs in
    register(after)  # counted per network, in the new columns
