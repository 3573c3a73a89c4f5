"""`make bench`: our endpoints beside a bare Flask route on waitress, measured in the same
run, and how write-heavy endpoints behave as the store grows.

Every figure is operations per second of *server* CPU (user + system time of the server
process, read from /proc), with 4 concurrent keep-alive clients, so the load generator's
own cost and the machine's other work do not count. Registration and public-client
refresh run against a store pre-filled with 100 and with 10,000 clients and grants.
Start-up time (process start to the first 200 from /healthz) and resident memory are
measured at 10,000 + 10,000. In gateway mode, OAUTH_MAX_STREAMS idle streams are held
open against a silent upstream: /healthz's latency beside them, and the memory and CPU
each costs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.storage import PersistentStore  # noqa: E402

CLIENTS = 4
SECONDS = 3.0
#: one-second rounds of the gateway and of its upstream reached directly, in turns
GATEWAY_ROUNDS = 9
#: rounds of each hot-path cell, in turns with the floor (SECONDS in all)
HOT_ROUNDS = 3
PASSWORD = "a bench password"
FLOOR = """
import sys
from flask import Flask
from waitress import serve
app = Flask("floor")
@app.get("/floor")
def floor():
    return "ok"
serve(app, host="127.0.0.1", port=int(sys.argv[1]), threads=16, _quiet=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int, database: int | None = None) -> float:
    """CPU time of `pid`, plus that of a PostgreSQL cluster's postmaster `database`
    and every backend it started, when given: a database's work counts."""
    total = _cpu_of(pid)
    if database is not None:
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat.parent.name) == database or int(fields[1]) == database:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 60) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return time.monotonic() - started
        except requests.RequestException:
            pass
        time.sleep(0.01)
    raise SystemExit(f"{url} did not come up")


def measure(pid: int, work, database: int | None = None, seconds: float = SECONDS) -> tuple[int, float, float]:
    """Run `work(session, worker)` from CLIENTS threads for `seconds`; (ops, server CPU
    seconds with the database's, server CPU seconds alone)."""
    done = [0] * CLIENTS
    stop = time.monotonic() + seconds

    def run(worker: int) -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            work(session, worker)
            done[worker] += 1

    before, before_alone = cpu_seconds(pid, database), _cpu_of(pid)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done), cpu_seconds(pid, database) - before, _cpu_of(pid) - before_alone


def load(pid: int, work) -> tuple[float, int]:
    """`measure` as (ops per server CPU-second, ops)."""
    ops, used, _ = measure(pid, work)
    return ops / max(used, 1e-9), ops


def in_turns(cells: Mapping[str, Callable[[], tuple[int, float, float]]], rounds: int) -> dict[str, list[float]]:
    """Run each cell's `measure` a round at a time, in turns, `rounds` times, so that
    figures set against each other see the machine as it was (its speed drifts by a
    third over minutes here), every other round in the reverse order (so that a drift
    within a round favours none). Totals per cell: [ops, CPU, CPU of the server alone]."""
    totals = {name: [0.0, 0.0, 0.0] for name in cells}
    for round_ in range(rounds):
        for name in list(cells)[:: 1 if round_ % 2 == 0 else -1]:
            for i, figure in enumerate(cells[name]()):
                totals[name][i] += figure
    return totals


def fill(data: Path, size: int, issuer: str, store_url: str | None = None) -> list[tuple[str, str]]:
    """A store of `size` clients and grants; returns CLIENTS (client_id, refresh token)
    pairs for the refresh load."""
    now = time.time()
    clients, grants, chains = {}, {}, []
    for i in range(size):
        client_id = f"client-{i:06d}"
        token = f"grant-{i:06d}.{secrets.token_urlsafe(32)}"  # as app.repositories.new_refresh_token
        clients[client_id] = {
            "client_id": client_id,
            "client_id_issued_at": int(now),
            "client_secret_hash": None,
            "registration_access_token_hash": hashlib.sha256(b"x").hexdigest(),
            "created_at": now,
            "last_used_at": now,
            "metadata": {
                "client_name": f"bench {i}",
                "redirect_uris": ["https://app.example/cb"],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "response_types": ["code"],
            },
        }
        grants[f"grant-{i:06d}"] = {
            "grant_id": f"grant-{i:06d}",
            "client_id": client_id,
            "subject": "alice",
            "provider": "custom",
            "scope": "mcp",
            "resource": [issuer + "/mcp"],
            "issued_at": now,
            "refreshed_at": None,
            "expires_at": now + 86400,
            "token_hashes": {hashlib.sha256(token.encode()).hexdigest(): None},
        }
        if i < CLIENTS:
            chains.append((client_id, token))
    if store_url:
        from app.config import Config
        from app.repositories import expiry_rules
        from app.storage.postgres import PostgresStore

        store = PostgresStore(store_url, expiry_rules(Config()))
        store.replace_all({"clients": clients, "grants": grants})
        store.close()
    else:
        PersistentStore(data).replace_all({"clients": clients, "grants": grants})
    return chains


