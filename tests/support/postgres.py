"""A real PostgreSQL for the tests: Debian's `postgresql` package, a cluster made with
initdb in a temporary folder and run with pg_ctl on a loopback port (as the `postgres`
user when the tests run as root, since PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .harness import free_port


def bin_dir() -> Path | None:
    """Where Debian's PostgreSQL programs are (the newest version installed)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PostgresServer:
    """One cluster: `start`, `stop` (fast), `restart`; `url(db)` for a database."""

    def __init__(self) -> None:
        programs = bin_dir()
        if programs is None:
            raise RuntimeError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        self.bin = programs
        # Its own folder under the system's temporary folder: the postgres user must
        # reach it, and pytest's temporary folders are private to the test's user.
        self.folder = folder = Path(tempfile.mkdtemp(prefix="mcp-oauth-pg-"))
        folder.chmod(0o755)
        self.data = folder / "cluster"
        self.socket_dir = folder / "socket"
        self.port = free_port()
        self.as_postgres = os.geteuid() == 0
        self.socket_dir.mkdir()
        if self.as_postgres:
            shutil.chown(folder, "postgres")
            shutil.chown(self.socket_dir, "postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.databases = 0
        self.durable = False

    def _run(self, program: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bin / program), *args]
        if self.as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, timeout=60)

    def start(self, durable: bool = False) -> PostgresServer:
        """Start the cluster; `durable`: with PostgreSQL's own defaults (a commit is on
        disk when acknowledged), as a deployment runs it, rather than the tests' fast,
        crash-unsafe settings."""
        self.durable = durable
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def restart(self) -> None:
        self.stop()
        self.start(self.durable)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        self.databases += 1
        name = f"test{self.databases}_{os.getpid()}"
        self.psql(f"CREATE DATABASE {name}")
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            [str(self.bin / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql, self.url(database)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if done.returncode:
            raise RuntimeError(done.stderr)
        return done.stdout.strip()
