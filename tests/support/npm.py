"""Node packages the tests drive, pinned by a package-lock.json beside them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest


def npm_ci(folder: Path, installed: Path) -> None:
    """`npm ci` in `folder` unless `installed` is already there; skip the test when npm
    cannot install (no registry)."""
    if installed.exists():
        return
    result = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=folder, capture_output=True, text=True, timeout=300
    )
    if result.returncode != 0:
        pytest.skip(f"npm ci failed in {folder.name}: {result.stderr.strip()[-300:]}")
