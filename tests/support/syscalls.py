"""The file and socket system calls of a real process, as strace saw them.

A power cut cannot be staged here, so durability is shown in the order of the calls
the kernel was asked to make: a write is durable once an `fsync` of its file has
returned, and a rename once an `fsync` of its folder has.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

#: the calls a durable write is made of, and those that answer a client
TRACED = "write,pwrite64,writev,sendto,sendmsg,fsync,fdatasync,rename,renameat,renameat2"
STRACE = ["strace", "-f", "-y", "-qq", "-s", "64", "-e", f"trace={TRACED}"]

_LINE = re.compile(r"^(?P<pid>\d+) +(?P<call>\w+)\((?P<args>.*)$")
_RESUMED = re.compile(r"^(?P<pid>\d+) +<\.\.\. (?P<call>\w+) resumed>")
_FD_PATH = re.compile(r"^\d+<(?P<path>[^>]*)>")
_STRINGS = re.compile(r'"((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Call:
    """One system call, at the point it returned (its place in `calls`)."""

    call: str
    path: str  # the file descriptor's path (`-y`), or a rename's source
    target: str  # a rename's destination, else ""
    data: str  # the start of what a write or send carried


def unavailable() -> str | None:
    """Why strace cannot trace here (not installed, or ptrace refused), or None."""
    if shutil.which("strace") is None:
        return "strace is not installed (.ci/run installs it)"
    probe = subprocess.run(["strace", "-qq", "-e", "trace=none", "true"], capture_output=True, text=True, timeout=30)
    return None if probe.returncode == 0 else f"strace cannot trace here: {probe.stderr.strip()[-200:]}"


def parse(text: str) -> list[Call]:
    """The calls in the order they *returned*: a call strace split across threads
    (`<unfinished ...>`, then `<... resumed>`) is placed where it resumed."""
    calls: list[Call] = []
    pending: dict[tuple[str, str], str] = {}
    for line in text.splitlines():
        resumed = _RESUMED.match(line)
        if resumed:
            args = pending.pop((resumed["pid"], resumed["call"]), None)
            if args is not None:
                calls.append(_call(resumed["call"], args))
            continue
        match = _LINE.match(line)
        if not match:
            continue
        if line.endswith("<unfinished ...>"):
            pending[(match["pid"], match["call"])] = match["args"]
        else:
            calls.append(_call(match["call"], match["args"]))
    return calls


def _call(call: str, args: str) -> Call:
    strings = _STRINGS.findall(args)
    if call.startswith("rename"):
        return Call(call, strings[0] if strings else "", strings[1] if len(strings) > 1 else "", "")
    fd = _FD_PATH.match(args)
    return Call(call, fd["path"] if fd else "", "", strings[0] if strings else "")


@contextmanager
def attached(pid: int, trace: Path, ready: Callable[[], object]) -> Iterator[Path]:
    """strace attached to every thread of running process `pid` for the block.
    `ready()` (a request to the process) is made until the trace shows an answer, so
    nothing in the block happens before strace sees it, and once more after the
    block, so that the block's last answer is in the trace before strace detaches."""
    tracer = subprocess.Popen([*STRACE, "-o", str(trace), "-p", str(pid)], stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        while not _answers(trace):
            if tracer.poll() is not None:
                raise RuntimeError(f"strace could not attach: {tracer.stderr.read().decode()}")  # type: ignore[union-attr]
            if time.time() > deadline:
                raise RuntimeError("strace saw no request within 20 s")
            ready()
            time.sleep(0.1)
        yield trace
        answers = _answers(trace)
        ready()
        deadline = time.time() + 20
        while _answers(trace) <= answers and time.time() < deadline:
            time.sleep(0.05)
    finally:
        tracer.send_signal(signal.SIGINT)  # strace detaches; the process runs on
        tracer.wait(10)


def _answers(trace: Path) -> int:
    return trace.read_text(errors="replace").count('"HTTP/1.1 ') if trace.exists() else 0
