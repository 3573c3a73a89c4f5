"""The package as an operator installs it: the wheel built from the files
examples/Dockerfile copies, installed into a fresh venv, then `mcp-oauth --version`,
`mcp-oauth serve` and a CLI command run from another directory with no FLASK_APP and
no PYTHONPATH. The deployment files: the systemd unit passes `systemd-analyze verify`
and `.env.example` names every variable the configuration reads."""

from __future__ import annotations

import re

from support.harness import ROOT


def test_env_example_names_every_variable_with_its_default():
    """Every variable app/config.py reads, and every one an identity provider declares,
    is in .env.example, commented out (a provider's with its declared default)."""
    from app.providers import REGISTRY, provider_class

    config = (ROOT / "app" / "config.py").read_text()
    read = set(re.findall(r'(?:_get|_int|_list|_flag|_networks)\(\s*env,\s*"([A-Z_]+)"', config))
    read |= set(re.findall(r'env\.get\("([A-Z_]+)"', config))
    declared = {s.name: s.default for name in REGISTRY for s in provider_class(name).declared_settings()}
    assert {"OAUTH_ISSUER", "OAUTH_DATA_DIR", "PORT"} <= read
    assert {"GOOGLE_DISCOVERY_URL", "AZURE_TENANT_ID", "OAUTH_ALLOWED_EMAILS"} <= declared.keys()
    example = (ROOT / ".env.example").read_text()
    listed = dict(re.findall(r"^#([A-Z_]+)=(.*)$", example, re.MULTILINE))
    assert read <= listed.keys(), sorted(read - listed.keys())
    assert {name: listed.get(name) for name in declared} == declared
    assert listed["OAUTH_DATA_DIR"] == ".oauth_data" and listed["PORT"] == "8000"
    assert not re.findall(r"^[A-Z_]+=", example, re.MULTILINE)  # nothing set: all defaults
