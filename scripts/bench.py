"""`make bench`: our endpoints beside a bare Flask route on waitress, measured in the same
run, and how write-heavy endpoints behave as the store grows.

Every figure is operations per second of *server* CPU (user + system time of the server
process, read from /proc), with 4 concurrent keep-alive clients, so the load generator's
own cost and the machine's other work do not count. Registration and public-client
refresh run against a store pre-filled with 100 and with 10,000 clients and grants.
Start-up time (process start to the first 200 from /healthz) and resident memory are
measured at 10,000 + 10,000.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.storage import PersistentStore  # noqa: E402

CLIENTS = 4
SECONDS = 3.0
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


def cpu_seconds(pid: int) -> float:
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


def load(pid: int, work) -> tuple[float, int]:
    """Run `work(session, worker)` from CLIENTS threads for SECONDS; (ops per server
    CPU-second, ops)."""
    done = [0] * CLIENTS
    stop = time.monotonic() + SECONDS

    def run(worker: int) -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            work(session, worker)
            done[worker] += 1

    before = cpu_seconds(pid)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    used = cpu_seconds(pid) - before
    return sum(done) / max(used, 1e-9), sum(done)


def fill(data: Path, size: int, issuer: str) -> list[tuple[str, str]]:
    """A store of `size` clients and grants; returns CLIENTS (client_id, refresh token)
    pairs for the refresh load."""
    now = time.time()
    clients, grants, chains = {}, {}, []
    for i in range(size):
        client_id = f"client-{i:06d}"
        token = secrets.token_urlsafe(32)
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
            "refresh_token_hashes": {hashlib.sha256(token.encode()).hexdigest(): None},
        }
        if i < CLIENTS:
            chains.append((client_id, token))
    PersistentStore(data).replace_all({"clients": clients, "grants": grants})
    return chains


def start_server(data: Path, port: int) -> subprocess.Popen:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OAUTH_")},
        "PORT": str(port),
        "OAUTH_DATA_DIR": str(data),
        "OAUTH_REGISTRATION_RATE": "0",
        "OAUTH_MAX_CLIENTS": "0",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [sys.executable, str(ROOT / "wsgi.py")], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def bench_store_size(size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        chains = [list(pair) for pair in fill(data, size, base)]
        proc = start_server(data, port)
        try:
            startup = wait_until_up(base + "/healthz", proc)
            rss = rss_mib(proc.pid)
            body = {"redirect_uris": ["https://app.example/cb"], "token_endpoint_auth_method": "none"}

            def register(session: requests.Session, worker: int) -> None:
                assert session.post(base + "/register", json=body, timeout=30).status_code == 201

            def refresh(session: requests.Session, worker: int) -> None:
                client_id, token = chains[worker]
                response = session.post(
                    base + "/token",
                    data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id},
                    timeout=30,
                )
                assert response.status_code == 200, response.text
                chains[worker][1] = response.json()["refresh_token"]

            refresh_rate, _ = load(proc.pid, refresh)
            register_rate, _ = load(proc.pid, register)
            return {"startup": startup, "rss": rss, "refresh": refresh_rate, "register": register_rate}
        finally:
            proc.terminate()
            proc.wait(30)


def bench_floor() -> float:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(port)], stdout=subprocess.DEVNULL)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/floor", proc)
        rate, _ = load(proc.pid, lambda session, worker: session.get(f"http://127.0.0.1:{port}/floor", timeout=30))
        return rate
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    print(f"{CLIENTS} concurrent keep-alive clients, {SECONDS:.0f} s per cell; ops per server CPU-second", flush=True)
    floor = bench_floor()
    print(f"bare Flask route on waitress (the floor): {floor:,.0f}", flush=True)
    small, large = bench_store_size(100), bench_store_size(10_000)
    print()
    print("| store: clients + grants | 100 + 100 | 10,000 + 10,000 | cost growth |")
    print("| --- | --- | --- | --- |")
    for name, key in (("registration", "register"), ("public-client refresh", "refresh")):
        print(f"| {name} | {small[key]:,.0f} | {large[key]:,.0f} | {small[key] / large[key]:.2f}x |")
    print(f"| start-up to /healthz (s) | {small['startup']:.2f} | {large['startup']:.2f} | |")
    print(f"| resident memory after start (MiB) | {small['rss']:.0f} | {large['rss']:.0f} | |")


if __name__ == "__main__":
    main()
