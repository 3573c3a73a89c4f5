"""OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document,
MCP authorization 2025-11-25): a client with no registration here uses an `https` URL
as its `client_id`, and the document at that URL is its metadata.

Fetching a URL that anyone can name is a server-side request forgery risk, so the
fetch is fenced: https only, the host's addresses checked and the connection made to
the checked address itself (so DNS cannot answer differently between check and
connect), loopback, private, link-local, multicast and reserved addresses refused
unless OAUTH_CIMD_ALLOW_PRIVATE=1, no redirects, 5 s in all, 64 KiB at most, JSON
nested at most 32 deep, and at most 2 fetches to one host and 8 in all at once. A
document must name itself as `client_id`, and its client is public (PKCE, no
secret) unless it offers `private_key_jwt` and publishes its keys (`key_binding`):
then it signs at /token (app/oauth2/rfc7523.py), with keys from its `jwks` or
`jwks_uri` (fetched behind the same fence, `DocumentFetcher.key_set`). Documents
are cached as their `Cache-Control` allows, in a bounded map, and
so are failures, briefly; a fetch refused for being busy is not a failure of the
document and is not remembered. The documents of well-known clients ship with the
server and are used when a live fetch fails.
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from .config import Config
from .policy import URI_FORBIDDEN, InvalidJSON, UnacceptableMetadata, accepted_redirect_uris, check_bounds, parse_json
from .storage.base import SharedState
from .storage.local import LocalState

log = logging.getLogger(__name__)

TIMEOUT = 5.0
MAX_BYTES = 64 * 1024
MAX_CACHED = 1000
#: the short-lived state's kind for the documents fetched
KIND = "document"
#: fetches at once: to one host (so that one slow host cannot take every slot), and in
#: all (each holds a request thread for up to TIMEOUT; waitress has 16 by default)
MAX_FETCHES_PER_HOST = 2
MAX_FETCHES = 8
#: how long a document is kept when its response says nothing (seconds), and at most
DEFAULT_TTL = 300
MAX_TTL = 86400
#: a failed fetch is not tried again for this long (the shipped copy serves meanwhile)
FAILURE_TTL = 30
#: the short-lived state's kind for other JSON fetched behind the same fence: a
#: client's `jwks_uri`, a trusted IdP's discovery document and JWKS
FETCHED = "fetched"
#: a key set is fetched again for an unknown `kid` (a rotated key) at most this often
KEYS_REFETCH_AFTER = 60
#: the smallest RSA key a client or IdP may sign with (as for our own keys, app/records.py)
MIN_RSA_BITS = 2048


def public_key_set(data: Any) -> KeySet:
    """A JWK Set (RFC 7517 §5) of public signing keys only: RSA of at least 2048 bits,
    EC, OKP. A private or symmetric key in a published set is refused: whoever
    published it has given it away. Raises DocumentError."""
    if not isinstance(data, dict) or not isinstance(data.get("keys"), list) or not data["keys"]:
        raise DocumentError("the key set is not a JWK Set with keys")
    try:
        keys = KeySet.import_key_set({"keys": [k for k in data["keys"] if isinstance(k, dict)]})
    except (JoseError, ValueError, TypeError):
        raise DocumentError("the key set holds a key that cannot be read") from None
    for key in keys:
        if key.key_type not in ("RSA", "EC", "OKP") or key.is_private:
            raise DocumentError("the key set must hold public RSA, EC or OKP keys only")
        if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
            raise DocumentError(f"an RSA key of the key set is shorter than {MIN_RSA_BITS} bits")
    return keys


def key_binding(document: dict[str, Any]) -> dict[str, Any]:
    """The client metadata that binds a document's client to its own keys (RFC 7523
    §2.2, `private_key_jwt`), or nothing. A document that offers `private_key_jwt`
    (as its `token_endpoint_auth_method` or among `token_endpoint_auth_methods_supported`,
    ChatGPT's `["none","private_key_jwt"]`) and publishes keys (`jwks`, or an https
    `jwks_uri`) makes a confidential client: it must then sign at /token, even when it
    also lists `none`, so that a stolen code or refresh token is useless without its
    key. Without keys it stays public, as before."""
    methods = document.get("token_endpoint_auth_methods_supported")
    offered = document.get("token_endpoint_auth_method") == "private_key_jwt" or (
        isinstance(methods, list) and "private_key_jwt" in methods
    )
    if not offered:
        return {}
    if "jwks" in document:
        public_key_set(document["jwks"])
        return {"token_endpoint_auth_method": "private_key_jwt", "jwks": document["jwks"]}
    uri = document.get("jwks_uri")
    if is_document_url(uri):
        return {"token_endpoint_auth_method": "private_key_jwt", "jwks_uri": uri}
    return {}


def _published(client_id: str, name: str, client_uri: str | None, redirect_uris: list[str]) -> dict[str, Any]:
    document = {
        "client_id": client_id,
        "client_name": name,
        "client_uri": client_uri,
        "redirect_uris": redirect_uris,
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    }
    return {field: value for field, value in document.items() if value is not None}


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
        # Codex (CLI, IDE extension, ChatGPT desktop app): its stable document, with
        # the shared `/callback` path on port-less 127.0.0.1 (Codex inserts its
        # listener's port, RFC 8252 §7.3), as OpenAI's Codex MCP documentation states
        # (learn.chatgpt.com/docs/extend/mcp, "OAuth client registration"). Codex
        # uses it only where the server sends `iss` (RFC 9207), as this one does; its
        # per-server documents (`/oauth/codex/<callback_id>/client.json`) cannot ship.
        # Its client_uri is not documented, so none is given.
        _published("https://chatgpt.com/oauth/codex/client.json", "Codex", None, ["http://127.0.0.1/callback"]),
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


class DocumentBusy(DocumentError):
    """The fetch was refused because too many are under way: nothing is known of the
    document, so this is never remembered as its failure."""


class FetchSlots:
    """At most `per_host` fetches to one host and `total` in all at once. A fetch
    beyond either is refused at once rather than queued: a request thread must not
    wait behind a stranger's slow host."""

    def __init__(self, total: int = MAX_FETCHES, per_host: int = MAX_FETCHES_PER_HOST):
        self.total = total
        self.per_host = per_host
        self._lock = threading.Lock()
        self._in_all = 0
        self._by_host: dict[str, int] = {}

    @contextmanager
    def taken(self, host: str) -> Iterator[None]:
        """Hold one slot for `host` (case and a trailing dot aside) while the block
        runs, or raise DocumentBusy."""
        host = host.lower().rstrip(".")
        with self._lock:
            if self._in_all >= self.total or self._by_host.get(host, 0) >= self.per_host:
                raise DocumentBusy("too many metadata documents are being fetched; try again in a few seconds")
            self._in_all += 1
            self._by_host[host] = self._by_host.get(host, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_all -= 1
                left = self._by_host.pop(host) - 1
                if left:
                    self._by_host[host] = left


def is_document_url(client_id: object) -> bool:
    """Whether a client_id is a metadata document URL: https, a host, a path beyond
    `/`, no fragment, user info or dot segments (draft §3); ASCII with nothing RFC 3986
    forbids (a host in Unicode is written in its IDNA form, `xn--…`). Anything else
    is no document, and so an unknown client."""
    if not isinstance(client_id, str) or not client_id.startswith("https://") or len(client_id) > 2000:
        return False
    if not client_id.isascii() or any(c in URI_FORBIDDEN for c in client_id):
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


#: RFC 6052 NAT64: the IPv4 address in its last 32 bits is the one reached.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: IPv6 ranges that are never the public internet, though `is_global` says otherwise
#: in some Python versions: site-local (RFC 3879, deprecated but still routed inside
#: sites), local-use NAT64 (RFC 8215) and documentation (RFC 9637).
NEVER_GLOBAL_V6 = tuple(ipaddress.ip_network(n) for n in ("fec0::/10", "64:ff9b:1::/48", "3fff::/20"))


def address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow_private: bool) -> bool:
    """Whether a fetch may connect to this address. The rule is `is_global` (the IANA
    special-purpose registries), and on top of it:

    - an IPv6 address that carries an IPv4 one is judged by the IPv4 address:
      IPv4-mapped `::ffff:a.b.c.d`, 6to4 `2002:AABB:CCDD::/48` and NAT64
      `64:ff9b::a.b.c.d` (so `::ffff:10.0.0.1` and `64:ff9b::a9fe:a9fe` are private);
    - refused whatever `is_global` says: multicast, unspecified, reserved (this
      includes IPv4-compatible `::a.b.c.d` and all of `::/8`), link-local, loopback,
      site-local `fec0::/10`, local-use NAT64 `64:ff9b:1::/48`, documentation
      `3fff::/20`; Teredo `2001::/32`, ULA `fc00::/7`, CGNAT `100.64.0.0/10` and the
      RFC 1918 ranges are not global in the first place.

    OAUTH_CIMD_ALLOW_PRIVATE=1 admits all but multicast and unspecified."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.sixtofour is not None:
            address = address.sixtofour
        elif address in NAT64:
            address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.is_multicast or address.is_unspecified:
        return False
    if allow_private:
        return True
    if isinstance(address, ipaddress.IPv6Address) and any(address in network for network in NEVER_GLOBAL_V6):
        return False
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


def trusted_tls_context() -> ssl.SSLContext:
    """TLS as the server trusts it when it fetches (documents, key sets, and the
    deployment `check`): the system's CAs, plus those the standard `SSL_CERT_FILE` names."""
    context = ssl.create_default_context()
    extra = os.environ.get("SSL_CERT_FILE")
    if extra and os.path.isfile(extra):
        context.load_verify_locations(cafile=extra)  # trusted besides the system's
    return context


