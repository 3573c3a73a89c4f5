"""Rules stated once: how a request path is normalised, and which configured resource
(RFC 8707) a URL names.

/verify and the gateway decide which resource a token must be meant for from a URL
that a client wrote. Two spellings of one path must not name two resources, and a path
that climbs out of a resource (`/mcp/%2e%2e/admin`) must not count as inside it, so
both compare paths only after RFC 3986 §6.2.2 normalisation.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

from .config import Config

UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")
#: RFC 3986 §3.3 pchar without pct-encoded: what may stand unencoded in a segment.
PCHAR = UNRESERVED | frozenset("!$&'()*+,;=:@")
#: What may stand unencoded in a query (RFC 3986 §3.4).
QUERY_CHARS = PCHAR | frozenset("/?%")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


class InvalidPath(ValueError):
    """A request path that is not a valid RFC 3986 path (a bad percent-escape)."""


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
    folded. The result is ASCII and safe to forward as it is."""
    path = raw.split("#", 1)[0].split("?", 1)[0]
    if path.lower().startswith(("http://", "https://")):
        path = urlsplit(path).path  # absolute-form request target
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
