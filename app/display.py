"""How the pages a person reads show what a client says about itself.

A client chooses its name, its redirect URIs and (a metadata document's) its URL, and
the consent and login pages show them to a person deciding whether to trust it. So:

- Bidi control characters (Unicode's explicit embeddings, overrides and isolates, and
  the implicit marks; UAX #9 §2) are shown escaped, as `[U+202E]`: one right-to-left
  override in a name would otherwise reorder the heading around it ("Allow … to
  access your MCP server?"), and the escape shows the person that the name was odd.
  The name is also isolated in the template (`<bdi>`), so that even ordinary
  right-to-left letters in it cannot move the words around it.
- A name is vouched for only by a metadata document: its host published it (CIMD),
  so the page says which host. A self-registered client's name (RFC 7591) is its
  own claim, which anyone can make ("Claude"); the page says it was not checked.
- A host name breaks only after a dot, never inside a label ("chatg / pt.com" on a
  phone reads as another host): each label is kept whole and a `<wbr>` follows
  each dot.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import Flask
from markupsafe import Markup, escape

from .pending import PendingAuthorization
from .services import services

#: LRE, RLE, PDF, LRO, RLO; LRI, RLI, FSI, PDI; LRM, RLM; ALM (UAX #9, table 4)
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_ESCAPED = str.maketrans({char: f"[U+{ord(char):04X}]" for char in BIDI_CONTROLS})


def neutralise(text: str) -> str:
    """`text` with every bidi control character shown escaped (`[U+202E]`)."""
    return text.translate(_ESCAPED)


@dataclass(frozen=True)
class ClientLabel:
    """What a page calls a client: its name (neutralised), and the host of the
    metadata document that vouches for it (None: the name is the client's own claim)."""

    name: str
    client_id: str
    vouched_by: str | None


def label_of(client: Any) -> ClientLabel:
    """The label of a `models.Client`."""
    document = client.record.get("document") is True
    return ClientLabel(
        name=neutralise(client.client_name),
        client_id=neutralise(client.client_id),
        vouched_by=neutralise(urlsplit(client.client_id).hostname or "") if document else None,
    )


def host_html(host: str) -> Markup:
    """A host name (or host:port) that breaks only after a dot: each label in a span
    the stylesheet keeps whole (`.hostname > span`: no break even at a hyphen), a
    `<wbr>` after each dot."""
    host = neutralise(host)
    if _is_ip_literal(host):  # an address, not labels: kept whole
        return Markup('<span class="hostname"><span>{}</span></span>').format(host)
    labels = host.split(".")
    parts = [Markup("<span>{}.</span><wbr>").format(label) for label in labels[:-1]]
    parts.append(Markup("<span>{}</span>").format(labels[-1]))
    return Markup('<span class="hostname">{}</span>').format(Markup("").join(parts))


def _is_ip_literal(host: str) -> bool:
    """A bracketed IPv6 address or an IPv4 one, with a port or not (RFC 3986 §3.2.2)."""
    if host.startswith("["):
        return True
    try:
        ipaddress.IPv4Address(host.rsplit(":", 1)[0])
    except ValueError:
        return False
    return True


_AFTER_URL_DELIMITER = re.compile(r"(?<=[/?&=#])")


def url_html(uri: str) -> Markup:
    """A URL that breaks after `/`, `?`, `&`, `=` or `#` (and where a path segment is
    longer than a line, anywhere in it: `.url` in the stylesheet), and whose host
    breaks only after a dot, as `host_html`'s."""
    uri = neutralise(uri)
    scheme, separator, rest = uri.partition("://")
    if not separator:
        return Markup('<span class="url">{}</span>').format(uri)
    netloc, _, path = rest.partition("/")
    path = "/" + path if rest[len(netloc) : len(netloc) + 1] == "/" else ""
    broken = Markup("<wbr>").join(escape(piece) for piece in _AFTER_URL_DELIMITER.split(path))
    return Markup('<span class="url">{}://<wbr>{}{}</span>').format(scheme, host_html(netloc), broken)


def asking(pending: PendingAuthorization | None) -> ClientLabel | None:
    """The label of the client a pending authorization is for (the login page names
    it), or None: no pending authorization, or its client is gone."""
    if pending is None:
        return None
    client = services().clients.resolve(pending.client_id)
    return label_of(client) if client is not None else None


def server_host() -> str:
    """This server as a person knows it: the issuer's host (and port)."""
    return services().config.issuer_netloc


def init_app(app: Flask) -> None:
    """The templates' filters (`neutralise`, `hostname`, `url`) and the login page's
    functions (`asking`, `server_host`)."""
    app.jinja_env.filters["neutralise"] = neutralise
    app.jinja_env.filters["hostname"] = host_html
    app.jinja_env.filters["url"] = url_html
    app.jinja_env.globals["asking"] = asking
    app.jinja_env.globals["server_host"] = server_host