class DocumentFetcher:
    def __init__(self, config: Config, state: SharedState | None = None):
        self.config = config
        #: URL -> [validated metadata, or None with why the fetch failed], in the
        #: store's short-lived state (a new in-process one when none is given): in
        #: the shared database when instances share one, so one fetch serves them all
        self.state: SharedState = state if state is not None else LocalState()
        self.state.bound(KIND, MAX_CACHED)
        self.state.bound(FETCHED, MAX_CACHED)
        self._slots = FetchSlots()
        self._context = trusted_tls_context()

    def metadata(self, url: str) -> dict[str, Any]:
        """The validated client metadata of a document URL (cached), or raise
        DocumentError. A shipped document stands in when the live fetch fails."""
        cached = self.state.get(KIND, url)
        if cached is not None:
            if cached[0] is None:
                return self._shipped_or_raise(url, cached[1])
            return cached[0]
        try:
            document, ttl = self._fetch(url)
            metadata = self.validate(url, document)
        except DocumentBusy as exc:  # says nothing of the document: not remembered
            return self._shipped_or_raise(url, str(exc))
        except DocumentError as exc:
            self._remember(url, None, FAILURE_TTL, str(exc))
            return self._shipped_or_raise(url, str(exc))
        self._remember(url, metadata, ttl, "")
        return metadata

    def json_at(self, url: str) -> Any:
        """The JSON at an https URL, fetched behind the same fence as documents and
        cached as its Cache-Control allows (failures briefly), or raise DocumentError.
        For key sets and discovery documents: nothing here is a client's metadata."""
        return self._fetched(url, refetch=False)[0]

    def key_set(self, url: str, kid: object = None) -> KeySet:
        """The public keys at a `jwks_uri` (`public_key_set`). When `kid` is not among
        them, the set is fetched again (a rotated key), at most once a minute."""
        data, fetched_at = self._fetched(url, refetch=False)
        keys = public_key_set(data)
        unknown = isinstance(kid, str) and kid not in {key.kid for key in keys}
        if unknown and time.time() - fetched_at > KEYS_REFETCH_AFTER:
            keys = public_key_set(self._fetched(url, refetch=True)[0])
        return keys

    def _fetched(self, url: str, refetch: bool) -> tuple[Any, float]:
        if not is_document_url(url):
            raise DocumentError("the URL is not an https URL this server fetches from")
        cached = None if refetch else self.state.get(FETCHED, url)
        if cached is not None:
            if cached[0] is None:
                raise DocumentError(cached[1])
            return cached[0], cached[2]
        now = time.time()
        try:
            data, ttl = self._fetch(url)
        except DocumentBusy:
            raise
        except DocumentError as exc:
            self.state.put(FETCHED, url, [None, str(exc), now], now + FAILURE_TTL)
            raise
        if ttl > 0:
            self.state.put(FETCHED, url, [data, "", now], now + ttl)
        return data, now

    def _shipped_or_raise(self, url: str, reason: str) -> dict[str, Any]:
        if url in SHIPPED:
            return self.validate(url, SHIPPED[url])
        raise DocumentError(reason)

    def _remember(self, url: str, metadata: dict[str, Any] | None, ttl: int, reason: str) -> None:
        if ttl <= 0:
            return
        self.state.put(KIND, url, [metadata, reason], time.time() + ttl)

    def _fetch(self, url: str) -> tuple[Any, int]:
        with self._slots.taken(urlsplit(url).hostname or ""):
            return self._fetch_fenced(url)

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
                return parse_json(body), ttl
            except InvalidJSON as exc:
                raise DocumentError(f"the document {exc}") from None
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
        except UnacceptableMetadata as exc:
            raise DocumentError(f"the document is refused: {exc}") from None
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
            # Public unless it publishes keys to sign with (`key_binding`): no secret
            # was ever shared.
            "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }
        for field in ("client_uri", "logo_uri", "scope"):
            if isinstance(document.get(field), str):
                metadata[field] = document[field]
        # Grant types it lists that we do not offer (Claude's jwt-bearer) are ignored.
        metadata.update(key_binding(document))
        return metadata
