"""What an operator does to the store: counts, listings, deletions, purges, backups and
restores, users, keys. The CLI (`flask oauth …`) is a thin layer over this service;
here the rules live, on the repositories and the store's record operations only, so
they hold whatever backend the store is."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from . import records
from .config import Config
from .keys import KeyManager
from .repositories import ClientRepository, GrantRepository, UserRepository
from .storage import COLLECTIONS, Store, shared_state

BACKUP_FORMAT = "mcp-oauth-backup"


class AdminError(Exception):
    """An operation that cannot be done; the message is one line for the operator."""


@dataclass(frozen=True)
class RestorePlan:
    clear: bool
    #: collection -> (records restored, records replaced)
    counts: dict[str, tuple[int, int]]

    def summary(self) -> str:
        return ", ".join(
            f"{name}: {added} restored" + (f", {dropped} replaced" if self.clear else "")
            for name, (added, dropped) in self.counts.items()
        )


@dataclass
class Admin:
    config: Config
    store: Store
    clients: ClientRepository
    grants: GrantRepository
    users: UserRepository
    keys: KeyManager

    # -- views -----------------------------------------------------------------------

    def client_rows(self) -> list[dict[str, Any]]:
        rows = [client_row(r) for r in self.store.scan("clients").values()]
        return sorted(rows, key=lambda r: r["created_at"] or 0)

    def grant_rows(self) -> list[dict[str, Any]]:
        names = {c["client_id"]: c["name"] for c in self.client_rows()}
        rows = [_grant_row(r, names) for r in self.store.scan("grants").values()]
        return sorted(rows, key=lambda r: r["issued_at"] or 0)

    def stats(self) -> dict[str, Any]:
        grants = list(self.store.scan("grants").values())
        return {
            "clients": len(self.store.scan("clients")),
            "grants_active": len(grants),
            "grants_expired": len(self.store.purge("grants", dry_run=True)),
            "users_seen": len({(g.get("provider"), g.get("subject")) for g in grants}),
            "grants_per_provider": dict(Counter(g.get("provider") or "unknown" for g in grants)),
            "local_users": len(self.store.scan("users")),
            "provider": self.config.provider,
        }

    # -- deleting ----------------------------------------------------------------------

    def delete_client(self, client_id: str, dry_run: bool = False) -> tuple[str, int]:
        """(the client's name, its grants deleted or that would be)."""
        record = self.store.get("clients", client_id)
        if record is None:
            raise AdminError(f"no client with id {client_id!r}")
        name = record.get("metadata", {}).get("client_name") or client_id
        if dry_run:
            return name, sum(1 for g in self.store.scan("grants").values() if g["client_id"] == client_id)
        return name, self.clients.delete(client_id)[1]

    def grants_starting_with(self, prefix: str) -> list[dict[str, Any]]:
        return [g for g in self.grant_rows() if prefix and g["grant_id"].startswith(prefix)]

    def delete_grant(self, grant_id: str) -> bool:
        return self.grants.revoke(grant_id)

    def counts_for_delete_all(self, collection: str) -> tuple[int, int]:
        """(records of the collection, grants that go with them)."""
        grants = len(self.store.scan("grants")) if collection == "clients" else 0
        return len(self.store.scan(collection)), grants

    def delete_all(self, collection: str) -> None:
        self.store.delete_where(collection, lambda record: True)
        if collection == "clients":
            self.store.delete_where("grants", lambda record: True)

    def purge_expired(self, dry_run: bool = False) -> dict[str, Any]:
        """Expired grants and idle-expired clients off the disk, and the grants of
        clients that are gone; in a shared database, also the expired short-lived
        entries (codes, pending logins, throttles' windows)."""
        clients = self.store.purge("clients", dry_run=dry_run)
        live = set(self.store.scan("clients")) - {c["client_id"] for c in clients}
        grants = self.store.purge("grants", extra=lambda g: g.get("client_id") not in live, dry_run=dry_run)
        shared = shared_state(self.store)
        return {
            "dry_run": dry_run,
            "clients_removed": [c["client_id"] for c in clients],
            "grants_removed": [g["grant_id"] for g in grants],
            "short_lived_removed": shared.ephemeral_purge(dry_run) if shared is not None else 0,
        }

    def test_cleanup(self, dry_run: bool = False) -> tuple[int, int]:
        """Clients named 'TEST …' and their grants: (clients, grants)."""
        doomed = [c["client_id"] for c in self.client_rows() if (c["name"] or "").startswith("TEST ")]
        grants = sum(self.delete_client(client_id, dry_run)[1] for client_id in doomed)
        return len(doomed), grants

    # -- backups -----------------------------------------------------------------------

    def backup_document(self) -> dict[str, Any]:
        """Every collection as of one instant, in the backup format."""
        return {"format": BACKUP_FORMAT, "version": 1, "created_at": time.time(), **self.store.snapshot()}

    @staticmethod
    def validate_backup(document: Any) -> None:
        """Every record's fields and types (app/records.py), before anything changes."""
        if not isinstance(document, dict) or document.get("format") != BACKUP_FORMAT:
            raise AdminError("not an mcp-oauth backup")
        if document.get("version") != 1:
            raise AdminError(f"unsupported backup version {document.get('version')!r}")
        for name in COLLECTIONS:
            items = document.get(name)
            if not isinstance(items, dict):
                raise AdminError(f"no {name!r} object")
            for key, record in items.items():
                why = records.problem(name, key, record)
                if why:
                    raise AdminError(f"entry {key!r} of {name!r} {why}; nothing was restored")
        if sum(1 for r in document["signing_keys"].values() if r.get("use") == "session") > 1:
            raise AdminError("more than one session secret; nothing was restored")

    def restore_plan(self, document: dict[str, Any], clear: bool) -> RestorePlan:
        counts = {}
        for name in COLLECTIONS:
            current = self.store.scan(name)
            incoming = document[name]
            added = len(incoming) if clear else sum(1 for k in incoming if k not in current)
            counts[name] = (added, len(current) if clear else 0)
        return RestorePlan(clear, counts)

    def restore(self, document: dict[str, Any], clear: bool) -> None:
        """All files change together or none does. Merging keeps what the store has
        (it is newer than the backup)."""
        self.validate_backup(document)
        if clear:
            self.store.replace_all({name: dict(document[name]) for name in COLLECTIONS})
            return
        with self.store.lock():
            current = self.store.snapshot()
            self.store.replace_all({name: {**document[name], **current[name]} for name in COLLECTIONS})

    # -- users, keys, resource servers -----------------------------------------------------

    def delete_user(self, name: str, dry_run: bool = False) -> int:
        """Delete a local user, the grants they approved and their approvals (someone
        given the same name later is asked again); the grants deleted."""
        if self.users.get(name) is None:
            raise AdminError(f"no user {name!r}")
        if dry_run:
            return sum(
                1
                for g in self.store.scan("grants").values()
                if g.get("subject") == name and g.get("provider") == "custom"
            )
        self.users.delete(name)
        self.clients.forget_approvals_of(name)
        return self.grants.delete_for_subject("custom", name)

    def rotate_keys(self) -> tuple[str, list[dict[str, Any]]]:
        self.keys.ensure()
        kid = self.keys.rotate()
        return kid, self.keys.summary()

    def add_resource_server(self, name: str) -> tuple[str, str]:
        """A confidential client that may introspect every token: (id, secret)."""
        if not name.strip() or len(name) > 200:
            raise AdminError("the name must be 1-200 characters")
        metadata = {
            "client_name": name,
            "redirect_uris": [],
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": [],
            "response_types": [],
        }
        client, secret, _ = self.clients.create(metadata, resource_server=True)
        assert secret is not None
        return client.client_id, secret


def client_row(record: dict[str, Any]) -> dict[str, Any]:
    """What an operator sees of a client record (no hashes)."""
    meta = record.get("metadata", {})
    return {
        "client_id": record["client_id"],
        "name": meta.get("client_name", ""),
        "redirect_uris": meta.get("redirect_uris", []),
        "auth_method": meta.get("token_endpoint_auth_method", ""),
        "created_at": record.get("created_at"),
        "last_used_at": record.get("last_used_at"),
    }


def _grant_row(record: dict[str, Any], client_names: dict[str, str]) -> dict[str, Any]:
    return {
        "grant_id": record["grant_id"],
        "client_id": record["client_id"],
        "client_name": client_names.get(record["client_id"], ""),
        "subject": record.get("subject"),
        "provider": record.get("provider", ""),
        "scope": record.get("scope", ""),
        "resource": record.get("resource", []),
        "issued_at": record.get("issued_at"),
        "expires_at": record.get("expires_at"),
    }
