"""The operator CLI: `flask oauth …`, safe to run while the server is serving.

A thin layer: arguments, confirmation, tables and JSON. What a command does lives in
the admin service (app/admin.py), on the store's record operations, which lock and
re-read before each write, so neither the CLI nor the server loses the other's change
and a deletion takes effect in the running server at once. Listings take `--json`;
destructive commands take `--dry-run`; failures print one line and exit 1.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from flask import Flask
from flask.cli import AppGroup

from .admin import Admin, AdminError, AmbiguousClient, RestorePlan, client_row
from .deploycheck import run_checks
from .observability import AUDIT_FILE, audit, audit_quietly, audit_to_file
from .operator_tokens import OperatorTokenError, inspect_token, issue_token
from .passkeys import Passkeys
from .providers.custom import MAX_PASSWORD, MIN_PASSWORD
from .services import Services, services
from .storage import COLLECTIONS, StoreError

oauth = AppGroup("oauth", help="Manage clients, grants, users, signing keys and backups.")

BACKUP_PATTERN = re.compile(r"^oauth-backup-\d{8}-\d{6}(-\d+)?\.json$")
REDACTED = "<redacted>"


class CommandError(Exception):
    """A failure to report in one line."""


def _svc() -> Services:
    return services()


def _admin() -> Admin:
    return _svc().admin


#: the arguments an audit event of a command names (never a password: those come on stdin)
AUDITED_ARGUMENTS = ("client_id", "prefix", "name", "file", "clear", "merge", "output", "keep")


def command(name: str, audited: bool = False, quiet: bool = False, **kwargs: Any) -> Callable:
    """An `oauth` subcommand whose failures print one line and exit 1. An `audited`
    one (it changes the store, or copies it out) leaves an audit event when it
    succeeded, not on --dry-run: in audit.log in the data folder, and on stderr unless
    the command is `quiet` (made for cron, which mails whatever a job prints) and
    was not asked to be `--verbose`. A command adds fields to its event with
    `_audit_also`."""

    def decorate(func: Callable) -> Callable:
        @functools.wraps(func)
        def wrapper(*args: Any, **kw: Any) -> Any:
            try:
                with audit_to_file(str(_svc().config.data_dir / AUDIT_FILE)):
                    result = func(*args, **kw)
                    if audited and not kw.get("dry_run"):
                        fields = {k: kw[k] for k in AUDITED_ARGUMENTS if kw.get(k) not in (None, False)}
                        fields.update(click.get_current_context().meta.get(AUDIT_EXTRA, {}))
                        log = audit_quietly if quiet and not kw.get("verbose") else audit
                        log(f"cli.{name}", by=_os_user(), **fields)
                return result
            except AmbiguousClient as exc:
                for row in exc.candidates:
                    click.echo(f"  {row['client_id']}  {_cut(_printable(row['name']), 60)}", err=True)
                click.echo(f"Error: {exc}", err=True)
                sys.exit(1)
            except (CommandError, AdminError, StoreError) as exc:
                click.echo(f"Error: {exc}", err=True)
                sys.exit(1)
            except OSError as exc:
                click.echo(f"Error: {exc.strerror or exc}: {getattr(exc, 'filename', '') or ''}".rstrip(": "), err=True)
                sys.exit(1)
            except Exception as exc:  # one line, never a traceback
                click.echo(f"Error: unexpected {type(exc).__name__}: {exc}", err=True)
                sys.exit(1)

        return oauth.command(name, **kwargs)(wrapper)

    return decorate


AUDIT_EXTRA = "mcp_oauth.audit_extra"


def _audit_also(**fields: Any) -> None:
    """Fields for this command's audit event beyond its arguments (the whole id a
    prefix named, the restore mode chosen)."""
    click.get_current_context().meta.setdefault(AUDIT_EXTRA, {}).update(fields)


def _os_user() -> str | None:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return None


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
dry_run_option = click.option("--dry-run", is_flag=True, help="Show what would happen; change nothing.")
yes_option = click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
verbose_option = click.option("-v", "--verbose", is_flag=True, help="Print a summary even when all went well.")


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def _table(rows: list[dict[str, Any]], columns: list[str], empty: str) -> None:
    if not rows:
        click.echo(empty)
        return
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    click.echo("  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for r in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())


def _printable(text: str) -> str:
    """A name as one terminal line: control and bidi characters (a client chose
    its own name) shown as '?'."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def _emit(data: Any, as_json: bool, human: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, sort_keys=True))
    else:
        human()


