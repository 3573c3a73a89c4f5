"""The real server for tests: `python wsgi.py` (waitress) in its own process, or the
same app on waitress in a thread of the test process; a free loopback port, a
temporary data folder, and the CLI as a separate `flask oauth …` process."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
CLAUDE_CALLBACK = "https://claude.ai/api/mcp/auth_callback"
CHATGPT_CALLBACK = "https://chatgpt.com/connector_platform_oauth_redirect"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end(proc: subprocess.Popen, seconds: float = 10) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it is not over within `seconds`."""
    proc.terminate()
    try:
        proc.wait(seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OAUTH_", "GOOGLE_", "AZURE_", "GITHUB_", "OIDC_"))}
    env.update({"OAUTH_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class Server:
    """One `python wsgi.py` process; restartable on the same port and data folder."""

    def __init__(self, data_dir: Path, workdir: Path, **env: str):
        self.data_dir = data_dir
        self.workdir = workdir
        self.port = int(env.pop("PORT", free_port()))
        self.issuer = env.pop("OAUTH_ISSUER", f"http://127.0.0.1:{self.port}")
        self.env = base_env(data_dir, PORT=str(self.port), OAUTH_ISSUER=self.issuer, **env)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log_path = workdir / f"server-{self.port}.log"
        self.starts = 0

    def start(self) -> Server:
        self.starts += 1
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "wsgi.py")],
            cwd=self.workdir,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.output}")
            try:
                if requests.get(self.base + self.path_prefix + "/healthz", timeout=1).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start:\n{self.output}")

    @property
    def path_prefix(self) -> str:
        return urlsplit(self.issuer).path.rstrip("/")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            end(self.proc)
        if self.proc:
            self._log.close()
        self.proc = None

    def restart(self) -> Server:
        self.stop()
        return self.start()

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, path: str) -> str:
        """An endpoint URL (endpoints live under the issuer's path)."""
        return self.issuer + path

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        return run_cli(self.data_dir, *args, input=input, env=self.env)


class InThread:
    """A waitress server (`wsgi.create_server`) run by a thread of the test process
    until `stop`. waitress's own loop runs until its socket map is empty; this one runs
    until told to stop, then closes every socket in the loop's own thread."""

    def __init__(self, wsgi_server: Any, name: str):
        self.wsgi = wsgi_server
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            self.wsgi.asyncore.loop(timeout=0.05, map=self.wsgi._map, count=1)
        for channel in list(self.wsgi._map.values()):
            channel.close()
        self.wsgi.task_dispatcher.shutdown()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(10)


class ThreadServer(Server):
    """The same app on waitress, in a thread of the test process: real HTTP on a
    loopback port, real files, a fraction of a process's start-up. For tests where
    the process boundary is not the point (a restart, a signal, the process's log,
    the CLI writing beside it all stay with `Server`)."""

    def start(self) -> ThreadServer:
        from app import create_app
        from app.config import Config
        from wsgi import create_server

        self.starts += 1
        config = Config.from_env(self.env, env_file=None)
        self.app = create_app(config)
        self.running: InThread | None = InThread(create_server(self.app, config), f"server-{self.port}")
        return self

    def stop(self) -> None:
        if getattr(self, "running", None) is None:
            return
        self.running.stop()
        self.running = None
        store = self.app.extensions["oauth"].store
        store.stop_upkeep()
        with contextlib.suppress(Exception):  # as wsgi.py at a clean stop: compact, if it can
            store.compact()

    @property
    def output(self) -> str:
        raise AssertionError("a ThreadServer has no process log: use make_server() for this test")


def run_cli(
    data_dir: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    environment = dict(env) if env else base_env(data_dir)
    environment["OAUTH_DATA_DIR"] = str(data_dir)
    environment.pop("FLASK_APP", None)
    return subprocess.run(
        [sys.executable, "-m", "flask", "oauth", *args],
        cwd=cwd,
        env=environment,
        input=input,
        capture_output=True,
        text=True,
        timeout=60,
    )


def failed_start(workdir: Path, data_dir: Path, **env: str) -> str:
    """Start `python wsgi.py` expecting it to refuse: assert exit status 2 with exactly
    one line on stderr and no traceback, and return that line."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "wsgi.py")],
        cwd=workdir,
        env=base_env(data_dir, **{"PORT": "1", **env}),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def seed_users(data_dir: Path, users: dict[str, str], store_url: str | None = None) -> None:
    """Create local users in a data folder (or the PostgreSQL database `store_url`)
    through the real store, in this process (what `flask oauth add-user` does, without
    starting a process per test; the CLI itself is tested in test_cli.py). The records
    are the ones `UserRepository.set_password` writes, with each password's scrypt hash
    made once per test process (a tenth of a CPU-second each, for every server of the
    suite otherwise)."""
    from app.storage import PersistentStore

    if store_url and store_url != "file":
        from app.storage.postgres import PostgresStore

        store: Any = PostgresStore(store_url)
    else:
        store = PersistentStore(data_dir)
    try:
        now = time.time()
        for name, password in users.items():
            record = {"username": name, "created_at": now, "password_hash": _hash(password), "password_changed_at": now}
            assert store.add("users", name, record)
    finally:
        store.close()


@functools.lru_cache(maxsize=32)
def _hash(password: str) -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(password, method="scrypt")


# -- helper processes ------------------------------------------------------------


def wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 30) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"helper process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def helper_process(script: str, workdir: Path) -> Iterator[int]:
    """Run tests/<script> PORT until the generator is closed; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / script), str(port)],
        env=base_env(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
