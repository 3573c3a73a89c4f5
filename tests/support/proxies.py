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


LAUNCHERS = {"nginx": _nginx, "caddy": _caddy}


@contextmanager
def tls_proxy(
    binary: str, example: str, tmp: Path, listen: int, ports: dict[int, int], ca: TestCA
) -> Iterator[subprocess.Popen]:
    """Run `examples/<example>` with nginx or caddy on 127.0.0.1:`listen`, TLS by
    the test CA; `ports` maps the example's backend ports to the test's."""
    from conftest import wait_for_port

    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (Debian: apt-get install {binary})")
    env = {"PATH": "/usr/sbin:/usr/bin:/bin", "HOME": str(tmp), "XDG_DATA_HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp)}
    log = open(tmp / f"{binary}.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        LAUNCHERS[binary](example, tmp, listen, ports, ca), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        wait_for_port(listen, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
