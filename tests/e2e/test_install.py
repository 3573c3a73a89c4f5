"""The package as an operator installs it: the wheel built from the files
examples/Dockerfile copies, installed into a fresh venv, then `mcp-oauth --version`,
`mcp-oauth serve` and a CLI command run from another directory with no FLASK_APP and
no PYTHONPATH. The deployment files: the systemd unit passes `systemd-analyze verify`
and `.env.example` names every variable the configuration reads."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from importlib import metadata
from pathlib import Path

import pytest
import requests
from support.harness import ROOT, free_port

from app import __version__

DOCKERFILE = ROOT / "examples" / "Dockerfile"


def dockerfile_sources() -> list[str]:
    """What the Dockerfile's build stage copies into the image (COPY SRC… DEST)."""
    sources: list[str] = []
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and "--from" not in line:
            sources += line.split()[1:-1]
    return sources


def can_build_without_isolation() -> bool:
    """setuptools builds wheels itself from 70.1 on (before, it needs `wheel`): then
    no download is needed (requirements-dev.txt pins one)."""
    try:
        version = tuple(int(part) for part in metadata.version("setuptools").split(".")[:2])
    except metadata.PackageNotFoundError:
        return False
    return version >= (70, 1) or _has("wheel")


def _has(name: str) -> bool:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with the wheel installed; its dependencies are this interpreter's
    (a .pth file names its site-packages: nothing is downloaded), the package itself
    only the wheel's. The venv's bin folder."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "src"
    source.mkdir()
    for name in dockerfile_sources():  # the Dockerfile's COPY steps
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(path, source / name)
    # The Dockerfile's `pip wheel --no-deps`.
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(tmp / "wheels")]
    if can_build_without_isolation():
        build.append("--no-build-isolation")
    done = subprocess.run([*build, str(source)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = (tmp / "wheels").glob("mcp_oauth-*.whl")
    assert wheel.name == f"mcp_oauth-{__version__}-py3-none-any.whl"

    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(purelib) / "_dev_dependencies.pth").write_text("\n".join(sorted(ours)) + "\n")
    # The Dockerfile's `pip install` of the wheel (its dependencies are there already).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return venv / "bin"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of an operator's shell: no FLASK_APP, no PYTHONPATH, no OAUTH_*."""
    import os

    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OAUTH_", "GOOGLE_", "AZURE_", "GITHUB_", "OIDC_", "FLASK_"))
        and k not in ("PYTHONPATH", "PORT", "HOST")
    }
    env.update(extra)
    return env


def test_the_installed_wheel_serves_and_its_cli_works_from_any_directory(installed, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    mcp_oauth = str(installed / "mcp-oauth")

    version = subprocess.run([mcp_oauth, "--version"], cwd=elsewhere, env=clean_env(), capture_output=True, text=True)
    assert (version.returncode, version.stdout) == (0, f"mcp-oauth {__version__}\n"), version.stderr
    # The package, its templates and its static files come from the wheel, not the clone.
    where = subprocess.run(
        [str(installed / "python"), "-c", "import app, wsgi; print(app.__file__); print(wsgi.__file__)"],
        cwd=elsewhere,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert all(line.startswith(str(installed.parent)) for line in where.stdout.split()), where

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_env(PORT=str(port), OAUTH_DATA_DIR="state", PYTHONUNBUFFERED="1")
    log = tmp_path / "serve.log"
    with open(log, "wb") as output:
        server = subprocess.Popen([mcp_oauth, "serve"], cwd=elsewhere, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        health = None
        deadline = time.time() + 30
        while time.time() < deadline and server.poll() is None:
            try:
                health = requests.get(base + "/healthz", timeout=1)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert health is not None, log.read_text()
        assert health.json() == {"status": "ok", "version": __version__}
        assert requests.get(base + "/static/style.css", timeout=5).status_code == 200
        page = requests.get(base + "/authorize", params={"client_id": "nobody"}, timeout=5)
        assert page.status_code == 400 and "<html" in page.text.lower()  # a template of the wheel's
        registered = requests.post(
            base + "/register",
            json={
                "client_name": "Installed",
                "redirect_uris": ["http://127.0.0.1:9/cb"],
                "token_endpoint_auth_method": "none",
            },
            timeout=5,
        )
        assert registered.status_code == 201, registered.text

        # A CLI command, from the same directory, beside the running server.
        listed = subprocess.run(
            [mcp_oauth, "list-clients", "--json"], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert [c["client_id"] for c in json.loads(listed.stdout)] == [registered.json()["client_id"]]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(15)
    assert server.returncode == 0
    started = [line for line in log.read_text().splitlines() if " Serving " in line]
    assert len(started) == 1 and f"file store in {elsewhere / 'state'}," in started[0]


def test_the_systemd_unit_verifies(installed, tmp_path):
    """`systemd-analyze verify` with the unit's ExecStart pointed at the installed
    command (verify wants the binary to exist); no warning at all."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (ROOT / "examples" / "mcp-oauth.service").read_text()
    assert "ExecStart=/usr/local/bin/mcp-oauth serve" in unit
    copy = tmp_path / "mcp-oauth.service"
    copy.write_text(unit.replace("/usr/local/bin/mcp-oauth", str(installed / "mcp-oauth")))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
    for setting in ("DynamicUser=yes", "StateDirectory=mcp-oauth", "EnvironmentFile=", "NoNewPrivileges=yes",
                    "ProtectSystem=strict", "PrivateTmp=yes"):  # fmt: skip
        assert f"\n{setting}" in unit, setting
