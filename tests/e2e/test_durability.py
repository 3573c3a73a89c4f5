"""Durable writes, shown in the system calls of a real process (strace): what the
server acknowledges is on disk before the acknowledgement leaves, and a file replaced
by compaction is synced before its rename and its folder after it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import requests
from support import syscalls
from support.harness import ROOT, base_env
from support.oauth import refresh, register, tokens_for

UNAVAILABLE = syscalls.unavailable()
pytestmark = pytest.mark.skipif(UNAVAILABLE is not None, reason=str(UNAVAILABLE))


def synced_between(calls: list[syscalls.Call], path: str, start: int, end: int) -> bool:
    """Whether an fsync (or fdatasync) of `path` returned after call `start` and
    before call `end`."""
    return any(c.call in ("fsync", "fdatasync") and c.path == path for c in calls[start + 1 : end])


def test_what_the_server_acknowledges_is_on_disk_before_the_answer_leaves(make_server, tmp_path):
    """Registration (clients), the code's exchange and a refresh (grants): each
    journal append is followed by an fsync of that journal that returns before the
    answer is sent, so an acknowledged change survives a power cut."""
    server = make_server()

    def ping() -> None:
        requests.get(server.url("/healthz"), timeout=5)

    with syscalls.attached(server.proc.pid, tmp_path / "trace", ping) as trace:
        client = register(server)
        _, tokens = tokens_for(server, client)
        assert refresh(server, client, tokens["refresh_token"]).status_code == 200
    text = trace.read_text(errors="replace")
    calls = syscalls.parse(text)
    data_dir = str(server.data_dir)
    appends = [
        (i, c.path)
        for i, c in enumerate(calls)
        if c.call in ("write", "pwrite64", "writev") and c.path.startswith(data_dir) and c.path.endswith(".journal")
    ]
    journals = {path.rsplit("/", 1)[1] for _, path in appends}
    assert journals >= {"clients.json.journal", "refresh_tokens.json.journal"}, text[-3000:]
    for i, journal in appends:
        answer = next(
            j
            for j in range(i + 1, len(calls))
            if calls[j].call in ("sendto", "sendmsg", "writev", "write") and calls[j].data.startswith("HTTP/1.1 ")
        )
        assert synced_between(calls, journal, i, answer), f"{journal} appended, then answered unsynced"


COMPACTION = """
import os, sys
from app.storage import PersistentStore
store = PersistentStore(sys.argv[1])
store.put("clients", "c1", {"client_id": "c1"})
os.write(1, b"acknowledged put\\n")
store.compact("clients")
os.write(1, b"acknowledged compaction\\n")
"""


def test_compaction_syncs_each_new_file_before_its_rename_and_the_folder_after(tmp_path):
    """A compaction writes the snapshot and the fresh journal to temporary files, fsyncs
    each before renaming it into place, and fsyncs the folder after each rename, all
    before it returns: a crash at any point leaves either file whole and named."""
    data = tmp_path / "data"
    trace = tmp_path / "trace"
    done = subprocess.run(
        [*syscalls.STRACE, "-o", str(trace), sys.executable, "-c", COMPACTION, str(data)],
        cwd=ROOT,
        env=base_env(data),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr.decode()
    text = trace.read_text(errors="replace")
    calls = syscalls.parse(text)
    acks = [i for i, c in enumerate(calls) if c.data.startswith("acknowledged")]
    assert len(acks) == 2, text[-3000:]
    put_ack, compaction_ack = acks
    # The store's renames (Python also renames the .pyc files it writes on an import).
    renames = [
        i
        for i in range(put_ack, compaction_ack)
        if calls[i].call.startswith("rename") and calls[i].target.startswith(f"{data}/")
    ]
    window = "\n".join(map(str, calls[put_ack : compaction_ack + 1]))
    # The snapshot first, then the journal (the order the store's recovery relies on).
    assert [calls[i].target.rsplit("/", 1)[1] for i in renames] == ["clients.json", "clients.json.journal"], window
    for i, following in zip(renames, [*renames[1:], compaction_ack], strict=True):
        rename = calls[i]
        written = [j for j in range(put_ack, i) if calls[j].path == rename.path and calls[j].call == "write"]
        assert written, f"nothing written to {rename.path}\n{window}"
        assert synced_between(calls, rename.path, written[-1], i), f"{rename.target} renamed unsynced\n{window}"
        # ... and the rename is durable before the next one, or before the return.
        assert synced_between(calls, str(data), i, following), f"{rename.target} renamed, folder unsynced\n{window}"
