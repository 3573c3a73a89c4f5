"""A self-hosted OAuth 2.1 authorization server (and optional gateway) for MCP servers.

`create_app` is the application factory: configuration -> store backend -> services
(app/services.py) -> blueprints. It wires the store, the repositories, the Authlib
server and the identity provider together, then registers the endpoints. Nothing below
the endpoints imports it: what a layer needs is handed to it here.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import sys
from datetime import timedelta
from typing import TYPE_CHECKING

from flask import Flask, Request, request
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from .admin import Admin
from .cimd import DocumentFetcher
from .config import Config, ConfigError
from .forwarded import IssuerOrigin, client_address, peer_is_trusted
from .keys import KeyManager
from .oauth2 import OAuthServer
from .observability import RequestLog, configure_logging, note, observe_store_write
from .pending import PendingAuthorizations
from .providers import provider_class
from .repositories import ClientRepository, GrantRepository, UserRepository, open_store
from .services import Services, services
from .storage import Store, StoreError

if TYPE_CHECKING:
    from .providers.base import IdentityProvider
    from .upstream_tokens import UpstreamTokens

__all__ = ["Services", "__version__", "create_app", "create_cli_app", "services"]

#: the release: stated here only (pyproject.toml reads it; /healthz, /metrics and
#: `mcp-oauth --version` report it). A plain literal, so that the build reads it
#: without importing the package.
__version__ = "1.0.0"


def create_app(config: Config | None = None, *, for_cli: bool = False) -> Flask:
    """Build the app. With `for_cli`, touch no file yet: the CLI commands open the
    store themselves and report a broken one in a single line."""
    config = config or Config.from_env()
    provider_type = provider_class(config.provider)
    # The provider's own variables, checked before anything is touched (a bad one is a
    # ConfigError naming it, like the server's).
    provider_settings = provider_type.read_settings(config.env)
    app = Flask(__name__, static_url_path=f"{config.issuer_path}/static")
    app.config.update(
        SESSION_COOKIE_NAME="mcp_oauth_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.issuer_is_https,
        SESSION_COOKIE_PATH=config.issuer_path or "/",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=12),
        # A login lasts 12 hours from when the session last changed (a login, a form),
        # not from the last request; and an unchanged session is not signed and sent
        # again on every /authorize of a returning person.
        SESSION_REFRESH_EACH_REQUEST=False,
        MAX_CONTENT_LENGTH=1024 * 1024,
    )
    app.session_interface = LazySessionInterface()
    app.json = UnsortedJSON(app)
    # Werkzeug would answer `//x` with a redirect whose Location it builds from the
    # Host header; paths are normalised where it matters (app/policy.py) instead.
    app.url_map.merge_slashes = False

    # Endpoint modules reach the services through this package: imported once it exists.
    from .endpoints.metadata import JWKSDocument
    from .hotpath import HotPaths

    store = open_store(config)
    keys = KeyManager(store)
    clients = ClientRepository(store, config, DocumentFetcher(config, store.shared) if config.cimd else None)
    grants = GrantRepository(store, config)
    users = UserRepository(store)
    server = OAuthServer(config, clients, grants, keys)
    pending = PendingAuthorizations(ttl=config.auth_code_ttl, state=store.shared)
    provider = provider_type.create(config, provider_settings, users=users, pending=pending)
    server.upstream_tokens = upstream_tokens = _upstream_tokens(config, store, keys, provider)
    app.extensions["oauth"] = Services(
        config=config,
        store=store,
        keys=keys,
        clients=clients,
        grants=grants,
        users=users,
        server=server,
        verifier=server.verifier,
        pending=pending,
        provider=provider,
        admin=Admin(config, store, clients, grants, users, keys),
        jwks=JWKSDocument(keys),
        upstream_tokens=upstream_tokens,
    )

    from . import cli, cors, display, errors
    from .endpoints import account, authorize, gateway, metadata, metrics, registration, token, verify
    from .routes import Routes, for_people
    from .security import csrf_token

    app.jinja_env.globals["csrf_token"] = csrf_token
    display.init_app(app)
    errors.init_app(app)
    for blueprint in (registration.bp, authorize.bp, token.bp, verify.bp, metrics.bp, account.bp):
        app.register_blueprint(blueprint, url_prefix=config.issuer_path)
    # Their URLs come from the configuration (resources, the gateway's path); discovery
    # reads the URLs of the endpoints above from the URL map.
    documents = metadata.init_app(app, config)
    gateway_path = gateway.init_app(app, config)
    before = set(app.blueprints)
    provider.init_app(app)
    for name in set(app.blueprints) - before:  # a provider's login page and callback
        for_people(app.blueprints[name])
    # Every route is registered: what needs a path reads it from the URL map, once.
    routes = app.extensions["routes"] = Routes(app)
    cors.init_app(app, routes)
    server.client_authenticated_paths = routes.client_authenticated_paths
    cli.init_app(app)
    app.before_request(lambda: note(endpoint=request.endpoint))
    store.observe_write = observe_store_write
    app.wsgi_app = RequestLog(  # type: ignore[method-assign]
        HotPaths(IssuerOrigin(app.wsgi_app, config.issuer), app.extensions["oauth"], routes, documents, gateway_path),
        exact_endpoints={rule.rule: rule.endpoint for rule in app.url_map.iter_rules() if not rule.arguments},
        trust_request_id=functools.partial(peer_is_trusted, config),
        client_address=functools.partial(client_address, config),
    )

    if for_cli:
        # What a command wrote lands in the JSON files when it ends (a broken store
        # was already reported by the command itself).
        atexit.register(_compact_quietly, store)
    else:
        store.check()
        store.check_writable()  # before anything is written: one line naming the folder
        store.sweep()
        # The JSON files are the readable truth: made whole at once after a crash, and
        # kept current while the server runs.
        store.compact()
        store.start_upkeep()
        keys.ensure()
        app.secret_key = keys.session_secret()
        provider.on_startup()
    return app


def _upstream_tokens(
    config: Config, store: Store, keys: KeyManager, provider: IdentityProvider
) -> UpstreamTokens | None:
    """With OAUTH_UPSTREAM_TOKENS, what keeps the person's upstream tokens for the MCP
    server (app/upstream_tokens.py), told of each login by the provider; else None."""
    if not config.upstream_tokens:
        return None
    from .providers.upstream import UpstreamProvider
    from .upstream_tokens import UpstreamTokens

    assert isinstance(provider, UpstreamProvider)  # app/config.py refuses the others
    tokens = UpstreamTokens(store, keys, provider.refresh_upstream_token, provider.name, config.auth_code_ttl)
    provider.upstream_tokens = tokens
    return tokens


class UnsortedJSON(DefaultJSONProvider):
    """Keys in the order they were written: metadata reads best in the order the
    RFCs list it."""

    sort_keys = False


class LazySessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, opened only when the request carries the cookie:
    API calls (token, introspection, the gateway) never do, and building the signer
    for them cost more than some of those endpoints' own work."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if self.get_cookie_name(app) not in request.cookies:
            return self.session_class()
        return super().open_session(app, request)

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        # The secret as the store holds it now: `rotate-session-secret` in another
        # process ends every login session in the running server at once.
        app.secret_key = app.extensions["oauth"].keys.session_secret()
        return super().get_signing_serializer(app)


def _compact_quietly(store: Store) -> None:
    if store.wrote:  # a command that changed nothing leaves every file as it was
        with contextlib.suppress(StoreError):
            store.compact()


def create_cli_app() -> Flask:
    """The app for `flask oauth …` (named in .flaskenv)."""
    try:
        app = create_app(for_cli=True)
    except ConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    # Every change a command makes is an audit event, on stderr like the server's log.
    configure_logging(app.extensions["oauth"].config.log_format)
    return app
