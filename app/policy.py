"""Rules stated once: which redirect URIs a client may register, how a request path is
normalised, and which configured resource (RFC 8707) a URL names.

/verify and the gateway decide which resource a token must be meant for from a URL
that a client wrote. Two spellings of one path must not name two resources, and a path
that climbs out of a resource (`/mcp/%2e%2e/admin`) must not count as inside it, so
both compare paths only after RFC 3986 §6.2.2 normalisation. A path holding an
encoded slash, backslash or NUL is refused outright (`check_path_escapes`): whether
`%2F` separates segments is up to whoever decodes it, and upstreams differ.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any
from urllib.parse import urlsplit

from .config import Config, is_loopback_host

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: RFC 3986 §3.3 pchar without pct-encoded: what may stand unencoded in a segment.
PCHAR = UNRESERVED | frozenset("!$&'()*+,;=:@")
#: What may stand unencoded in a query (RFC 3986 §3.4).
QUERY_CHARS = PCHAR | frozenset("/?%")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
#: `%2F`, `%5C` and `%00` in any case: a slash, a backslash or NUL, percent-encoded.
_SEPARATOR_ESCAPE = re.compile(r"%(?:2f|5c|00)", re.IGNORECASE)


class InvalidPath(ValueError):
    """A request path that is not a valid RFC 3986 path (a bad percent-escape), or one
    whose meaning depends on who decodes it (`check_path_escapes`)."""


def check_path_escapes(path: str) -> None:
    """Refuse (InvalidPath) a path with an encoded slash, backslash or NUL. RFC 3986
    §2.2 makes `%2F` data, not a separator, but upstreams differ in whether they decode
    it first, so `/mcp/..%2Fadmin` may mean `/admin` behind us (Traefik refuses them by
    default for the same reason); a backslash is a separator to some, NUL ends a string
    to others. The gateway and /verify both ask here."""
    if "%" in path and _SEPARATOR_ESCAPE.search(path):
        raise InvalidPath("an encoded slash, backslash or NUL in the path")


def _normalize_segment(segment: str) -> str:
    """Decode percent-escapes of unreserved characters, upper-case the others, and
    percent-encode every character that may not stand in a segment as it is."""
    if "%" in segment and len(_PERCENT.findall(segment)) != segment.count("%"):
        raise InvalidPath("a '%' that does not start a percent-escape")
    out = []
    i = 0
    while i < len(segment):
        char = segment[i]
        if char == "%":
            byte = int(segment[i + 1 : i + 3], 16)
            out.append(chr(byte) if chr(byte) in UNRESERVED else f"%{byte:02X}")
            i += 3
            continue
        out.append(char if char in PCHAR else "".join(f"%{b:02X}" for b in char.encode("utf-8")))
        i += 1
    return "".join(out)


def normalize_path(raw: str) -> str:
    """RFC 3986 §6.2.2 normalisation of a request path (query and fragment dropped):
    percent-encoding normalised, dot segments removed (§5.2.4), and duplicate slashes
    folded. The result is ASCII and safe to forward as it is. InvalidPath for a bad
    percent-escape and for the escapes `check_path_escapes` refuses."""
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if path.lower().startswith(("http://", "https://")):
        path = urlsplit(path).path  # absolute-form request target
    check_path_escapes(path)
    segments: list[str] = []
    raw_segments = path.split("/")
    for segment in raw_segments:
        segment = _normalize_segment(segment)
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    trailing = len(raw_segments) > 1 and raw_segments[-1] in ("", ".", "..") and bool(segments)
    return "/" + "/".join(segments) + ("/" if trailing else "")


def encode_query(raw: str) -> str:
    """A query string safe to put in a request line: characters outside RFC 3986's
    query set percent-encoded, valid percent-escapes kept as they are."""
    return "".join(c if c in QUERY_CHARS else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in raw)


def within(path: str, prefix: str) -> bool:
    """Whether a normalised path is `prefix` or below it."""
    prefix = prefix.rstrip("/")
    return path.rstrip("/") == prefix or path.startswith(prefix + "/")


def same_resource(a: str, b: str) -> bool:
    """RFC 8707 resource URIs compared as this server spells them: a trailing slash
    does not make another resource."""
    return a.rstrip("/") == b.rstrip("/")


def _authority(scheme: str, host: str) -> str:
    host = host.lower()
    default = {"https": ":443", "http": ":80"}.get(scheme, "")
    return host[: -len(default)] if default and host.endswith(default) else host


def resource_for_url(config: Config, scheme: str, host: str, raw_path: str) -> str | None:
    """The configured resource a URL falls under (the longest match), or None."""
    path = normalize_path(raw_path)
    best: tuple[int, str] | None = None
    for resource in config.resources:
        parts = urlsplit(resource)
        if _authority(parts.scheme, parts.netloc) != _authority(parts.scheme, host):
            continue
        resource_path = normalize_path(parts.path or "/")
        if within(path, resource_path) and (best is None or len(resource_path) > best[0]):
            best = (len(resource_path), resource)
    return best[1] if best else None


# -- client authentication ---------------------------------------------------------

#: How a client may authenticate at the token endpoint (RFC 7591 §2); metadata,
#: registration, Authlib's grants and restore read this list.
#: A confidential client sends a secret either way, whichever it registered (some
#: register the RFC 7591 default, client_secret_basic, and then post it).
CONFIDENTIAL_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
AUTH_METHODS = [*CONFIDENTIAL_AUTH_METHODS, "none"]
#: RFC 7523 §2.2 client assertions, signed with a key its metadata document publishes
#: (app/oauth2/rfc7523.py): only a metadata-document client has one, never a
#: registration. Tried last: a request that carries no assertion is judged as before.
PRIVATE_KEY_JWT = "private_key_jwt"
TOKEN_AUTH_METHODS = [*AUTH_METHODS, PRIVATE_KEY_JWT]


# -- scopes ------------------------------------------------------------------------

#: Asked for by some clients (OIDC's way to ask for a refresh token); every client
#: that may refresh gets one here, so it is accepted and never granted.
IGNORED_SCOPES = frozenset({"offline_access"})


def requested_scopes(scope: str | None) -> list[str]:
    """The scope tokens of a request (RFC 6749 §3.3), ignored ones left out."""
    return [s for s in (scope or "").split() if s not in IGNORED_SCOPES]


# -- client metadata ---------------------------------------------------------------

#: What one client's metadata may hold (registered or from a metadata document):
#: without limits, 60 anonymous registrations made a 63 MB clients.json.
MAX_STRING = 2000
MAX_REDIRECT_URIS = 10
MAX_CONTACTS = 10


class UnacceptableMetadata(ValueError):
    """Client metadata this server does not take; the message says why."""


class MetadataTooLarge(UnacceptableMetadata):
    """Client metadata beyond what anyone needs."""


def check_bounds(metadata: dict[str, object]) -> None:
    """Refuse metadata larger than anyone needs, or holding a NUL character (no URI,
    name or scope has one, and PostgreSQL's jsonb cannot store it: the file store
    refuses it too, so that both stores take the same clients), before anything is
    stored."""
    for key, limit in (("redirect_uris", MAX_REDIRECT_URIS), ("contacts", MAX_CONTACTS)):
        value = metadata.get(key)
        if isinstance(value, list) and len(value) > limit:
            raise MetadataTooLarge(f"At most {limit} {key} may be registered.")
    pending: list[object] = [metadata]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if len(value) > MAX_STRING:
                raise MetadataTooLarge(f"Each value may be at most {MAX_STRING} characters long.")
            if "\x00" in value:
                raise UnacceptableMetadata("No name or value may contain a NUL character.")
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)


# -- JSON from strangers -------------------------------------------------------------

#: How deep a registration body or a metadata document may nest. Client metadata needs
#: four levels (`jwks` → `keys` → a key → `x5c`); Python's parser recurses, and about
#: 1,000 levels raise RecursionError (a 500) rather than a refusal.
MAX_JSON_DEPTH = 32


class InvalidJSON(ValueError):
    """Not JSON, or JSON nested deeper than MAX_JSON_DEPTH; the message says which, as
    a predicate ("is not JSON") for the caller to name its subject."""


def parse_json(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """The value of a JSON text a stranger sent (a registration body, a metadata
    document), or InvalidJSON: never RecursionError or a decoding error."""
    too_deep = InvalidJSON(f"nests deeper than {max_depth} levels")
    try:
        value = json.loads(text)
    except RecursionError:
        raise too_deep from None
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes
        raise InvalidJSON("is not JSON") from None
    # The parser stops only near Python's recursion limit: the depth is checked on
    # what it built, without recursion (an object or array at the top is depth 1).
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            raise too_deep
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return value


# -- redirect URIs -------------------------------------------------------------------

#: Characters RFC 3986 never allows in a URI (they would have to be percent-encoded).
URI_FORBIDDEN = set(' "<>\\^`{|}') | {chr(c) for c in range(0x20)} | {"\x7f"}
#: Schemes that run or read something where they are opened: never a redirect URI,
#: whatever OAUTH_NATIVE_SCHEMES says.
NEVER_SCHEMES = frozenset({"javascript", "data", "file", "blob", "vbscript", "about", "filesystem", "ftp", "ws", "wss"})
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*$")


def is_native_scheme(scheme: str, config: Config) -> bool:
    """RFC 8252 §7.1: a private-use scheme of a native app, either a reverse domain
    name (`com.example.app`, it contains a dot) or one listed in OAUTH_NATIVE_SCHEMES
    (`cursor`, `vscode`, ...)."""
    scheme = scheme.lower()
    if scheme in NEVER_SCHEMES or scheme in ("http", "https") or not SCHEME.match(scheme):
        return False
    return "." in scheme or scheme in config.native_schemes


def check_redirect_uri(uri: object, config: Config) -> str | None:
    """Why a redirect URI is refused, or None when it is acceptable: https; http on a
    loopback host (RFC 8252 §7.3); a native app's private-use scheme (§7.1); absolute,
    no fragment, no user info; a host in OAUTH_REDIRECT_HOSTS when that is set
    (loopback and native schemes aside)."""
    if not isinstance(uri, str) or not uri or len(uri) > 2000:
        return "each redirect URI must be a non-empty string"
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return f"{uri!r} is not a valid URI"
    if any(c in URI_FORBIDDEN for c in uri) or not uri.isascii():
        return "a redirect URI must not contain spaces, quotes, angle brackets or non-ASCII characters"
    if parts.fragment or "#" in uri:
        return f"{uri!r} must not contain a fragment"
    if parts.username is not None or parts.password is not None:
        return f"{uri!r} must not contain user information"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        if is_native_scheme(scheme, config):
            return None
        return f"{uri!r} uses a scheme this server does not accept for redirects"
    host = (parts.hostname or "").lower()
    if not host:
        return f"{uri!r} must be an absolute https URI (or http on a loopback host)"
    loopback = is_loopback_host(host)
    if scheme == "http" and not loopback:
        return f"{uri!r} uses http on a host that is not loopback; use https"
    if config.redirect_hosts and not loopback and host not in config.redirect_hosts:
        return f"the host of {uri!r} is not allowed on this server"
    return None


def accepted_redirect_uris(uris: list[object], config: Config) -> tuple[list[str], list[str]]:
    """(the URIs this server accepts, in order and without repeats; why the others
    were refused)."""
    kept: list[str] = []
    problems: list[str] = []
    for uri in uris:
        problem = check_redirect_uri(uri, config)
        if problem:
            problems.append(problem)
        elif isinstance(uri, str) and uri not in kept:
            kept.append(uri)
    return kept, problems


def redirect_destination(uri: str) -> tuple[str, bool]:
    """What to show a person as the place the code goes: (the host, or the scheme
    of a native app; whether it is a native app)."""
    parts = urlsplit(uri)
    if parts.scheme.lower() in ("http", "https"):
        return parts.netloc, False
    return f"{parts.scheme}://", True
