"""A person's connected apps: what the account page lists (the clients they approved,
and those holding a grant of theirs) and what Disconnect takes away.

An app is listed when the person has an approval of it or a grant of it: an approval
forgotten after its client changed its redirect URIs leaves the grants, and the person
must still see them to take them back. Nothing here reads or touches another person's
approvals or grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from .models import Client, Person
from .policy import redirect_destination
from .repositories import ClientRepository, GrantRepository


@dataclass
class ConnectedApp:
    client_id: str
    name: str
    #: where its codes go: hosts (or, for a native app, the schemes it opens)
    redirect_hosts: list[str]
    #: the host of the metadata document that names it, or None when the name is the
    #: app's own claim (dynamic registration)
    document_host: str | None
    scopes: list[str]
    resources: list[str]
    approved_at: float | None
    last_used_at: float | None
    grants: int = 0
    #: the client is no longer stored (its grants outlived it only until purged)
    gone: bool = False
    #: the person's approval is kept (else only grants are)
    approved: bool = False


def when(at: float | None) -> str:
    """A time as the account page shows it (UTC: the server does not know the
    person's zone)."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def _redirect_hosts(uris: list[str]) -> list[str]:
    return list(dict.fromkeys(redirect_destination(uri)[0] for uri in uris if uri))


def _app_of(client_id: str, client: Client | None) -> ConnectedApp:
    document = client is not None and client.record.get("document") is True
    return ConnectedApp(
        client_id=client_id,
        name=client.client_name if client is not None else client_id,
        redirect_hosts=_redirect_hosts(client.redirect_uris) if client is not None else [],
        document_host=urlsplit(client_id).hostname if document else None,
        scopes=[],
        resources=[],
        approved_at=None,
        last_used_at=None,
        gone=client is None,
    )


def connected_apps(clients: ClientRepository, grants: GrantRepository, person: Person) -> list[ConnectedApp]:
    """This person's apps, the most recently used first."""
    apps: dict[str, ConnectedApp] = {}
    for client_id, (client, approval) in clients.approvals_of(person.subject).items():
        app = apps[client_id] = _app_of(client_id, client)
        app.approved = True
        if approval.get("redirect_uri"):
            app.redirect_hosts = _redirect_hosts([approval["redirect_uri"]])
        app.scopes = str(approval.get("scope", "")).split()
        app.resources = list(approval.get("resource", []))
        app.approved_at = approval.get("approved_at")
    for grant in grants.of_person(person.provider, person.subject):
        if grant.client_id not in apps:
            apps[grant.client_id] = _app_of(grant.client_id, clients.get(grant.client_id))
        app = apps[grant.client_id]
        app.grants += 1
        app.scopes = list(dict.fromkeys([*app.scopes, *grant.get_scope().split()]))
        app.resources = list(dict.fromkeys([*app.resources, *grant.resource]))
        issued = grant.record.get("issued_at")
        used = grant.record.get("refreshed_at") or issued
        if not app.approved and issued and (app.approved_at is None or issued < app.approved_at):
            app.approved_at = issued  # no approval kept: the first grant says when
        if used and (app.last_used_at is None or used > app.last_used_at):
            app.last_used_at = used
    return sorted(apps.values(), key=lambda a: a.last_used_at or a.approved_at or 0, reverse=True)


def disconnect(clients: ClientRepository, grants: GrantRepository, person: Person, client_id: str) -> tuple[bool, int]:
    """Take this person's access back from one app: their grants of it (refresh and
    access tokens stop working at once) and their approval (the next /authorize asks
    again). (whether there was an approval, how many grants went)."""
    # The approval first: from then on no code is issued without asking.
    forgot = clients.forget_approval(client_id, person.subject)
    removed = grants.delete_of_person(person.provider, person.subject, client_id)
    return forgot, removed
