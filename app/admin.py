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
from .storage import COLLECTIONS, Store

BACKUP_FORMAT = "mcp-oauth-backup"


class AdminError(Exception):
    """An operation that cannot be done; the message is one line for the operator."""


class AmbiguousClient(AdminError):
    """A client id prefix that several clients' ids start with."""

    def __init__(self, prefix: str, candidates: list[dict[str, Any]]):
        super().__init__(f"{len(candidates)} client ids start with {prefix!r}; give more characters, nothing changed")
        self.candidates = candidates


#: How a backup goes in: `clear` replaces everything (disaster recovery); `merge` adds
#: the clients, users and keys the store lacks and never a grant (a grant missing now
#: was revoked, rotated or expired after the backup: bringing it back would make a
#: revoked refresh token work again); `auto` is `clear` into an empty store and
#: refuses into one with data.
RESTORE_MODES = ("clear", "merge", "auto")
#: What makes a store "with data" for `auto` (a fresh start's signing keys do not:
#: no token can exist without a client).
DATA_COLLECTIONS = ("clients", "grants", "users")
#: collections a backup written before they existed lacks: read as empty
ADDED_LATER = ("upstream_tokens",)


@dataclass(frozen=True)
class Change:
    """One record a restore adds, replaces or removes."""

    action: str  # "add", "replace" or "remove"
    collection: str
    key: str
    label: str


@dataclass(frozen=True)
class RestorePlan:
    mode: str  # "clear" or "merge"
    changes: list[Change]
    #: the collections as they will be (only those that change)
    result: dict[str, dict[str, Any]]
    #: merge: the backup's grants that are not brought back
    grants_left_out: int = 0

    def summary(self) -> str:
        counts = Counter((c.collection, c.action) for c in self.changes)
        parts = [
            f"{name}: "
            + ", ".join(f"{counts[name, action]} {DONE[action]}" for action in ACTIONS if counts[name, action])
            for name in COLLECTIONS
            if any(counts[name, action] for action in ACTIONS)
        ]
        if self.grants_left_out:
            parts.append(f"{self.grants_left_out} grant(s) of the backup left out (a merge restores no grant)")
        return "; ".join(parts) or "nothing to change"


