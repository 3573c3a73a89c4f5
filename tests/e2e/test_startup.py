"""Start-up, as an operator meets it (real `python wsgi.py` processes): one line naming
the issuer, the listen address, the store and the absolute data folder; or one line
naming the cause, exit status 2, no traceback and no "Serving" line before it. And a
data folder written by the release before this one starts and is carried forward."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import ROOT, Server, base_env, free_port, run_cli
from support.oauth import Browser, get_code, refresh

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store-before-1.0.0"


def refused_start(workdir: Path, data_dir: Path | str, prefix: tuple[str, ...] = (), **env: str) -> str:
    """Start `python wsgi.py` expecting a refusal: exit 2, one line on stderr, nothing
    on stdout, no traceback, no "Serving". The line."""
    result = subprocess.run(
        [*prefix, sys.executable, str(ROOT / "wsgi.py")],
        cwd=workdir,
        env=base_env(Path(data_dir), **env),
        capture_output=True,
        text=True,
        timeout=30,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output and "Serving" not in output, output
    assert result.stdout == "", output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, output
    return lines[0]


def test_a_port_in_use_is_one_line_and_exit_2_before_any_store_is_made(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        line = refused_start(tmp_path, tmp_path / "data", PORT=str(port))
    assert line == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "data").exists()  # no store, no first password, for a server that never served


def test_a_bad_configuration_is_one_line_and_exit_2(tmp_path):
    line = refused_start(tmp_path, tmp_path / "data", OAUTH_ACCESS_TOKEN_TTL="soon")
    assert line == "Error: OAUTH_ACCESS_TOKEN_TTL must be an integer, got 'soon'"


def test_a_data_folder_that_is_a_file_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    data_dir = tmp_path / "a-file" / "data"
    line = refused_start(tmp_path, data_dir, PORT=str(free_port()))
    assert line == f"Error: cannot use data folder {data_dir}: Not a directory"


def without_root_powers() -> tuple[str, ...]:
    """A command prefix that makes permissions bind this process: as root, drop the
    capabilities that let root read and search any folder (a non-root CI needs none)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: permissions cannot be tested")
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--")


def test_an_unreadable_data_folder_is_one_line_and_exit_2(tmp_path):
    locked = tmp_path / "locked"
    (locked / "data").mkdir(parents=True)
    locked.chmod(0)
    try:
        line = refused_start(tmp_path, locked / "data", without_root_powers(), PORT=str(free_port()))
    finally:
        locked.chmod(0o700)
    assert line == f"Error: cannot use data folder {locked / 'data'}: Permission denied"


def test_a_data_folder_that_cannot_be_written_is_one_line_and_exit_2(tmp_path):
    """A store that reads but cannot be written (a read-only file system: root too is
    refused) stops the start, rather than serving until the first write fails."""
    data = tmp_path / "ro"
    data.mkdir(mode=0o700)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(data)]).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        server = Server(data, tmp_path)
        server.start()
        server.stop()
        assert subprocess.run(["mount", "-o", "remount,ro", str(data)]).returncode == 0
        line = refused_start(tmp_path, data, PORT=str(free_port()))
    finally:
        subprocess.run(["umount", "-l", str(data)])
    assert line.startswith(f"Error: cannot write in {data}: "), line
    assert "Read-only file system" in line


def startup_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if " Serving " in line]


def test_the_startup_line_names_the_absolute_data_folder_and_a_new_store_says_so(tmp_path):
    """Started from another directory with the default relative OAUTH_DATA_DIR, the
    server makes a new, empty store there: its start-up line says where, and that."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    server = Server(Path(".oauth_data"), elsewhere)
    from app import __version__

    try:
        server.start()
        server.restart()
    finally:
        server.stop()
    first, second = startup_lines(server.output)
    absolute = elsewhere / ".oauth_data"
    assert first.endswith(
        f"INFO mcp_oauth: Serving {server.issuer} on {server.base} "
        f"(mcp-oauth {__version__}, file store in {absolute}, custom provider)"
    ), first
    assert second == second[:24] + first[24:]  # the same line, at another time
    created = [line for line in server.output.splitlines() if "New store" in line]
    assert len(created) == 1 and str(absolute) in created[0]  # the first start only
    assert (absolute / "signing_keys.json").is_file()


def test_a_data_folder_of_the_previous_release_starts_and_is_carried_forward(tmp_path):
    """tests/fixtures/store-before-1.0.0: a folder the release before 1.0.0 wrote (see
    make_store_before_1_0_0.py). Its client, grant, user and signing key all still work,
    and what this release writes is readable by it again after a restart."""
    facts = json.loads(FIXTURE.with_name(FIXTURE.name + ".json").read_text())
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data)
    data.chmod(0o700)
    server = Server(data, tmp_path, OAUTH_CLIENT_IDLE_TTL="0")
    try:
        server.start()
        assert not [line for line in server.output.splitlines() if "New store" in line]
        client = facts["client"]
        refreshed = refresh(server, client, facts["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        listed = run_cli(data, "list-clients", "--json", env=server.env)
        assert [c["client_id"] for c in json.loads(listed.stdout)] == [client["client_id"]]
        # The old user logs in, and the old client gets a new grant.
        code, _, _ = get_code(server, client, browser=Browser(server, facts["user"], facts["password"]))
        assert code
        server.restart()
        again = refresh(server, client, refreshed.json()["refresh_token"])
        assert again.status_code == 200, again.text
    finally:
        server.stop()
    for name in ("clients.json", "refresh_tokens.json", "users.json", "signing_keys.json"):
        assert json.loads((data / name).read_text())["version"] == 1
    stored = json.loads((data / "clients.json").read_text())["clients"]
    assert client["client_id"] in stored
