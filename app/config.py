"""Configuration from environment variables (and `.env`), validated once at start-up.

Every OAUTH_* setting of the server itself lives here with its default; an identity
provider declares and reads its own variables (`Setting`, in app/providers/), from the
environment the `Config` keeps. A bad value raises `ConfigError`, whose message is one
line naming the variable, so the operator sees exactly what to fix instead of a
traceback.
"""

from __future__ import annotations

import functools
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: what the consent page says each scope lets an app do: `scope=description`, comma
#: separated; the operator's entries are added to these (and replace one of the same
#: scope), so that `mcp` keeps its words when another scope is described
DEFAULT_SCOPE_DESCRIPTIONS = "mcp=Use the tools of this MCP server"


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def is_loopback_host(host: str | None) -> bool:
    """True for `localhost` and loopback IP literals (RFC 8252 §7.3 / §8.3)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    issuer: str = "http://127.0.0.1:8000"
    host: str = "127.0.0.1"
    port: int = 8000
    threads: int = 16
    data_dir: Path = Path(".oauth_data")
    #: "file", or a postgresql:// URL
    store: str = "file"
    provider: str = "custom"
    access_token_ttl: int = 3600
    refresh_token_ttl: int = 2592000
    auth_code_ttl: int = 600
    client_idle_ttl: int = 7776000
    refresh_grace: int = 30
    code_retry_window: int = 10
    unused_client_ttl: int = 86400
    scopes: tuple[str, ...] = ("mcp",)
    #: (scope, what the consent page says it lets an app do): OAUTH_SCOPE_DESCRIPTIONS
    #: (pairs, not a dict, so that the frozen Config stays hashable)
    scope_descriptions: tuple[tuple[str, str], ...] = field(
        default_factory=lambda: tuple(_scope_descriptions(DEFAULT_SCOPE_DESCRIPTIONS).items())
    )
    resources: tuple[str, ...] = ()
    redirect_hosts: tuple[str, ...] = ()
    upstream_url: str | None = None
    upstream_timeout: int = 120
    #: gateway mode: forwarded requests open at once, in all and per grant (app/streams.py)
    max_streams: int = 100
    max_streams_per_grant: int = 8
    resource_path: str = "/mcp"
    trusted_proxies: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
    connection_limit: int = 1000
    connections_per_address: int = 50
    registration_rate: int = 30
    max_clients: int = 10000
    max_clients_per_address: int = 100
    native_schemes: tuple[str, ...] = ("cursor", "vscode", "vscode-insiders", "windsurf")
    cimd: bool = True
    cimd_allow_private: bool = False
    #: enterprise IdPs whose ID-JAGs /token accepts (app/oauth2/rfc7523.py)
    trusted_idps: tuple[str, ...] = ()
    metrics_allow: tuple[IPNetwork, ...] = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
    log_format: str = "text"
    #: keep the person's upstream tokens for the MCP server (app/upstream_tokens.py),
    #: and the upstream scopes asked for beyond the login's own
    upstream_tokens: bool = False
    upstream_scopes: tuple[str, ...] = ()
    #: the environment this was read from, for the identity provider's own variables
    #: (`Setting`); never printed (it holds secrets)
    env: Mapping[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def issuer_is_https(self) -> bool:
        return self.issuer.startswith("https://")

    # Cached: some of these are read on every request.
    @functools.cached_property
    def issuer_scheme(self) -> str:
        return urlsplit(self.issuer).scheme

    @functools.cached_property
    def issuer_netloc(self) -> str:
        return urlsplit(self.issuer).netloc

    @functools.cached_property
    def issuer_origin(self) -> str:
        return f"{self.issuer_scheme}://{self.issuer_netloc}"

    @functools.cached_property
    def issuer_path(self) -> str:
        """The issuer's path without a trailing slash ('' when the issuer has none)."""
        return urlsplit(self.issuer).path.rstrip("/")

    def scope_description(self, scope: str) -> str | None:
        """What the consent page says `scope` lets an app do (None: shown by its name)."""
        return dict(self.scope_descriptions).get(scope)

    @property
    def default_resource(self) -> str:
        return self.resources[0]

    def url(self, path: str) -> str:
        """An absolute URL of one of our endpoints, derived from the issuer."""
        return self.issuer + path

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, env_file: str | os.PathLike | None = ".env") -> Config:
        """Read the settings; values in the real environment win over `.env`."""
        return _parse(environment(environ, env_file))