def server_env(data: Path, port: int, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("OAUTH_")},
        "PORT": str(port),
        "OAUTH_DATA_DIR": str(data),
        "OAUTH_REGISTRATION_RATE": "0",
        # A cap far above the fill: registration pays for its check, as a deployment's does.
        "OAUTH_MAX_CLIENTS": "1000000",
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def start_server(data: Path, port: int, **extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "wsgi.py")],
        env=server_env(data, port, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


class StoreServer:
    """A server on a store pre-filled with `size` clients and grants, and the two
    write-heavy requests to load it with: registration and public-client refresh."""

    def __init__(self, size: int, store_url: str | None = None, database: int | None = None):
        self.database = database
        self._tmp = tempfile.TemporaryDirectory()
        data = Path(self._tmp.name) / "data"
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.chains = [list(pair) for pair in fill(data, size, self.base, store_url)]
        # The registration rate stays on, as a deployment's does: each registration
        # comes from an address of its own (X-Forwarded-For, from a trusted loopback).
        store = {"OAUTH_STORE": store_url} if store_url else {}
        self.proc = start_server(data, port, OAUTH_REGISTRATION_RATE="30", **store)
        self._registrations = itertools.count()
        try:
            self.startup = wait_until_up(self.base + "/healthz", self.proc)
            self.rss = rss_mib(self.proc.pid)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self._tmp.cleanup()

    def register(self, session: requests.Session, worker: int) -> None:
        body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
        n = next(self._registrations)
        address = {"X-Forwarded-For": f"198.51.{n // 256 % 256}.{n % 256}"}
        assert session.post(self.base + "/register", json=body, headers=address, timeout=30).status_code == 201

    def refresh(self, session: requests.Session, worker: int) -> None:
        client_id, token = self.chains[worker]
        response = session.post(
            self.base + "/token",
            data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        self.chains[worker][1] = response.json()["refresh_token"]

    def measure(self, cell: str, seconds: float = SECONDS) -> tuple[int, float, float]:
        return measure(self.proc.pid, getattr(self, cell), self.database, seconds)


def bench_store_size(size: int) -> dict[str, float]:
    server = StoreServer(size)
    try:
        return {
            "startup": server.startup,
            "rss": server.rss,
            "refresh": load(server.proc.pid, server.refresh)[0],
            "register": load(server.proc.pid, server.register)[0],
        }
    finally:
        server.close()


def login_and_consent(session: requests.Session, base: str, client_id: str) -> str:
    """A first visit: /authorize, the login form, the consent form; the code."""
    _, challenge = pkce()
    response = session.get(base + "/authorize", params=auth_params(client_id, challenge), allow_redirects=False)
    for form in ("login", "consent"):
        page = session.get(
            base + response.headers["Location"]
            if response.headers["Location"].startswith("/")
            else response.headers["Location"]
        )
        fields = dict(re.findall(r'type="hidden" name="(\w+)" value="([^"]*)"', page.text))
        fields.update({"username": "bench", "password": PASSWORD} if form == "login" else {"decision": "approve"})
        response = session.post(base + "/" + form, data=fields, allow_redirects=False)
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def auth_params(client_id: str, challenge: str) -> dict[str, str]:
    return {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": "https://app.example/cb",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": secrets.token_urlsafe(8),
    }


def redeem(session: requests.Session, base: str, client_id: str, code: str, verifier: str) -> dict:
    response = session.post(
        base + "/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "https://app.example/cb",
            "client_id": client_id,
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


MCP_CALL = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}
MCP_BODY = json.dumps(MCP_CALL).encode()
MCP_HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2025-06-18",
}


class KeptAlivePost:
    """The MCP call as a `work(session, worker)`: a kept-alive socket per worker, the
    request written whole, the answer read to its Content-Length. The gateway cells
    measure throughput, not server CPU, and on two cores the load generator competes
    with the upstream and the gateway: `requests` spends about 0.7 ms of CPU a call
    here, this about 0.1 ms, as a client on another machine would spend none."""

    def __init__(self, url: str, headers: dict[str, str]):
        parts = urlsplit(url)
        self.address = (parts.hostname or "", parts.port or 80)
        fields = {"Host": parts.netloc, **MCP_HEADERS, **headers, "Content-Length": str(len(MCP_BODY))}
        head = f"POST {parts.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
        self.request = head.encode("latin-1") + MCP_BODY
        self.sockets: dict[int, socket.socket] = {}

    def __call__(self, session: object, worker: int) -> None:
        sock = self.sockets.get(worker)
        if sock is None:
            sock = self.sockets[worker] = socket.create_connection(self.address, timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(self.request)
        data = b""
        while b"\r\n\r\n" not in data:
            data += self._receive(sock)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), data
        length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
        assert length is not None, head
        while len(body) < int(length.group(1)):
            body += self._receive(sock)
        assert b'"result"' in body, body

    @staticmethod
    def _receive(sock: socket.socket) -> bytes:
        data = sock.recv(65536)
        if not data:
            raise SystemExit("the server closed a kept-alive connection")
        return data

    def close(self) -> None:
        for sock in self.sockets.values():
            sock.close()


def bench_hot_paths(floor: FloorServer) -> dict[str, float]:
    """The floor, metadata, /verify, introspection, the returning-person flow (ops per
    server CPU-second) and the gateway against its upstream reached directly."""
    from app.repositories import UserRepository

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        UserRepository(PersistentStore(data)).set_password("bench", PASSWORD, create=True)
        upstream_port, port = free_port(), free_port()
        base = f"http://127.0.0.1:{port}"
        upstream_url = f"http://127.0.0.1:{upstream_port}/mcp"
        upstream = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "bench_upstream.py"), str(upstream_port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        proc = start_server(data, port, OAUTH_UPSTREAM_URL=upstream_url)
        try:
            wait_until_up(base + "/healthz", proc)
            wait_for_port(upstream_port, upstream)
            browser = requests.Session()
            client_id = browser.post(
                base + "/register",
                json={"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"},
            ).json()["client_id"]
            login_and_consent(browser, base, client_id)  # now a returning person
            verifier, challenge = pkce()
            location = browser.get(
                base + "/authorize", params=auth_params(client_id, challenge), allow_redirects=False
            ).headers["Location"]
            code = parse_qs(urlsplit(location).query)["code"][0]
            access_token = redeem(browser, base, client_id, code, verifier)["access_token"]
            bearer = {"Authorization": f"Bearer {access_token}"}
            resource_server = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "flask", "oauth", "add-resource-server", "bench", "--json"],
                    env=server_env(data, port),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            introspector = (resource_server["client_id"], resource_server["client_secret"])
            cookies = browser.cookies

            def metadata(session: requests.Session, worker: int) -> None:
                assert session.get(base + "/.well-known/oauth-authorization-server", timeout=30).status_code == 200

            def verify(session: requests.Session, worker: int) -> None:
                assert session.get(base + "/verify", headers=bearer, timeout=30).status_code == 200

            def introspect(session: requests.Session, worker: int) -> None:
                response = session.post(
                    base + "/introspect", data={"token": access_token}, auth=introspector, timeout=30
                )
                assert response.json()["active"] is True

            def returning_person(session: requests.Session, worker: int) -> None:
                session.cookies.update(cookies)
                verifier, challenge = pkce()
                location = session.get(
                    base + "/authorize", params=auth_params(client_id, challenge), allow_redirects=False, timeout=30
                ).headers["Location"]
                redeem(session, base, client_id, parse_qs(urlsplit(location).query)["code"][0], verifier)

            # Each cell and the floor are measured in turns (a one-second round each,
            # HOT_ROUNDS times), so that a cell and the floor it is set against see
            # the machine as it was: measured one after the other, 3 s each, the
            # ratios moved with the machine's drift between them.
            seconds = SECONDS / HOT_ROUNDS
            cells = {
                name: functools.partial(measure, pid, work, seconds=seconds)
                for name, pid, work in (
                    ("floor", floor.proc.pid, floor.get),
                    ("metadata", proc.pid, metadata),
                    ("verify", proc.pid, verify),
                    ("introspection", proc.pid, introspect),
                    ("returning", proc.pid, returning_person),
                )
            }
            totals = in_turns(cells, HOT_ROUNDS)
            figures = {name: ops / max(cpu, 1e-9) for name, (ops, cpu, _) in totals.items()}

            # The two are measured in turns (one request each, then a one-second round
            # of load each, nine times), so that both see the machine as it was: its
            # speed drifts over seconds, and the upstream's share of two cores with it.
            ways = {"direct": KeptAlivePost(upstream_url, {}), "gateway": KeptAlivePost(base + "/mcp", bearer)}
            times: dict[str, list[float]] = {name: [] for name in ways}
            for work in ways.values():
                for _ in range(50):
                    work(None, 0)  # warm-up
            for _ in range(600):
                for name, work in ways.items():
                    started = time.perf_counter()
                    work(None, 0)
                    times[name].append(time.perf_counter() - started)
            rounds = in_turns(
                {name: functools.partial(measure, upstream.pid, work, seconds=1.0) for name, work in ways.items()},
                GATEWAY_ROUNDS,
            )
            for name in ways:
                figures[f"{name}_p50_ms"] = percentile(times[name], 0.5) * 1000
                figures[f"{name}_per_s"] = rounds[name][0] / GATEWAY_ROUNDS
            for way in ways.values():
                way.close()
            return figures
        finally:
            for process in (proc, upstream):
                process.terminate()
                process.wait(30)


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"helper exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


