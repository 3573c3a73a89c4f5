"""`check`: a deployment seen from the outside, the way an MCP client will see it.

Every request goes to the public issuer URL (through the TLS proxy, with the system's
trusted CAs plus those `SSL_CERT_FILE` names), never to the local port, so what
passes here is what ChatGPT or Claude will find: the metadata names the same issuer
(RFC 8414 §3.3: a mismatch makes clients refuse it), the issuer is https, the server is
healthy, the protected-resource document (RFC 9728) points back at the issuer, the
gateway reaches its upstream, and the clocks agree (tokens carry `iat` and `exp`).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from .cimd import trusted_tls_context
from .config import Config, is_loopback_host
from .policy import same_resource

#: seconds one request of the check may take
TIMEOUT = 10
#: clocks further apart than this make tokens look expired or not yet valid
MAX_CLOCK_SKEW = 30


@dataclass(frozen=True)
class Result:
    name: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.name}: {self.detail}"


class _Failed(Exception):
    """One check failed; the message says why."""


def metadata_url(issuer: str) -> str:
    """RFC 8414 §3.1: the well-known path goes between the host and the issuer's path."""
    parts = urlsplit(issuer)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-authorization-server{parts.path.rstrip('/')}"


def resource_metadata_url(resource: str) -> str:
    """RFC 9728 §3.1, the same insertion for a protected resource."""
    parts = urlsplit(resource)
    return f"{parts.scheme}://{parts.netloc}/.well-known/oauth-protected-resource{parts.path.rstrip('/')}"


def run_checks(config: Config, issuer: str | None = None) -> Iterator[Result]:
    """Each check's result, in order; the later ones go on when one fails."""
    issuer = (issuer or config.issuer).rstrip("/")
    session = requests.Session()
    session.mount("https://", _TrustingAdapter())

    def get(url: str) -> requests.Response:
        try:
            return session.get(url, timeout=TIMEOUT, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise _Failed(f"TLS to {url} failed: {_reason(exc)}") from None
        except requests.RequestException as exc:
            raise _Failed(f"{url} unreachable: {_reason(exc)}") from None

    def json_of(url: str) -> dict:
        response = get(url)
        if response.status_code != 200:
            raise _Failed(f"{url} answered {response.status_code}")
        try:
            document = response.json()
        except ValueError:
            raise _Failed(f"{url} is not JSON") from None
        if not isinstance(document, dict):
            raise _Failed(f"{url} is not a JSON object")
        return document

    def metadata() -> str:
        url = metadata_url(issuer)
        named = json_of(url).get("issuer")
        if named != issuer:
            raise _Failed(f"{url} names issuer {named!r}, not {issuer!r} (set OAUTH_ISSUER to the public URL)")
        return f"{url} names {issuer}"

    def https() -> str:
        host = urlsplit(issuer).hostname
        if issuer.startswith("https://"):
            return "the issuer is https"
        if is_loopback_host(host):
            return "loopback issuer (no TLS needed on this machine only; MCP clients elsewhere need https)"
        raise _Failed(f"{issuer} is not https (OAuth 2.1 §1.5)")

    def health() -> str:
        response = get(issuer + "/healthz")
        if response.status_code != 200:
            raise _Failed(f"/healthz answered {response.status_code}: {response.text[:200]}")
        return "/healthz answered 200"

    def protected_resource() -> str:
        resource = config.default_resource
        if urlsplit(issuer).netloc != urlsplit(config.issuer).netloc:
            # --issuer names another deployment: its resource is read off its own path
            resource = issuer + config.resource_path
        url = resource_metadata_url(resource)
        document = json_of(url)
        if not same_resource(str(document.get("resource")), resource):
            raise _Failed(f"{url} names resource {document.get('resource')!r}, not {resource!r}")
        servers = document.get("authorization_servers")
        if not isinstance(servers, list) or issuer not in servers:
            raise _Failed(f"{url} names authorization servers {servers!r}, not {issuer!r}")
        return f"{url} points at {issuer}"

    def upstream() -> str:
        if not config.upstream_url:
            return "not in gateway mode (OAUTH_UPSTREAM_URL unset): nothing to check"
        try:
            answer = session.get(config.upstream_url, timeout=TIMEOUT, allow_redirects=False)
        except requests.RequestException as exc:
            raise _Failed(f"the MCP server {config.upstream_url} is unreachable: {_reason(exc)}") from None
        gateway = get(issuer + config.resource_path)
        if gateway.status_code != 401 or "resource_metadata=" not in gateway.headers.get("WWW-Authenticate", ""):
            raise _Failed(
                f"{issuer}{config.resource_path} answered {gateway.status_code} without a token, not 401 with "
                "resource_metadata (is the proxy sending it to this server?)"
            )
        return f"{config.upstream_url} answers ({answer.status_code}); {issuer}{config.resource_path} asks for a token"

    def clock() -> str:
        response = get(issuer + "/healthz")
        date = response.headers.get("Date")
        if not date:
            raise _Failed("the server sent no Date header")
        skew = email.utils.parsedate_to_datetime(date).timestamp() - time.time()
        if abs(skew) > MAX_CLOCK_SKEW:
            raise _Failed(f"the server's clock is {skew:+.0f} s off this machine's (tokens carry iat and exp)")
        return f"within {MAX_CLOCK_SKEW} s of this machine's ({skew:+.0f} s)"

    checks: list[tuple[str, Callable[[], str]]] = [
        ("metadata", metadata),
        ("https", https),
        ("health", health),
        ("protected resource", protected_resource),
        ("upstream", upstream),
        ("clock", clock),
    ]
    for name, check in checks:
        try:
            yield Result(name, True, check())
        except _Failed as exc:
            yield Result(name, False, str(exc))


class _TrustingAdapter(HTTPAdapter):
    """https with the system's CAs plus those `SSL_CERT_FILE` names, as the metadata
    document fetch trusts them (requests alone reads only REQUESTS_CA_BUNDLE, which
    replaces its bundle instead of adding to it)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = trusted_tls_context()
        super().init_poolmanager(*args, **kwargs)


def _reason(exc: Exception) -> str:
    """A requests error on one short line."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."
