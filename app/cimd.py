"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
MCP authorization 2025-11-25): a client with no registration here uses an `https` URL
as its `client_id`, and the document at that URL is its metadata.

Fetching a URL that anyone can name is a server-side request forgery risk, so the
fetch is fenced: https only, the host's addresses checked and the connection made to
the checked address itself (so DNS cannot answer differently between check and
connect), loopback, private, link-local, multicast and reserved addresses refused
unless OAUTH_CIMD_ALLOW_PRIVATE=1, no redirects, 5 s in all, 64 KiB at most, and at
most a few fetches at once. A document must name itself as `client_id`, and its
client is public (PKCE, no secret). Documents are cached as their `Cache-Control`
allows, in a bounded map. The documents of well-known clients ship with the server
and are used when a live fetch fails.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import os
import re
import socket
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .config import Config
from .policy import MetadataTooLarge, accepted_redirect_uris, check_bounds
from .storage import expiring_map

if TYPE_CHECKING:
    from .storage.postgres import PostgresStore

log = logging.getLogger(__name__)

TIMEOUT = 5.0
MAX_BYTES = 64 * 1024
MAX_CACHED = 1000
MAX_CONCURRENT_FETCHES = 4
#: how long a document is kept when its response says nothing (seconds), and at most
DEFAULT_TTL = 300
MAX_TTL = 86400
#: a failed fetch is not tried again for this long (the shipped copy serves meanwhile)
FAILURE_TTL = 30


def _published(client_id: str, name: str, client_uri: str, redirect_uris: list[str]) -> dict[str, Any]:
    return {
        "client_id": client_id,
        "client_name": name,
        "client_uri": client_uri,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }


#: Documents of well-known clients, as their vendors publish them (the redirect URIs
#: their documentation gives). Used when a live fetch fails: some vendors' CDNs refuse
#: data-centre addresses, and some servers have no outbound access at all.
SHIPPED: dict[str, dict[str, Any]] = {
    document["client_id"]: document
    for document in (
        _published(
            "https://chatgpt.com/oauth/client.json",
            "ChatGPT",
            "https://chatgpt.com",
            ["https://chatgpt.com/connector_platform_oauth_redirect"],
        ),
        _published(
            "https://claude.ai/oauth/mcp-oauth-client-metadata",
            "Claude",
            "https://claude.ai",
            ["https://claude.ai/api/mcp/auth_callback", "https://claude.com/api/mcp/auth_callback"],
        ),
        _published(
            "https://claude.ai/oauth/claude-code-client-metadata",
            "Claude Code",
            "https://claude.ai",
            ["http://localhost/callback", "http://127.0.0.1/callback"],
        ),
        _published(
            "https://vscode.dev/oauth/client-metadata.json",
            "Visual Studio Code",
            "https://vscode.dev/product",
            ["http://127.0.0.1:33418/", "https://vscode.dev/redirect"],
        ),
    )
}


class DocumentError(Exception):
    """The metadata document cannot be used; the message says why (shown to the person
    and logged, never containing the document)."""


