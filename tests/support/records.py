"""Store records as the server writes them, for tests that fill a store directly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def grant(i: int, client_id: str = "c", *, searched: bool = False, **extra: Any) -> dict[str, Any]:
    """A live grant `g{i}` of `client_id`, with one live refresh-token hash; `searched`:
    as made before refresh tokens named their grant (found by hash)."""
    now = time.time()
    return {
        "grant_id": f"g{i}",
        "client_id": client_id,
        "subject": "alice",
        "provider": "custom",
        "scope": "mcp",
        "resource": ["http://127.0.0.1/mcp"],
        "issued_at": now,
        "refreshed_at": None,
        "expires_at": now + 3600,
        "refresh_token_hashes" if searched else "token_hashes": {f"{i:064x}": None},
        **extra,
    }


def stored(data_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Everything the file store in `data_dir` holds, as a reader of its files and
    journals sees it: what "changes nothing" compares (the running server compacts its
    journals into the JSON files in the background, so the bytes of the files may
    change while their content does not)."""
    from app.storage import PersistentStore

    return PersistentStore(data_dir).snapshot()
