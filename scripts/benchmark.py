"""Print figures for the hot paths: /verify per request, and the cost of one atomic
store write as the grant file grows. Run from the repo root: `.venv/bin/python
scripts/benchmark.py` (starts its own server on a free loopback port, temp data)."""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import requests  # noqa: E402
from conftest import Server, tokens_for  # noqa: E402

from app.storage import PersistentStore  # noqa: E402


def bench_verify(requests_count: int = 2000) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        server = Server(work / "data", work)
        server.cli("add-user", "alice", "--password-stdin", input="correct horse battery\n")
        server.start()
        try:
            _, tokens = tokens_for(server)
            session = requests.Session()
            headers = {"Authorization": f"Bearer {tokens['access_token']}"}
            for _ in range(50):
                session.get(server.url("/verify"), headers=headers)
            timings = []
            for _ in range(requests_count):
                started = time.perf_counter()
                assert session.get(server.url("/verify"), headers=headers).status_code == 200
                timings.append(time.perf_counter() - started)
            timings.sort()
            print(
                f"/verify, {requests_count} sequential requests on one connection: "
                f"median {statistics.median(timings) * 1000:.2f} ms, "
                f"p99 {timings[int(len(timings) * 0.99)] * 1000:.2f} ms, "
                f"{requests_count / sum(timings):.0f} req/s (client included)"
            )
        finally:
            server.stop()


def bench_store(sizes: tuple[int, ...] = (1000, 10000)) -> None:
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            store = PersistentStore(tmp)
            now = time.time()
            grants = {
                f"g{i}": {
                    "grant_id": f"g{i}",
                    "client_id": "c",
                    "subject": "s",
                    "scope": "mcp",
                    "resource": ["https://example.com/mcp"],
                    "issued_at": now,
                    "expires_at": now + 3600,
                    "refresh_token_hashes": {f"{i:064x}": None},
                }
                for i in range(size)
            }
            store.update("grants", lambda items, grants=grants: items.update(grants))
            timings = []
            for i in range(20):
                started = time.perf_counter()
                store.put("grants", f"new{i}", {"grant_id": f"new{i}", "expires_at": now + 3600})
                timings.append(time.perf_counter() - started)
            lookups = []
            for _ in range(1000):
                started = time.perf_counter()
                store.get("grants", "g1")
                lookups.append(time.perf_counter() - started)
            print(
                f"store, {size} grants: one atomic write (lock, re-read, fsync, rename) "
                f"median {statistics.median(timings) * 1000:.1f} ms; "
                f"a cached read {statistics.median(lookups) * 1e6:.1f} us"
            )


if __name__ == "__main__":
    bench_verify()
    bench_store()