def is_document_url(client_id: object) -> bool:
    """Whether a client_id is a metadata document URL: https, a host, a path beyond
    `/`, no fragment, user info or dot segments (draft §3)."""
    if not isinstance(client_id, str) or not client_id.startswith("https://") or len(client_id) > 2000:
        return False
    try:
        parts = urlsplit(client_id)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return False
    segments = parts.path.split("/")
    return (
        bool(parts.hostname)
        and parts.path not in ("", "/")
        and not parts.fragment
        and "#" not in client_id
        and parts.username is None
        and parts.password is None
        and "." not in segments
        and ".." not in segments
    )


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Whether a fetch may connect to this address (IPv4-mapped IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
    if address.is_multicast or address.is_unspecified:
        return False
    if allow_private:
        return True
    return address.is_global and not (address.is_reserved or address.is_link_local or address.is_loopback)


def _ttl(cache_control: str | None) -> int:
    """Seconds a response may be reused, per its Cache-Control (RFC 9111 §5.2.2)."""
    directives = {d.strip().split("=", 1)[0].lower(): d.strip() for d in (cache_control or "").split(",") if d.strip()}
    if "no-store" in directives or "no-cache" in directives:
        return 0
    match = re.match(r"(?i)^max-age=\"?(\d+)", directives.get("max-age", ""))
    return min(int(match.group(1)), MAX_TTL) if match else DEFAULT_TTL


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to one already-checked IP address, with the URL's host name for SNI and
    certificate verification."""

    def __init__(self, host: str, port: int, address: str, context: ssl.SSLContext, timeout: float):
        super().__init__(host, port, context=context, timeout=timeout)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


class DocumentFetcher:
    def __init__(self, config: Config, shared: PostgresStore | None = None):
        self.config = config
        #: URL -> (validated metadata, or None with why the fetch failed); in the
        #: shared database when instances share one, so one fetch serves them all
        self._cache: Any = expiring_map(shared, "document", MAX_CACHED, encode=list, decode=tuple)
        self._slots = threading.BoundedSemaphore(MAX_CONCURRENT_FETCHES)
        self._context = ssl.create_default_context()
        extra = os.environ.get("SSL_CERT_FILE")
        if extra and os.path.isfile(extra):
            self._context.load_verify_locations(cafile=extra)  # trusted besides the system's

    def metadata(self, url: str) -> dict[str, Any]:
        """The validated client metadata of a document URL (cached), or raise
        DocumentError. A shipped document stands in when the live fetch fails."""
        cached: tuple[dict[str, Any] | None, str] | None = self._cache.get(url)
        if cached is not None:
            if cached[0] is None:
                return self._shipped_or_raise(url, cached[1])
            return cached[0]
        try:
            document, ttl = self._fetch(url)
            metadata = self.validate(url, document)
        except DocumentError as exc:
            self._remember(url, None, FAILURE_TTL, str(exc))
            return self._shipped_or_raise(url, str(exc))
        self._remember(url, metadata, ttl, "")
        return metadata

    def _shipped_or_raise(self, url: str, reason: str) -> dict[str, Any]:
        if url in SHIPPED:
            return self.validate(url, SHIPPED[url])
        raise DocumentError(reason)

    def _remember(self, url: str, metadata: dict[str, Any] | None, ttl: int, reason: str) -> None:
        if ttl <= 0:
            return
        self._cache.put(url, (metadata, reason), time.time() + ttl)

    def _fetch(self, url: str) -> tuple[Any, int]:
        if not self._slots.acquire(blocking=False):
            raise DocumentError("too many metadata documents are being fetched; try again")
        try:
            return self._fetch_fenced(url)
        finally:
            self._slots.release()

    def _fetch_fenced(self, url: str) -> tuple[Any, int]:
        deadline = time.monotonic() + TIMEOUT
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise DocumentError(f"the host {host} cannot be resolved") from None
        addresses = []
        for info in infos:
            resolved = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if not address_allowed(resolved, self.config.cimd_allow_private):
                raise DocumentError(f"the host {host} resolves to an address this server does not fetch from")
            addresses.append(str(resolved))
        last_error = "no address"
        for address in addresses:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            conn = _PinnedHTTPSConnection(host, port, address, self._context, timeout=remaining)
            try:
                conn.connect()
                peer = ipaddress.ip_address(conn.sock.getpeername()[0])
                if not address_allowed(peer, self.config.cimd_allow_private):  # checked where it connected
                    raise DocumentError(f"the host {host} connected to an address this server does not fetch from")
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                conn.request("GET", target, headers={"Accept": "application/json", "User-Agent": "mcp-oauth"})
                response = conn.getresponse()
                if response.status != 200:
                    raise DocumentError(f"the document answered HTTP {response.status} (redirects are not followed)")
                body = self._read(response, deadline)
                ttl = _ttl(response.getheader("Cache-Control"))
            except TimeoutError:
                raise DocumentError("the document did not arrive within 5 seconds") from None
            except ssl.SSLError:
                raise DocumentError(f"the TLS certificate of {host} is not trusted") from None
            except (OSError, http.client.HTTPException) as exc:
                last_error = type(exc).__name__
                continue
            finally:
                conn.close()
            try:
                return json.loads(body), ttl
            except ValueError:
                raise DocumentError("the document is not JSON") from None
        raise DocumentError(f"the document could not be fetched ({last_error})")

    @staticmethod
    def _read(response: http.client.HTTPResponse, deadline: float) -> bytes:
        body = b""
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError
            chunk = response.read1(16384)
            if not chunk:
                return body
            body += chunk
            if len(body) > MAX_BYTES:
                raise DocumentError("the document is larger than 64 KiB")

    def validate(self, url: str, document: Any) -> dict[str, Any]:
        """The client metadata a document gives, checked (draft §4.1)."""
        if not isinstance(document, dict):
            raise DocumentError("the document is not a JSON object")
        if document.get("client_id") != url:
            raise DocumentError("the document names another client_id than its own URL")
        if "client_secret" in document or "client_secret_expires_at" in document:
            raise DocumentError("a metadata document must not carry a client secret")
        try:
            check_bounds(document)
        except MetadataTooLarge as exc:
            raise DocumentError(f"the document is too large: {exc}") from None
        uris = document.get("redirect_uris")
        if not isinstance(uris, list) or not uris:
            raise DocumentError("the document lists no redirect_uris")
        kept, _ = accepted_redirect_uris(uris, self.config)
        if not kept:
            raise DocumentError("the document lists no redirect URI this server accepts")
        name = document.get("client_name")
        metadata: dict[str, Any] = {
            "client_name": name if isinstance(name, str) and name.strip() else urlsplit(url).hostname,
            "redirect_uris": kept,
            # Public, whatever the document asks for: no secret was ever shared.
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }
        for field in ("client_uri", "logo_uri", "scope"):
            if isinstance(document.get(field), str):
                metadata[field] = document[field]
        return metadata
