"""The authorization endpoint (RFC 6749 §4.1, RFC 7636, RFC 8707, RFC 9207) and the
consent page.

GET /authorize validates the request with Authlib before anything else happens. An
unknown client or a redirect URI that does not match is shown to the person, never
redirected to. Any other error goes back to the client's redirect URI with `state` and
`iss` only once the person has logged in: before that it is shown on a page too, so
that a registered client cannot use this server's domain to send a stranger's browser
to its own site (RFC 9700 §4.11.2). A valid request is kept as a pending authorization
while the provider logs the person in, then /consent asks (or remembers) the approval
and issues the code.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any
from urllib.parse import urlsplit

from authlib.oauth2.rfc6749 import OAuth2Error
from flask import Blueprint, render_template, request
from flask.typing import ResponseReturnValue

from ..cimd import DocumentError, is_document_url
from ..config import is_loopback_host
from ..display import label_of
from ..forwarded import network_key
from ..models import Person
from ..observability import CONSENTS, audit, note
from ..pending import MAX_QUERY_BYTES, PendingAuthorization, TooManyPending
from ..policy import redirect_destination
from ..providers.base import browser_id, current_person
from ..routes import for_people
from ..security import check_csrf
from ..services import Services, services

#: a client id as the request log names it: at most this many characters
LOGGED_CLIENT_ID = 200


def _error_page(error: OAuth2Error, reason: str | None = None) -> ResponseReturnValue:
    """The error shown to the person; its request-log line names the error (a page
    has no JSON body to read it from), the client id asked for and `reason`."""
    note(error=error.error, reason=reason, client_id=request.args.get("client_id", "")[:LOGGED_CLIENT_ID] or None)
    description = error.description or error.error
    return (
        render_template(
            "error.html",
            title="This authorization request cannot be completed",
            error=error.error,
            message=description,
        ),
        400,
    )


def _unknown_client_page(client_id: str) -> ResponseReturnValue:
    """An unknown client: most often one this server deleted or let expire while the
    person's app (ChatGPT, Claude…) kept its id. Only the app can register again, and
    it does so when its connector is added again: say so."""
    note(error="invalid_client", reason="unknown_client", client_id=client_id[:LOGGED_CLIENT_ID])
    return (
        render_template(
            "error.html",
            title="This app is not connected to this server any more",
            error="invalid_client",
            message="The app that sent you here (ChatGPT, Claude or another) uses a connection this server "
            "no longer knows: it was removed, or expired after a long time unused.",
            next_step="In your app, remove this server's connector (or MCP server) and add it again. "
            "The app then connects afresh and you will be asked to approve it.",
        ),
        400,
    )


def _refused(error: OAuth2Error, identity: Person | None, client_id: str) -> ResponseReturnValue:
    """What a request Authlib refused gets: an unknown client's page, an error page,
    or (only for a person who logged in: RFC 9700 §4.11.2) a redirect to the client."""
    if error.error == "invalid_client" and client_id:
        return _unknown_client_page(client_id)  # the only invalid_client Authlib raises here
    return _error_response(error) if identity is not None else _error_page(error)


def _error_response(error: OAuth2Error) -> ResponseReturnValue:
    """Redirect the error to the client only when its redirect URI was validated."""
    if not error.redirect_uri:
        return _error_page(error)
    svc = services()
    response = svc.server.handle_error_response(None, error)
    # RFC 9207: iss on error responses too.
    svc.server.execute_hook("after_create_authorization_response", response)
    return response


def _validate(params: dict[str, list[str]], user: Person | None = None) -> Any:
    """Authlib's validation of a (stored or live) authorization request."""
    try:
        return services().server.get_consent_grant(request=params, end_user=user)
    except ValueError:
        # Authlib quotes some request values (redirect_uri, response_type) in its
        # error descriptions and raises ValueError when they hold characters RFC 6749
        # forbids there. Such a request is malformed; nothing about it was validated,
        # so it is shown to the person, never redirected.
        raise OAuth2Error(
            "The authorization request holds characters that are not allowed.", error="invalid_request"
        ) from None


def _logged_in(svc: Services) -> Person | None:
    """The person this browser is logged in as. With OAUTH_UPSTREAM_TOKENS, only while
    the upstream token of that login waits here: each grant gets a token of its own
    (two grants sharing one refresh token would break each other when the upstream
    rotates it), so the person passes through the upstream login again."""
    identity = current_person(svc.provider)
    tokens = svc.upstream_tokens
    if identity is not None and tokens is not None and not tokens.has_login_token(browser_id()):
        return None
    return identity


def _asks_for_consent(params: dict[str, list[str]]) -> bool:
    """OIDC `prompt=consent`: show the page even when the approval is remembered."""
    return "consent" in (params.get("prompt") or [""])[0].split()


bp = for_people(Blueprint("authorize", __name__))