class FloorServer:
    """The floor: a bare Flask route on stock waitress, in its own process."""

    def __init__(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/floor"
        self.proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(port)], stdout=subprocess.DEVNULL)
        try:
            wait_until_up(self.url, self.proc)
        except BaseException:
            self.close()
            raise

    def get(self, session: requests.Session, worker: int) -> None:
        assert session.get(self.url, timeout=30).status_code == 200

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


#: idle gateway streams one instance holds (OAUTH_MAX_STREAMS's default)
STREAMS = 100


def _access_token(base: str) -> str:
    """A returning person's access token for a new public client."""
    browser = requests.Session()
    client_id = browser.post(
        base + "/register", json={"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}
    ).json()["client_id"]
    verifier, challenge = pkce()
    login_and_consent(browser, base, client_id)
    location = browser.get(
        base + "/authorize", params=auth_params(client_id, challenge), allow_redirects=False
    ).headers["Location"]
    return redeem(browser, base, client_id, parse_qs(urlsplit(location).query)["code"][0], verifier)["access_token"]


def _healthz_ms(base: str, count: int = 200) -> tuple[float, float]:
    """(p50, max) of /healthz in ms, one request after another on a kept-alive session."""
    session, times = requests.Session(), []
    for _ in range(count):
        started = time.perf_counter()
        assert session.get(base + "/healthz", timeout=30).status_code == 200
        times.append((time.perf_counter() - started) * 1000)
    return percentile(times, 0.5), max(times)


def bench_streams() -> dict[str, float]:
    """STREAMS idle event streams through the gateway (an upstream that opens each and
    then says nothing, tests/support/silent_upstream.py): /healthz beside them, the
    resident memory and idle CPU they cost, and what the threads set aside for them
    (OAUTH_MAX_STREAMS of them, started with the server) cost before any opens."""
    from app.repositories import UserRepository

    sys.path.insert(0, str(ROOT / "tests"))
    from support.silent_upstream import SilentUpstream  # type: ignore[import-not-found]

    upstream = SilentUpstream()
    procs: list[subprocess.Popen] = []
    figures: dict[str, float] = {}
    streams: list[socket.socket] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            bases = {}
            for cap in (1, STREAMS):  # the same server, with 1 and with STREAMS stream threads
                data = Path(tmp) / f"data{cap}"
                UserRepository(PersistentStore(data)).set_password("bench", PASSWORD, create=True)
                port = free_port()
                bases[cap] = f"http://127.0.0.1:{port}"
                env = {"OAUTH_MAX_STREAMS": str(cap), "OAUTH_MAX_STREAMS_PER_GRANT": str(cap)}
                procs.append(start_server(data, port, OAUTH_UPSTREAM_URL=upstream.url, **env))
            for cap, proc in zip((1, STREAMS), procs, strict=True):
                wait_until_up(bases[cap] + "/healthz", proc)
            base, proc = bases[STREAMS], procs[1]
            access_token = _access_token(base)
            for cap, server in zip((1, STREAMS), procs, strict=True):
                _healthz_ms(bases[cap], 50)  # warm-up, alike
                figures[f"rss_{cap}"] = rss_mib(server.pid)
            figures["healthz_p50"], figures["healthz_max"] = _healthz_ms(base)
            address = ("127.0.0.1", int(urlsplit(base).port or 80))
            request = (
                f"GET /mcp HTTP/1.1\r\nHost: {address[0]}\r\nAuthorization: Bearer {access_token}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            for _ in range(STREAMS):
                sock = socket.create_connection(address, timeout=30)
                sock.sendall(request)
                streams.append(sock)
            for sock in streams:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += sock.recv(65536)
                assert head.startswith(b"HTTP/1.1 200 "), head
            assert upstream.open == STREAMS, upstream.open
            time.sleep(1)
            figures["rss_streams"] = rss_mib(proc.pid)
            before = _cpu_of(proc.pid)
            time.sleep(5)
            figures["idle_cpu_ms"] = (_cpu_of(proc.pid) - before) / 5 * 1000
            figures["streams_p50"], figures["streams_max"] = _healthz_ms(base)
            assert upstream.open == STREAMS, upstream.open
            # Clients leave: every upstream connection is closed.
            for sock in streams:
                sock.close()
            left = time.monotonic()
            assert upstream.wait(lambda: upstream.open == 0, 30)
            figures["ended_s"] = max(c.closed or 0 for c in upstream.connections) - left
    finally:
        for sock in streams:
            sock.close()
        for proc in procs:
            proc.terminate()
            proc.wait(30)
        upstream.stop()
    return figures


def report_streams() -> None:
    s = bench_streams()
    per_stream = (s["rss_streams"] - s[f"rss_{STREAMS}"]) * 1024 / STREAMS
    per_thread = (s[f"rss_{STREAMS}"] - s["rss_1"]) * 1024 / (STREAMS - 1)
    print()
    print(f"| gateway, {STREAMS} idle streams (OAUTH_MAX_STREAMS={STREAMS}) | figure |")
    print("| --- | --- |")
    print(f"| /healthz p50 / max, no stream open (ms) | {s['healthz_p50']:.1f} / {s['healthz_max']:.1f} |")
    print(f"| /healthz p50 / max, {STREAMS} streams open (ms) | {s['streams_p50']:.1f} / {s['streams_max']:.1f} |")
    at_start = f"{s['rss_1']:.1f} / {s[f'rss_{STREAMS}']:.1f}"
    print(f"| resident memory at start, OAUTH_MAX_STREAMS=1 / {STREAMS} (MiB) | {at_start} |")
    print(f"| resident memory per stream thread, none open (KiB) | {per_thread:.0f} |")
    print(f"| resident memory per open idle stream, besides (KiB) | {per_stream:.0f} |")
    print(f"| server CPU with {STREAMS} streams idle (ms per second) | {s['idle_cpu_ms']:.1f} |")
    print(f"| {STREAMS} clients leave: last upstream connection closed after (s) | {s['ended_s']:.2f} |")


def main(parts: list[str]) -> None:
    """`make bench` runs everything; `scripts/bench.py hot`, `store`, `postgresql` or
    `streams` one part."""
    print(f"{CLIENTS} concurrent keep-alive clients, {SECONDS:.0f} s per cell; ops per server CPU-second", flush=True)
    if not parts or "hot" in parts:
        report_hot_paths()
    if not parts or "store" in parts:
        report_store()
    if not parts or "postgresql" in parts:
        report_postgresql()
    if not parts or "streams" in parts:
        report_streams()


def report_hot_paths() -> None:
    floor_server = FloorServer()
    try:
        hot = bench_hot_paths(floor_server)
    finally:
        floor_server.close()
    floor = hot["floor"]
    print()
    print("| endpoint | ops per server CPU-second | vs the floor |")
    print("| --- | --- | --- |")
    print(f"| bare Flask route on waitress (the floor) | {floor:,.0f} | 1.00x |")
    for name, key in (
        ("metadata (RFC 8414)", "metadata"),
        ("/verify, valid token", "verify"),
        ("introspection, valid token", "introspection"),
        ("returning person: /authorize -> code -> /token", "returning"),
    ):
        print(f"| {name} | {hot[key]:,.0f} | {hot[key] / floor:.2f}x |")
    print()
    print("| MCP tools/call POST | p50 latency (ms) | requests per second, 4 clients |")
    print("| --- | --- | --- |")
    print(f"| upstream directly | {hot['direct_p50_ms']:.2f} | {hot['direct_per_s']:,.0f} |")
    print(f"| through the gateway | {hot['gateway_p50_ms']:.2f} | {hot['gateway_per_s']:,.0f} |")
    added = hot["gateway_p50_ms"] - hot["direct_p50_ms"]
    print(f"| gateway adds | {added:.2f} | {hot['gateway_per_s'] / hot['direct_per_s']:.0%} of direct |")


def report_store() -> None:
    small, large = bench_store_size(100), bench_store_size(10_000)
    print()
    print("| store: clients + grants | 100 + 100 | 10,000 + 10,000 | cost growth |")
    print("| --- | --- | --- | --- |")
    for name, key in (("registration", "register"), ("public-client refresh", "refresh")):
        print(f"| {name} | {small[key]:,.0f} | {large[key]:,.0f} | {small[key] / large[key]:.2f}x |")
    print(f"| start-up to /healthz (s) | {small['startup']:.2f} | {large['startup']:.2f} | |")
    print(f"| resident memory after start (MiB) | {small['rss']:.0f} | {large['rss']:.0f} | |")


#: load rounds of each cell when two stores are compared, taken in turns, STORE_SECONDS each
STORE_ROUNDS = 10
STORE_SECONDS = 1.5


def report_postgresql() -> None:
    """Refresh and registration at 10,000 clients + grants, on the file store and on
    PostgreSQL (a cluster started here as the tests do, but durable like the file store:
    PostgreSQL's default fsync and synchronous commit; its CPU counts too). The two
    servers run side by side and are loaded in turns, a round each, so that both see
    the machine as it was."""
    sys.path.insert(0, str(ROOT / "tests"))
    from support.postgres import PostgresServer, bin_dir  # type: ignore[import-not-found]

    if bin_dir() is None:
        print("\nPostgreSQL is not installed: no PostgreSQL figures (Debian: apt-get install postgresql)")
        return
    cluster = PostgresServer().start(durable=True)
    servers: dict[str, StoreServer] = {}
    try:
        postmaster = int((cluster.data / "postmaster.pid").read_text().split()[0])
        servers["files"] = StoreServer(10_000)
        servers["database"] = StoreServer(10_000, cluster.new_database(), database=postmaster)
        totals = {
            cell: in_turns(
                {name: functools.partial(server.measure, cell, STORE_SECONDS) for name, server in servers.items()},
                STORE_ROUNDS,
            )
            for cell in ("refresh", "register")
        }
    finally:
        for server in servers.values():
            server.close()
        cluster.remove()
    print()
    print(
        "| 10,000 clients + 10,000 grants | file store | PostgreSQL (server + database CPU) | ratio "
        "| PostgreSQL (server CPU alone) | ratio |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for name, cell in (("registration", "register"), ("public-client refresh", "refresh")):
        ops, used, _ = totals[cell]["files"]
        file_rate = ops / used
        ops, used, used_alone = totals[cell]["database"]
        total, alone = ops / used, ops / used_alone
        print(
            f"| {name} | {file_rate:,.0f} | {total:,.0f} | {total / file_rate:.2f}x "
            f"| {alone:,.0f} | {alone / file_rate:.2f}x |"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