ACTIONS = ("add", "replace", "remove")
DONE = {"add": "added", "replace": "replaced", "remove": "removed"}


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

    def find_client(self, id_or_prefix: str) -> dict[str, Any]:
        """The client with this id, or else the one whose id starts with it (an
        operator copies a few characters from `list-clients`). AmbiguousClient when
        several do."""
        record = self.store.get("clients", id_or_prefix) if id_or_prefix else None
        if record is not None:
            return record
        matches = [r for k, r in self.store.scan("clients").items() if id_or_prefix and k.startswith(id_or_prefix)]
        if not matches:
            raise AdminError(f"no client id is or starts with {id_or_prefix!r}")
        if len(matches) > 1:
            raise AmbiguousClient(id_or_prefix, sorted((client_row(r) for r in matches), key=lambda r: r["client_id"]))
        return matches[0]

    def client_grants(self, client_id: str) -> list[dict[str, Any]]:
        return [g for g in self.grant_rows() if g["client_id"] == client_id]

    def client_details(self, client_id: str) -> dict[str, Any]:
        """Everything about one client an operator may see: its metadata, who approved
        it for what, its grants; never a hash or a secret."""
        record = self.find_client(client_id)
        approvals = record.get("approvals") or {}
        return {
            **client_row(record),
            "metadata": record.get("metadata", {}),
            "client_id_issued_at": record.get("client_id_issued_at"),
            "confidential": record.get("client_secret_hash") is not None,
            "resource_server": record.get("resource_server") is True,
            "document": record.get("document") is True,
            "approvals": [{"subject": subject, **approval} for subject, approval in sorted(approvals.items())],
            "grants": self.client_grants(record["client_id"]),
        }

    def unused_client_ids(self) -> set[str]:
        """Clients that never completed an authorization (no token ever issued to them:
        what OAUTH_UNUSED_CLIENT_TTL expires); resource servers aside."""
        return {
            k
            for k, r in self.store.scan("clients").items()
            if r.get("last_used_at") is None and r.get("resource_server") is not True
        }

    def delete_client(self, client_id: str, dry_run: bool = False) -> tuple[str, int]:
        """(the client's name, its grants deleted or that would be)."""
        record = self.store.get("clients", client_id)
        if record is None:
            raise AdminError(f"no client with id {client_id!r}")
        name = record.get("metadata", {}).get("client_name") or client_id
        if dry_run:
            return name, self.grants.delete_for_client(client_id, dry_run=True)
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
        if collection in ("clients", "grants"):  # the upstream tokens go with the grants
            self.store.delete_where("upstream_tokens", lambda record: True)

    def purge_expired(self, dry_run: bool = False) -> dict[str, Any]:
        """Expired grants and idle-expired clients off the disk, and the grants of
        clients that are gone; in a shared database, also the expired short-lived
        entries (codes, pending logins, throttles' windows)."""
        clients = self.store.purge("clients", dry_run=dry_run)
        live = set(self.store.scan("clients")) - {c["client_id"] for c in clients}
        grants = self.store.purge("grants", extra=lambda g: g.get("client_id") not in live, dry_run=dry_run)
        # an upstream token goes with its grant, expired or purged just now
        kept = set(self.store.scan("grants")) - {g["grant_id"] for g in grants}
        upstream = self.store.purge("upstream_tokens", extra=lambda t: t.get("grant_id") not in kept, dry_run=dry_run)
        return {
            "dry_run": dry_run,
            "clients_removed": [c["client_id"] for c in clients],
            "grants_removed": [g["grant_id"] for g in grants],
            "upstream_tokens_removed": len(upstream),
            "short_lived_removed": self.store.shared.purge(dry_run),
        }

    def test_cleanup(self, dry_run: bool = False) -> tuple[list[dict[str, Any]], int]:
        """Clients named 'TEST …' and their grants: (the clients' rows, grants)."""
        doomed = [c for c in self.client_rows() if (c["name"] or "").startswith("TEST ")]
        grants = sum(self.delete_client(c["client_id"], dry_run)[1] for c in doomed)
        return doomed, grants

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
        for name in ADDED_LATER:
            document.setdefault(name, {})
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

    def is_empty(self) -> bool:
        return all(self.store.count(name) == 0 for name in DATA_COLLECTIONS)

    def check_live_rules(self, document: dict[str, Any]) -> None:
        """The rules live input is held to (app/records.py `live_input_problem`: a
        client's redirect URIs as registration checks them), beyond shapes and types."""
        for name in COLLECTIONS:
            for key, record in document[name].items():
                why = records.live_input_problem(name, record, self.config)
                if why:
                    raise AdminError(f"entry {key!r} of {name!r} {why}; nothing was restored")

    def restore_plan(
        self, document: dict[str, Any], mode: str, current: dict[str, dict[str, Any]] | None = None
    ) -> RestorePlan:
        """What a restore in `mode` would change, after every check (AdminError when
        one fails). `current` is the store's snapshot (read now when not given)."""
        if mode not in RESTORE_MODES:
            raise AdminError(f"unknown restore mode {mode!r}")
        self.validate_backup(document)
        self.check_live_rules(document)
        if current is None:
            current = self.store.snapshot()
        if mode == "auto":
            held = {name: len(current[name]) for name in DATA_COLLECTIONS if current[name]}
            if held:
                what = ", ".join(f"{count} {name}" for name, count in held.items())
                raise AdminError(
                    f"the store already holds data ({what}): choose --clear (replace everything) "
                    "or --merge (add only the clients, users and keys it lacks); nothing was restored"
                )
            mode = "clear"
        names = _client_names(document["clients"], current["clients"])
        changes: list[Change] = []
        result: dict[str, dict[str, Any]] = {}
        if mode == "clear":
            # An upstream token whose grant is not restored (it had expired when the
            # backup was taken) is useless: it stays out.
            incoming_of = {
                **document,
                "upstream_tokens": {
                    k: r for k, r in document["upstream_tokens"].items() if r["grant_id"] in document["grants"]
                },
            }
            for name in COLLECTIONS:
                incoming, held_now = incoming_of[name], current[name]
                for key in held_now.keys() - incoming.keys():
                    changes.append(Change("remove", name, key, _label(name, held_now[key], names)))
                for key, record in incoming.items():
                    if key not in held_now:
                        changes.append(Change("add", name, key, _label(name, record, names)))
                    elif held_now[key] != record:
                        changes.append(Change("replace", name, key, _label(name, record, names)))
                result[name] = dict(incoming)
            restored_clients = document["clients"]
            grants_left_out = 0
        else:
            has_current_key = any(
                r.get("use") == "sig" and r.get("retired_at") is None for r in current["signing_keys"].values()
            )
            now = time.time()
            for name in ("clients", "users", "signing_keys"):
                lacking = {k: r for k, r in document[name].items() if k not in current[name]}
                if name == "signing_keys" and has_current_key:
                    # The store's current key goes on signing; the backup's keys only
                    # verify the tokens they signed, until those expire.
                    lacking = {
                        k: {**r, "retired_at": now} if r.get("use") == "sig" and r.get("retired_at") is None else r
                        for k, r in lacking.items()
                    }
                changes.extend(Change("add", name, k, _label(name, r, names)) for k, r in lacking.items())
                if lacking:
                    result[name] = {**current[name], **lacking}
            restored_clients = {k: r for k, r in document["clients"].items() if k not in current["clients"]}
            grants_left_out = len(document["grants"])
        users = set(result.get("users", current["users"]))
        self._check_approvals(restored_clients, users)
        return RestorePlan(mode, sorted(changes, key=_change_order), result, grants_left_out)

    def _check_approvals(self, restored_clients: dict[str, Any], users: set[str]) -> None:
        """With the Custom provider an approval's subject is a local user name: a
        restored approval of a user the store will not hold is forged, or left over
        from a deleted user (whose approvals go with them), and would let a new user
        of that name skip the consent page."""
        if self.config.provider != "custom":
            return  # subjects of an upstream provider have no local record to check
        for client_id, record in restored_clients.items():
            for subject in record.get("approvals") or {}:
                if subject not in users:
                    raise AdminError(
                        f"entry {client_id!r} of 'clients' has an approval by {subject!r}, "
                        "who is no user of the restored store; nothing was restored"
                    )

    def restore(self, document: dict[str, Any], mode: str) -> RestorePlan:
        """Check, then write: all the collections that change, together or not at all,
        under the store's lock (so the plan is made from what the store holds when it
        is written)."""
        with self.store.lock():
            plan = self.restore_plan(document, mode, self.store.snapshot())
            if plan.result:
                self.store.replace_all(plan.result)
        return plan

    # -- users, keys, resource servers -----------------------------------------------------

    def delete_user(self, name: str, dry_run: bool = False) -> int:
        """Delete a local user, the grants they approved and their approvals (someone
        given the same name later is asked again); the grants deleted."""
        if self.users.get(name) is None:
            raise AdminError(f"no user {name!r}")
        if dry_run:
            return self.grants.delete_for_subject("custom", name, dry_run=True)
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


def _client_names(*client_sets: dict[str, Any]) -> dict[str, str]:
    names: dict[str, str] = {}
    for clients in client_sets:
        for client_id, record in clients.items():
            meta = record.get("metadata") if isinstance(record, dict) else None
            names.setdefault(client_id, (meta or {}).get("client_name") or "")
    return names


def _label(collection: str, record: dict[str, Any], client_names: dict[str, str]) -> str:
    """What names a record for the operator, beside its id."""
    if collection == "clients":
        return client_names.get(record["client_id"], "") or "(no name)"
    if collection == "grants":
        client = client_names.get(record["client_id"]) or record["client_id"]
        return f"{record.get('subject')} via {client}"
    if collection == "users":
        return record["username"]
    if collection == "upstream_tokens":
        return "sealed"
    if record.get("use") == "session":
        return "session secret"
    if record.get("use") == "enc":
        return "upstream-token key"
    return "signing key, " + ("retired" if record.get("retired_at") is not None else "current")


def _change_order(change: Change) -> tuple[int, int, str]:
    return list(COLLECTIONS).index(change.collection), ACTIONS.index(change.action), change.key


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