@bp.get("/authorize")
def authorize() -> ResponseReturnValue:
    svc = services()
    if len(request.query_string) > MAX_QUERY_BYTES:
        # Kept whole while the person logs in: bounded before anything is kept.
        return _error_page(OAuth2Error("The authorization request is too long.", error="invalid_request"))
    params = request.args.to_dict(flat=False)
    client_id = (params.get("client_id") or [""])[0]
    if svc.clients.documents is not None and is_document_url(client_id):
        try:
            svc.clients.refresh_document(client_id)
        except DocumentError as exc:
            return _error_page(
                OAuth2Error(f"The client's metadata document cannot be used: {exc}.", error="invalid_client"),
                reason="document_unusable",
            )
    identity = _logged_in(svc)
    try:
        grant = _validate(params, identity)
    except OAuth2Error as error:
        return _refused(error, identity, client_id)
    if identity is not None and not _asks_for_consent(params):
        # A returning person (login session) who approved this client for this
        # scope, resource and redirect URI before: the code at once, no page between.
        request_ = grant.request
        if svc.clients.approved(grant.client, identity.subject, request_.scope, request_.resource, grant.redirect_uri):
            CONSENTS.labels("remembered").inc()
            return svc.server.create_authorization_response(request=params, grant_user=identity, grant=grant)
    try:
        pending = svc.pending.create(params, browser_id(), network_key(svc.config))
    except TooManyPending as refused:
        return (
            render_template(
                "error.html",
                title="Too many sign-ins in progress",
                error="temporarily_unavailable",
                message="Too many sign-ins are in progress from your network. Finish or close them, or try again "
                "in a few minutes.",
            ),
            429,
            {"Retry-After": str(refused.wait)},
        )
    if identity is not None:
        return svc.provider.to_consent(pending)
    return svc.provider.start_login(pending)


@bp.route("/consent", methods=["GET", "POST"])
def consent() -> ResponseReturnValue:
    svc = services()
    if request.method == "POST":
        check_csrf()
    pending = svc.pending.get(request.values.get("request_id"), browser_id())
    if pending is None:
        return (
            render_template(
                "error.html",
                title="This sign-in link has expired",
                error="expired",
                message="The authorization request is unknown or has expired. "
                "Go back to your application and connect again.",
            ),
            400,
        )
    identity = _logged_in(svc)
    if identity is None:
        return svc.provider.start_login(pending)
    try:
        grant = _validate(pending.params, identity)
    except OAuth2Error as error:
        svc.pending.finish(pending.id)
        return _refused(error, identity, pending.client_id)

    scope: str = grant.request.scope
    resource: list[str] = grant.request.resource
    client = grant.client
    shown = _what_is_shown(client, grant.redirect_uri, scope, resource)
    changed = request.method == "POST" and not hmac.compare_digest(request.form.get("shown", ""), shown)
    if request.method == "POST" and not changed:
        decision = request.form.get("decision")
        if decision not in ("approve", "deny"):
            return _error_page(OAuth2Error("Choose Allow or Deny.", error="invalid_request"))
        if decision == "approve":
            svc.clients.remember_approval(client, identity.subject, scope, resource, grant.redirect_uri)
        CONSENTS.labels("approved" if decision == "approve" else "denied").inc()
        audit(
            "consent.approved" if decision == "approve" else "consent.denied",
            client_id=client.client_id,
            subject=identity.subject,
            scope=scope,
            resource=" ".join(resource) or None,
        )
        return _finish(pending, grant, identity if decision == "approve" else None)
    if (
        not changed
        and not _asks_for_consent(pending.params)
        and svc.clients.approved(client, identity.subject, scope, resource, grant.redirect_uri)
    ):
        CONSENTS.labels("remembered").inc()
        return _finish(pending, grant, identity)
    destination, native_app = redirect_destination(grant.redirect_uri)
    label = label_of(client)
    return render_template(
        "consent.html",
        pending=pending,
        label=label,
        identity=identity,
        loopback_only=label.vouched_by is not None and _only_loopback(client.redirect_uris),
        redirect_host=destination,
        native_app=native_app,
        redirect_uri=grant.redirect_uri,
        scopes=[(s, svc.config.scope_description(s)) for s in scope.split()],
        resources=resource,
        shown=shown,
        changed=changed,
        # the MCP server will act with the person's upstream account (OAUTH_UPSTREAM_TOKENS)
        upstream_account=getattr(svc.provider, "title", None) if svc.upstream_tokens is not None else None,
    )


def _what_is_shown(client: Any, redirect_uri: str, scope: str, resource: list[str]) -> str:
    """A digest of what the consent page shows: a decision counts only for what the
    person saw (a client that changed its redirect URI or name in between, by RFC 7592
    or its metadata document, is shown again)."""
    facts = [client.client_id, client.client_name, redirect_uri, scope, sorted(resource)]
    return hashlib.sha256(json.dumps(facts).encode()).hexdigest()


def _only_loopback(redirect_uris: list[str]) -> bool:
    """Whether every redirect URI is on this device's loopback: any local app can
    listen there, so a metadata document naming only such URIs can be claimed by any
    of them (the MCP specification: warn the person)."""
    return bool(redirect_uris) and all(is_loopback_host(urlsplit(uri).hostname) for uri in redirect_uris)


def _finish(pending: PendingAuthorization, grant: Any, user: Person | None) -> ResponseReturnValue:
    """Issue the code (or access_denied) to the client's redirect URI, with iss."""
    svc = services()
    svc.pending.finish(pending.id)
    if user is None and svc.upstream_tokens is not None:
        svc.upstream_tokens.discard_login_token(browser_id())  # denied: no grant will use it
    return svc.server.create_authorization_response(request=pending.params, grant_user=user, grant=grant)