def _confirm(question: str, yes: bool) -> None:
    if yes:
        return
    if not sys.stdin.isatty():
        raise CommandError(f"{question} Refusing without a terminal to confirm; add --yes.")
    if not click.confirm(question, default=False):
        raise CommandError("aborted, nothing changed")


# -- views of the data -------------------------------------------------------------


#: the narrowest the name and redirect-URI columns are cut to, however narrow the terminal
MIN_TEXT_COLUMN = 20


def _print_clients(rows: list[dict[str, Any]]) -> None:
    """One line per client, cut to the terminal's width (COLUMNS; 80 when it is not
    a terminal): a client picks its own name, and one long one made every row
    hundreds of columns wide. `--json` gives the whole values."""
    table = [
        {
            "client id": r["client_id"],
            "name": _printable(r["name"]),
            "redirect uris": _printable(" ".join(r["redirect_uris"])),
            "auth": r["auth_method"],
            "created": _when(r["created_at"]),
            "last used": _when(r["last_used_at"]),
        }
        for r in rows
    ]
    fixed = ["client id", "auth", "created", "last used"]
    fixed_width = sum(max(len(c), *(len(t[c]) for t in table)) + 2 for c in fixed) if table else 0
    room = max(shutil.get_terminal_size().columns - fixed_width - 4, 2 * MIN_TEXT_COLUMN)
    widest_name = max((len(t["name"]) for t in table), default=0)
    widest_uris = max((len(t["redirect uris"]) for t in table), default=0)
    # Each gets what it needs when both fit; else the URIs at most half, the name the rest.
    name_width = max(MIN_TEXT_COLUMN, min(widest_name, room - min(widest_uris, room // 2)))
    uris_width = max(MIN_TEXT_COLUMN, room - min(widest_name, name_width))
    for t in table:
        t["name"] = _cut(t["name"], name_width)
        t["redirect uris"] = _cut(t["redirect uris"], uris_width)
    _table(table, ["client id", "name", "redirect uris", "auth", "created", "last used"], "No clients.")


def _print_grants(rows: list[dict[str, Any]]) -> None:
    _table(
        [
            {
                "id": r["grant_id"][:12],
                "client": r["client_name"] or r["client_id"],
                "subject": r["subject"],
                "scope": r["scope"],
                "expires": _when(r["expires_at"]),
            }
            for r in rows
        ],
        ["id", "client", "subject", "scope", "expires"],
        "No grants.",
    )


def _print_stats(stats: dict[str, Any]) -> None:
    click.echo(f"clients:         {stats['clients']}")
    click.echo(f"grants active:   {stats['grants_active']}")
    click.echo(f"grants expired:  {stats['grants_expired']} (removed by purge-expired)")
    click.echo(f"users seen:      {stats['users_seen']}")
    click.echo(f"local users:     {stats['local_users']}")
    click.echo(f"provider:        {stats['provider']}")
    for provider, count in sorted(stats["grants_per_provider"].items()):
        click.echo(f"  grants via {provider}: {count}")


# -- listing -------------------------------------------------------------------------


@command("stats", short_help="Count clients, grants and users.")
@json_option
def stats_command(as_json: bool) -> None:
    """Counts: clients, active and expired grants, users seen, per provider."""
    data = _admin().stats()
    _emit(data, as_json, lambda: _print_stats(data))


@command("list-clients", short_help="List the registered clients.")
@click.option("--name", "name_part", help="Only clients whose name contains this text (any case).")
@click.option("--unused", is_flag=True, help="Only clients that never completed an authorization.")
@json_option
def list_clients(name_part: str | None, unused: bool, as_json: bool) -> None:
    """Registered clients: id, name, redirect URIs, auth method, created, last used.
    Long values are cut to fit the terminal; --json gives them whole."""
    admin = _admin()
    rows = admin.client_rows()
    if name_part is not None:
        rows = [r for r in rows if name_part.casefold() in (r["name"] or "").casefold()]
    if unused:
        never_used = admin.unused_client_ids()
        rows = [r for r in rows if r["client_id"] in never_used]
    _emit(rows, as_json, lambda: _print_clients(rows))


@command("show-client", short_help="Everything about one client.", context_settings={"ignore_unknown_options": True})
@click.argument("client_id")
@json_option
def show_client(client_id: str, as_json: bool) -> None:
    """One client (by id or a unique id prefix): its metadata, who approved it for
    what, and its grants. No secret and no hash."""
    details = _admin().client_details(client_id)
    _emit(details, as_json, lambda: _print_client_details(details))


def _print_client_details(d: dict[str, Any]) -> None:
    kind = "resource server" if d["resource_server"] else "metadata document" if d["document"] else "registered"
    click.echo(f"Client {d['client_id']}")
    click.echo(f"  name:          {_printable(d['name'])}")
    click.echo(f"  kind:          {kind}, {'confidential' if d['confidential'] else 'public'} ({d['auth_method']})")
    click.echo(f"  created:       {_when(d['created_at'])}")
    click.echo(f"  last used:     {_when(d['last_used_at'])}")
    click.echo("  redirect uris: " + ("" if d["redirect_uris"] else "-"))
    for uri in d["redirect_uris"]:
        click.echo(f"    {_printable(uri)}")
    click.echo("  metadata:")
    for key, value in sorted(d["metadata"].items()):
        if key != "redirect_uris":
            click.echo(f"    {key}: {_printable(json.dumps(value, ensure_ascii=False))}")
    click.echo(f"Approvals ({len(d['approvals'])}):")
    for a in d["approvals"]:
        resource = " ".join(a.get("resource", []))
        click.echo(
            f"  {a['subject']}: scope {a.get('scope')!r} resource {resource or '-'} at {_when(a.get('approved_at'))}"
        )
    click.echo(f"Grants ({len(d['grants'])}):")
    _print_grants(d["grants"])


@command("list-tokens", short_help="List the grants (refresh tokens).")
@json_option
def list_tokens(as_json: bool) -> None:
    """Grants (refresh tokens): id prefix, client, subject, scope, expiry."""
    rows = _admin().grant_rows()
    _emit(rows, as_json, lambda: _print_grants(rows))


@command("show-all")
@json_option
def show_all(as_json: bool) -> None:
    """Stats, clients and grants together."""
    admin = _admin()
    stats, clients, grants = admin.stats(), admin.client_rows(), admin.grant_rows()
    data = {"stats": stats, "clients": clients, "grants": grants}

    def human() -> None:
        _print_stats(stats)
        click.echo("\nClients:")
        _print_clients(clients)
        click.echo("\nGrants:")
        _print_grants(grants)

    _emit(data, as_json, human)


# -- deleting -------------------------------------------------------------------------


# Ids are URL-safe base64, so one in 64 starts with "-": take it as the id, not an option.
IDS_MAY_START_WITH_A_DASH = {"ignore_unknown_options": True}


@command(
    "delete-client",
    audited=True,
    short_help="Delete a client and all its grants.",
    context_settings=IDS_MAY_START_WITH_A_DASH,
)
@click.argument("client_id")
@dry_run_option
@yes_option
def delete_client(client_id: str, dry_run: bool, yes: bool) -> None:
    """Delete a client registration and every grant of it. CLIENT_ID may be a unique
    prefix of the id; what goes is listed, and asked about unless --yes."""
    admin = _admin()
    record = admin.find_client(client_id)
    found = record["client_id"]
    name = record.get("metadata", {}).get("client_name") or found
    grants = admin.client_grants(found)
    verb = "Would delete" if dry_run else "Deleting"
    click.echo(f"{verb} client {found} ({_printable(name)}) and {len(grants)} grant(s):")
    for g in grants:
        click.echo(f"  grant {g['grant_id'][:12]}  {g['subject']}  {g['scope']}")
    if dry_run:
        return
    _confirm(f"Delete client {found} and its {len(grants)} grant(s)?", yes)
    _audit_also(client_id=found)
    name, removed = admin.delete_client(found)
    click.echo(f"Deleted client {found} ({_printable(name)}) and {removed} grant(s).")


@command("delete-token", audited=True, context_settings=IDS_MAY_START_WITH_A_DASH)
@click.argument("prefix")
@dry_run_option
def delete_token(prefix: str, dry_run: bool) -> None:
    """Delete one grant by (a prefix of) its id."""
    matches = _admin().grants_starting_with(prefix)
    if not matches:
        raise CommandError(f"no grant id starts with {prefix!r}")
    if len(matches) > 1:
        click.echo(f"{len(matches)} grants start with {prefix!r}; give more characters:", err=True)
        for g in matches:
            click.echo(f"  {g['grant_id']}  {g['client_name'] or g['client_id']}  {g['subject']}", err=True)
        raise CommandError("ambiguous prefix, nothing deleted")
    grant = matches[0]
    if dry_run:
        click.echo(f"Would delete grant {grant['grant_id']} ({grant['subject']} via {grant['client_id']}).")
        return
    _admin().delete_grant(grant["grant_id"])
    click.echo(f"Deleted grant {grant['grant_id']} ({grant['subject']} via {grant['client_id']}).")


def _delete_all(collection: str, label: str, dry_run: bool, yes: bool) -> None:
    count, grants = _admin().counts_for_delete_all(collection)
    extra = f" and {grants} grant(s)" if collection == "clients" else ""
    if dry_run:
        click.echo(f"Would delete {count} {label}{extra}.")
        return
    _confirm(f"Delete all {count} {label}{extra}?", yes)
    _admin().delete_all(collection)
    click.echo(f"Deleted {count} {label}{extra}.")


@command("delete-all-clients", audited=True)
@dry_run_option
@yes_option
def delete_all_clients(dry_run: bool, yes: bool) -> None:
    """Delete every client and every grant."""
    _delete_all("clients", "client(s)", dry_run, yes)


@command("delete-all-tokens", audited=True, short_help="Delete every grant; clients stay.")
@dry_run_option
@yes_option
def delete_all_tokens(dry_run: bool, yes: bool) -> None:
    """Delete every grant (refresh token); clients stay registered."""
    _delete_all("grants", "grant(s)", dry_run, yes)


@command("purge-expired", audited=True, quiet=True, short_help="Remove expired grants and idle clients.")
@dry_run_option
@json_option
@verbose_option
def purge_expired(dry_run: bool, as_json: bool, verbose: bool) -> None:
    """Remove expired grants and idle-expired clients (for a nightly cron job: prints
    nothing on success; -v prints a summary)."""
    summary = _admin().purge_expired(dry_run)
    clients, grants = summary["clients_removed"], summary["grants_removed"]
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    elif verbose or dry_run:
        verb = "Would remove" if dry_run else "Removed"
        short_lived = summary["short_lived_removed"]
        more = f", and {short_lived} expired short-lived entries from the database" if short_lived else ""
        click.echo(f"{verb} {len(clients)} expired client(s) and {len(grants)} expired or orphaned grant(s){more}.")


@command("test-cleanup", audited=True, short_help="Delete the clients named 'TEST …'.")
@dry_run_option
def test_cleanup(dry_run: bool) -> None:
    """Delete clients whose name starts with 'TEST ' and their grants."""
    clients, grants = _admin().test_cleanup(dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(f"{verb} {len(clients)} test client(s) and {grants} grant(s){':' if clients else '.'}")
    for c in clients:
        click.echo(f"  {c['client_id']}  {_cut(_printable(c['name']), 60)}")


# -- backups --------------------------------------------------------------------------


def _backup_dir(output: str | None) -> Path:
    return Path(output) if output else Path("backups")


def _backup_order(path: Path) -> tuple[str, int]:
    """Oldest first: by the time in the name, then by the -N a second backup within
    the same second gets (the first has none)."""
    match = BACKUP_PATTERN.match(path.name)
    suffix = match.group(1) if match else None
    return path.name[len("oauth-backup-") : len("oauth-backup-YYYYMMDD-HHMMSS")], int(suffix[1:]) if suffix else 1


def _backup_files(directory: Path) -> list[Path]:
    """Our backups in `directory` (files named like them only), newest first."""
    if not directory.is_dir():
        return []
    files = [p for p in directory.iterdir() if BACKUP_PATTERN.match(p.name) and p.is_file()]
    return sorted(files, key=_backup_order, reverse=True)


@command("backup", audited=True, quiet=True, short_help="Write a consistent snapshot of the store.")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Folder for the backup (default backups/).")
@click.option("--keep", type=click.IntRange(min=1), help="Then delete all but the newest N backups in the folder.")
@click.option("--dry-run", is_flag=True, help="Write nothing; list the backups --keep would delete.")
@verbose_option
def backup(output: str | None, keep: int | None, dry_run: bool, verbose: bool) -> None:
    """Write a consistent snapshot of clients, grants, users and keys (mode 0600).
    Prints nothing on success (for cron); -v names the file."""
    directory = _backup_dir(output)
    if dry_run:
        doomed = _backup_files(directory)[keep - 1 :] if keep else []
        click.echo(f"Would write a backup into {directory}/ and delete {len(doomed)} older backup(s).")
        for old in doomed:
            click.echo(f"  {old}")
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    document = _admin().backup_document()
    stamp = datetime.now(tz=UTC).strftime("%Y%m%d-%H%M%S")
    path = directory / f"oauth-backup-{stamp}.json"
    n = 1
    while path.exists():
        n += 1
        path = directory / f"oauth-backup-{stamp}-{n}.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    removed = []
    if keep:
        for old in _backup_files(directory)[keep:]:
            if old != path:
                old.unlink()
                removed.append(old.name)
    _audit_also(path=str(path), **({"removed": removed} if removed else {}))
    if verbose:
        counts = ", ".join(f"{len(document[name])} {name}" for name in COLLECTIONS)
        click.echo(f"Wrote {path} ({counts}).")
        for name in removed:
            click.echo(f"Deleted {directory / name} (--keep {keep}).")


@command("backups")
@click.option("--dir", "directory", type=click.Path(file_okay=False), help="Folder to look in (default backups/).")
@json_option
def list_backups(directory: str | None, as_json: bool) -> None:
    """List the backups, newest first."""
    files = _backup_files(_backup_dir(directory))
    rows = [{"file": str(p), "size": p.stat().st_size} for p in files]
    _emit(rows, as_json, lambda: _table(rows, ["file", "size"], "No backups."))


def _backup_path(file: str | None, directory: str | None) -> Path:
    """The backup a command names: a path, a bare file name from the backups folder
    (what `backups` lists), or none for the newest there."""
    folder = _backup_dir(directory)
    if not file:
        files = _backup_files(folder)
        if not files:
            raise CommandError(f"no backups found in {folder}/")
        return files[0]
    path = Path(file)
    if not path.exists() and path.name == file and (folder / file).is_file():
        return folder / file
    return path


def _load_backup(file: str | None, directory: str | None = None) -> tuple[Path, dict[str, Any]]:
    """Read and validate a backup; raise CommandError naming what is wrong."""
    path = _backup_path(file, directory)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        where = f" (nor in {_backup_dir(directory)}/)" if path.name == file else ""
        raise CommandError(f"backup file {path} does not exist{where}") from None
    except (OSError, ValueError) as exc:
        raise CommandError(f"{path} is not a readable JSON backup ({exc})") from None
    _validate_backup(path, document)
    return path, document


def _validate_backup(path: Path, document: Any) -> None:
    try:
        Admin.validate_backup(document)
    except AdminError as exc:
        raise CommandError(f"{path}: {exc}") from None


def _redact(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v) for v in value]
    if key.endswith("_hash") or key in ("jwk", "secret", "token_hashes", "refresh_token_hashes", "key", "sealed"):
        return REDACTED
    return value


backup_dir_option = click.option(
    "--dir", "directory", type=click.Path(file_okay=False), help="Backups folder for a bare NAME (default backups/)."
)


@command("backup-show", short_help="Show a backup, secrets redacted.")
@click.argument("file", required=False)
@backup_dir_option
@json_option
def backup_show(file: str | None, directory: str | None, as_json: bool) -> None:
    """Show the newest (or the named) backup, secrets redacted. FILE may be a path or
    a bare name from the backups folder."""
    path, document = _load_backup(file, directory)
    redacted = _redact(document)
    if as_json:
        click.echo(json.dumps(redacted, indent=2, sort_keys=True))
        return
    click.echo(f"Backup {path}, taken {_when(document.get('created_at'))}")
    for name in COLLECTIONS:
        click.echo(f"  {name}: {len(document[name])}")
    click.echo("\nClients:")
    _print_clients([client_row(r) for r in document["clients"].values()])


MODE_WORDS = {"clear": "replace everything", "merge": "add what the store lacks"}


@command("restore", audited=True, short_help="Restore a backup: --clear replaces, --merge adds.")
@click.argument("file", required=False)
@click.option("--clear", is_flag=True, help="Replace everything in the store (disaster recovery).")
@click.option("--merge", is_flag=True, help="Add the clients, users and keys the store lacks; never grants.")
@backup_dir_option
@dry_run_option
@yes_option
def restore(file: str | None, clear: bool, merge: bool, directory: str | None, dry_run: bool, yes: bool) -> None:
    """Restore a backup (the newest, or FILE: a path or a bare name from the backups
    folder). Every record is checked against the rules live input is held to first,
    and a refused restore changes nothing.

    --clear replaces everything. --merge adds the clients, users and keys the store
    lacks and never a grant (a grant missing now was revoked, rotated or expired
    after the backup). Neither: into an empty store as --clear, else refused."""
    if clear and merge:
        raise CommandError("choose one of --clear and --merge")
    path, document = _load_backup(file, directory)
    admin = _admin()
    mode = "clear" if clear else "merge" if merge else "auto"
    try:
        plan = admin.restore_plan(document, mode)
        if dry_run:
            _print_plan(f"Would restore {path} ({MODE_WORDS[plan.mode]}) into {admin.store.location}:", plan)
            return
        if clear:
            _confirm(f"Replace everything in {admin.store.location} with {path}?", yes)
        plan = admin.restore(document, mode)
    except AdminError as exc:
        raise CommandError(f"{path}: {exc}") from None
    _audit_also(mode=plan.mode)
    click.echo(f"Restored {path} ({MODE_WORDS[plan.mode]}): {plan.summary()}.")


def _print_plan(title: str, plan: RestorePlan) -> None:
    click.echo(title)
    for change in plan.changes:
        noun = change.collection.rstrip("s").replace("_", " ")
        label = "" if change.label == change.key else f" ({_printable(change.label)})"
        click.echo(f"  {change.action} {noun} {change.key}{label}")
    if plan.grants_left_out:
        click.echo(f"  not restored: the backup's {plan.grants_left_out} grant(s) (a merge restores no grant)")
    if not plan.changes:
        click.echo("  nothing would change")


# -- users and keys ----------------------------------------------------------------------


def _read_password(password_stdin: bool) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD:
        raise CommandError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise CommandError(f"the password may have at most {MAX_PASSWORD} characters")
    return password


def _require_username(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._@+-]{1,64}", name):
        raise CommandError("a user name is 1-64 letters, digits or . _ @ + -")
    return name


password_stdin_option = click.option(
    "--password-stdin", is_flag=True, help="Read the password from the first line of standard input."
)


@command("add-user", audited=True)
@click.argument("name")
@password_stdin_option
def add_user(name: str, password_stdin: bool) -> None:
    """Add a local user (Custom provider)."""
    users = _svc().users
    if users.get(_require_username(name)):
        raise CommandError(f"user {name!r} already exists")
    if not users.set_password(name, _read_password(password_stdin), create=True):
        raise CommandError(f"user {name!r} already exists")
    click.echo(f"Added user {name}.")


@command("list-users")
@json_option
def list_users(as_json: bool) -> None:
    """List local users (Custom provider)."""
    rows = [
        {
            "username": u["username"],
            "created_at": u.get("created_at"),
            "password_changed_at": u.get("password_changed_at"),
        }
        for u in _svc().users.all()
    ]
    _emit(
        rows,
        as_json,
        lambda: _table(
            [{"user": r["username"], "created": _when(r["created_at"])} for r in rows], ["user", "created"], "No users."
        ),
    )


@command("delete-user", audited=True, short_help="Delete a local user and their grants.")
@click.argument("name")
@dry_run_option
def delete_user(name: str, dry_run: bool) -> None:
    """Delete a local user, revoke the grants they approved and forget their approvals."""
    grants = _admin().delete_user(name, dry_run)
    verb = "Would delete" if dry_run else "Deleted"
    click.echo(f"{verb} user {name} and {grants} grant(s).")


@command("reset-passkeys", audited=True, short_help="Remove a local user's passkeys.")
@click.argument("name")
@dry_run_option
def reset_passkeys(name: str, dry_run: bool) -> None:
    """Remove all passkeys of a local user (a lost device): with OAUTH_PASSKEYS=required,
    the password alone signs them in again, and they can add a new passkey."""
    svc = _svc()
    count = Passkeys(svc.config, svc.users).reset(name, dry_run)
    if count is None:
        raise CommandError(f"no user {name!r}")
    click.echo(f"{'Would remove' if dry_run else 'Removed'} {count} passkey(s) of {name}.")


@command("set-password", audited=True)
@click.argument("name")
@password_stdin_option
def set_password(name: str, password_stdin: bool) -> None:
    """Set a local user's password."""
    users = _svc().users
    if users.get(name) is None:
        raise CommandError(f"no user {name!r}")
    users.set_password(name, _read_password(password_stdin), create=False)
    click.echo(f"Password of {name} changed.")


@command("rotate-keys", audited=True, short_help="Make a new signing key.")
@json_option
def rotate_keys(as_json: bool) -> None:
    """Make a new signing key; the previous one verifies until its tokens expire."""
    kid, keys = _admin().rotate_keys()
    _emit({"kid": kid, "keys": keys}, as_json, lambda: click.echo(f"New signing key {kid}."))


@command("add-resource-server", audited=True, short_help="Make a client that may introspect every token.")
@click.argument("name")
@json_option
def add_resource_server(name: str, as_json: bool) -> None:
    """Make a confidential client that may introspect every token (RFC 7662), for an
    MCP server or proxy of yours; prints its client_id and client_secret once."""
    client_id, secret = _admin().add_resource_server(name)
    data = {"client_id": client_id, "client_secret": secret, "client_name": name}
    _emit(
        data,
        as_json,
        lambda: click.echo(
            f"Resource server {name}:\n  client_id:     {client_id}\n  client_secret: {secret}\n"
            "The secret is shown only now; introspect with HTTP Basic authentication."
        ),
    )


# -- testing a deployment ----------------------------------------------------------


@command("issue-token", short_help="Print an access token for testing an MCP server.")
@click.option("--user", "user", required=True, help="Whom the token is for (its sub).")
@click.option("--client", "client_id", required=True, help="The client it is issued to.")
@click.option("--scope", help="Space-separated scopes (default: every offered scope).")
@click.option("--resource", help="The resource (audience) it is for (default: the first of OAUTH_RESOURCES).")
@click.option("--ttl", type=click.IntRange(min=1), help="Seconds until it expires (default OAUTH_ACCESS_TOKEN_TTL).")
def issue_token_command(user: str, client_id: str, scope: str | None, resource: str | None, ttl: int | None) -> None:
    """Print an access token, and nothing else, for a smoke test of an MCP server
    (`TOKEN=$(flask oauth issue-token --user alice --client ID)`). It belongs to a grant
    of its own, without a refresh token: revoke it, or delete the client, to end it."""
    try:
        token, grant = issue_token(_svc(), user, client_id, scope, resource, ttl)
    except OperatorTokenError as exc:
        raise CommandError(str(exc)) from None
    audit(
        "cli.issue-token",
        by=_os_user(),
        client_id=client_id,
        subject=user,
        grant_id=grant.get("grant_id"),
        scope=grant.get("scope"),
        expires_at=grant.get("expires_at"),
    )
    click.echo(token)


@command("inspect-token", short_help="Say whether an access token is valid now, and why not.")
@click.argument("token")
@json_option
def inspect_token_command(token: str, as_json: bool) -> None:
    """Whether TOKEN is valid now; if not, why (signature, expiry, audience, client
    gone, grant revoked); with its claims. Exits 1 when it is not valid."""
    report = inspect_token(_svc(), token)

    def human() -> None:
        click.echo("valid" if report["valid"] else f"not valid: {report['reason']}")
        for name, value in (report["claims"] or {}).items():
            shown = f"{value} ({_when(value)})" if name in ("iat", "exp", "nbf") and isinstance(value, int) else value
            click.echo(f"  {name}: {shown}")

    _emit(report, as_json, human)
    if not report["valid"]:
        sys.exit(1)


@command("check", short_help="Check the deployment from the outside, through its public URL.")
@click.option("--issuer", help="The public issuer URL to check (default: OAUTH_ISSUER).")
def check_command(issuer: str | None) -> None:
    """Check the deployment as an MCP client will find it, through the public issuer
    URL (so through the TLS proxy): metadata naming the issuer, https, /healthz, the
    protected-resource document, the upstream (gateway mode), the clock. One line per
    check; exits 1 when any fails."""
    failed = 0
    for result in run_checks(_svc().config, issuer):
        click.echo(result.line())
        failed += not result.ok
    if failed:
        sys.exit(1)


@command("rotate-session-secret", audited=True, short_help="End every login session.")
def rotate_session_secret() -> None:
    """Make a new session secret: everyone signs in again (the running server follows
    at once); access and refresh tokens are unaffected."""
    _svc().keys.rotate_session_secret()
    click.echo("New session secret: every login session has ended; tokens are unaffected.")


def init_app(app: Flask) -> None:
    app.cli.add_command(oauth)