def environment(
    environ: Mapping[str, str] | None = None, env_file: str | os.PathLike | None = ".env"
) -> dict[str, str]:
    """The variables: `.env`'s, overridden by the real environment's."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ if environ is None else environ)
    return merged


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value.strip() == "" else value.strip()


def _store(env: Mapping[str, str]) -> str:
    value = _get(env, "OAUTH_STORE", "file")
    if value == "file" or value.startswith(("postgresql://", "postgres://")):
        return value
    raise ConfigError("OAUTH_STORE must be `file` or a postgresql:// URL")


def parse_log_format(env: Mapping[str, str]) -> str:
    """OAUTH_LOG_FORMAT: `text` or `json` (read before the rest, so that a bad
    configuration is itself reported in the chosen format)."""
    value = (env.get("OAUTH_LOG_FORMAT") or "text").strip().lower()
    if value not in ("text", "json"):
        raise ConfigError(f"OAUTH_LOG_FORMAT must be `text` or `json`, got {value!r}")
    return value


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = _get(env, name, str(default))
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _list(env: Mapping[str, str], name: str, sep: str = ",", default: str = "") -> tuple[str, ...]:
    """The items of a list variable; `default` when it is unset (set but empty is
    an empty list)."""
    raw = env.get(name)
    raw = default if raw is None else raw
    items = raw.split(sep) if sep != " " else raw.split()
    return tuple(item.strip() for item in items if item.strip())


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _get(env, name, "1" if default else "0").lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, got {raw!r}")


def _networks(env: Mapping[str, str], name: str, default: str) -> tuple[IPNetwork, ...]:
    """A comma list of IP addresses or CIDR networks."""
    raw = env.get(name)
    items = _list(env, name, default=default)
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in items)
    except ValueError:
        raise ConfigError(f"{name} must be a comma list of IP addresses or networks, got {raw!r}") from None


def _scope_descriptions(raw: str) -> dict[str, str]:
    """`scope=description` items, comma separated (so a description holds no comma)."""
    described: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        scope, equals, description = item.partition("=")
        scope, description = scope.strip(), " ".join(description.split())
        if not equals or not scope or not description or any(c.isspace() for c in scope):
            raise ConfigError(f"OAUTH_SCOPE_DESCRIPTIONS must be a comma list of scope=description, got {item!r}")
        described[scope] = description
    return described


def _absolute_url(name: str, value: str, *, allow_query: bool = False) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{name} must be an absolute http(s) URL, got {value!r}")
    if parts.fragment or (parts.query and not allow_query):
        raise ConfigError(f"{name} must not carry a query or fragment, got {value!r}")
    return value


def _trusted_idps(env: Mapping[str, str]) -> tuple[str, ...]:
    """OAUTH_TRUSTED_IDPS: issuer URLs, https (their keys are found by discovery, which
    is fetched over https only), compared as written."""
    issuers = tuple(_absolute_url("OAUTH_TRUSTED_IDPS", i) for i in _list(env, "OAUTH_TRUSTED_IDPS"))
    for issuer in issuers:
        if not issuer.startswith("https://"):
            raise ConfigError(f"OAUTH_TRUSTED_IDPS must list https issuer URLs, got {issuer!r}")
    return issuers


def _parse(env: Mapping[str, str]) -> Config:
    port = _int(env, "PORT", 8000, minimum=1)
    if port > 65535:
        raise ConfigError(f"PORT must be at most 65535, got {port}")
    # Unset, the issuer follows PORT, so `PORT=9000 make run` just works locally.
    issuer = _absolute_url("OAUTH_ISSUER", _get(env, "OAUTH_ISSUER", f"http://127.0.0.1:{port}")).rstrip("/")
    issuer_host = urlsplit(issuer).hostname
    if issuer.startswith("http://") and not is_loopback_host(issuer_host):
        # OAuth 2.1 §1.5: everything but loopback must be TLS. Behind a TLS proxy,
        # set the public https URL here.
        raise ConfigError(f"OAUTH_ISSUER must use https unless it is a loopback address, got {issuer!r}")

    from .providers import REGISTRY  # the providers' names only: imported once both exist

    provider = _get(env, "OAUTH_PROVIDER", "custom").lower()
    if provider not in REGISTRY:
        raise ConfigError(f"OAUTH_PROVIDER must be one of {', '.join(REGISTRY)}, got {provider!r}")

    resource_path = _get(env, "OAUTH_RESOURCE_PATH", "/mcp")
    if not resource_path.startswith("/") or resource_path == "/" or "?" in resource_path:
        raise ConfigError(f"OAUTH_RESOURCE_PATH must be a path like /mcp, got {resource_path!r}")
    resource_path = resource_path.rstrip("/")

    resources = tuple(_absolute_url("OAUTH_RESOURCES", r) for r in _list(env, "OAUTH_RESOURCES")) or (
        issuer + resource_path,
    )

    from .policy import IGNORED_SCOPES  # policy reads Config: imported once both exist

    scopes = tuple(s for s in _list(env, "OAUTH_SCOPES", " ") if s not in IGNORED_SCOPES) or ("mcp",)

    upstream = env.get("OAUTH_UPSTREAM_URL", "").strip() or None
    if upstream:
        upstream = _absolute_url("OAUTH_UPSTREAM_URL", upstream).rstrip("/")

    upstream_tokens = _flag(env, "OAUTH_UPSTREAM_TOKENS", False)
    if upstream_tokens and provider == "custom":
        # Only a login at an upstream has an upstream token to keep.
        raise ConfigError("OAUTH_UPSTREAM_TOKENS needs an upstream OAUTH_PROVIDER (google, azure, github, oidc)")

    return Config(
        issuer=issuer,
        host=_get(env, "HOST", "127.0.0.1"),
        port=port,
        threads=_int(env, "OAUTH_THREADS", 16, minimum=1),
        data_dir=Path(_get(env, "OAUTH_DATA_DIR", ".oauth_data")),
        store=_store(env),
        provider=provider,
        access_token_ttl=_int(env, "OAUTH_ACCESS_TOKEN_TTL", 3600, minimum=1),
        refresh_token_ttl=_int(env, "OAUTH_REFRESH_TOKEN_TTL", 2592000, minimum=1),
        auth_code_ttl=_int(env, "OAUTH_AUTH_CODE_TTL", 600, minimum=1),
        client_idle_ttl=_int(env, "OAUTH_CLIENT_IDLE_TTL", 7776000),
        refresh_grace=_int(env, "OAUTH_REFRESH_GRACE", 30),
        code_retry_window=_int(env, "OAUTH_CODE_RETRY_WINDOW", 10),
        unused_client_ttl=_int(env, "OAUTH_UNUSED_CLIENT_TTL", 86400, minimum=1),
        scopes=scopes,
        scope_descriptions=tuple(
            (
                _scope_descriptions(DEFAULT_SCOPE_DESCRIPTIONS)
                | _scope_descriptions(_get(env, "OAUTH_SCOPE_DESCRIPTIONS", DEFAULT_SCOPE_DESCRIPTIONS))
            ).items()
        ),
        resources=resources,
        redirect_hosts=tuple(h.lower() for h in _list(env, "OAUTH_REDIRECT_HOSTS")),
        upstream_url=upstream,
        upstream_timeout=_int(env, "OAUTH_UPSTREAM_TIMEOUT", 120, minimum=1),
        max_streams=_int(env, "OAUTH_MAX_STREAMS", 100, minimum=1),
        max_streams_per_grant=_int(env, "OAUTH_MAX_STREAMS_PER_GRANT", 8, minimum=1),
        resource_path=resource_path,
        trusted_proxies=_networks(env, "OAUTH_TRUSTED_PROXIES", "127.0.0.1,::1"),
        connection_limit=_int(env, "OAUTH_CONNECTION_LIMIT", 1000, minimum=1),
        connections_per_address=_int(env, "OAUTH_CONNECTIONS_PER_ADDRESS", 50, minimum=1),
        registration_rate=_int(env, "OAUTH_REGISTRATION_RATE", 30),
        max_clients=_int(env, "OAUTH_MAX_CLIENTS", 10000),
        max_clients_per_address=_int(env, "OAUTH_MAX_CLIENTS_PER_ADDRESS", 100),
        native_schemes=tuple(
            s.lower() for s in _list(env, "OAUTH_NATIVE_SCHEMES", default="cursor,vscode,vscode-insiders,windsurf")
        ),
        cimd=_flag(env, "OAUTH_CIMD", True),
        cimd_allow_private=_flag(env, "OAUTH_CIMD_ALLOW_PRIVATE", False),
        trusted_idps=_trusted_idps(env),
        metrics_allow=_networks(env, "OAUTH_METRICS_ALLOW", "127.0.0.1,::1"),
        log_format=parse_log_format(env),
        upstream_tokens=upstream_tokens,
        upstream_scopes=_list(env, "OAUTH_UPSTREAM_SCOPES", " "),
        env=MappingProxyType(dict(env)),
    )


@dataclass(frozen=True)
class Setting:
    """One environment variable a part of the server declares and reads itself (an
    identity provider its client id, its upstream's URL, its allow-lists): its name,
    its default (stated in the declaration only), whether it must be set, its kind: `text`,
    `url` (an absolute http(s) URL) or `list` (a comma list, `lower`-cased if asked)."""

    name: str
    default: str = ""
    required: bool = False
    kind: Literal["text", "url", "list"] = "text"
    lower: bool = False

    def read(self, env: Mapping[str, str], required_by: str) -> Any:
        """The value, checked: a `ConfigError` naming the variable when it is bad or,
        being `required`, unset (`required_by` says who needs it)."""
        if self.kind == "list":
            items = _list(env, self.name, default=self.default)
            return tuple(item.lower() for item in items) if self.lower else items
        value = _get(env, self.name, self.default)
        if self.required and not value:
            raise ConfigError(f"{self.name} is required {required_by}")
        if self.kind == "url" and value:
            value = _absolute_url(self.name, value)
        return value.lower() if self.lower else value


def read_settings(env: Mapping[str, str], settings: tuple[Setting, ...], required_by: str) -> dict[str, Any]:
    """The declared variables' values by name, each checked (the first bad one raises)."""
    return {setting.name: setting.read(env, required_by) for setting in settings}
