"""What a request says about where it came from, believed only from trusted proxies.

Behind a TLS-terminating proxy the socket peer is the proxy, so the client's address
is in `X-Forwarded-For` and the URL it asked for in `X-Forwarded-Proto/-Host/-Uri`
(ForwardAuth). Anyone can send those headers, so they count only when the peer is in
OAUTH_TRUSTED_PROXIES. They are used for two things: the address the throttles key
on, and the resource `/verify` checks a token for. Every URL the server builds comes
from OAUTH_ISSUER, never from these headers or `Host`.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from flask import request

from .config import Config, IPNetwork


class IssuerOrigin:
    """WSGI middleware: every request is seen as arriving at the issuer's scheme and
    host, so nothing Flask, Werkzeug or Authlib builds (request.url, redirects,
    url_for) can come from what a client wrote in `Host`. Behind a TLS proxy the
    socket says `http` and the Host is whatever the proxy passed; a hostile Host
    (`evil.example`, an invalid IDNA label) changes nothing."""

    def __init__(self, app: Callable[..., Iterable[bytes]], issuer: str):
        parts = urlsplit(issuer)
        self.app = app
        self.scheme = parts.scheme
        self.host = parts.netloc
        self.port = str(parts.port or (443 if parts.scheme == "https" else 80))

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ["HTTP_HOST"] = self.host
        environ["SERVER_NAME"] = self.host.rsplit(":", 1)[0] if not self.host.endswith("]") else self.host
        environ["SERVER_PORT"] = self.port
        environ["wsgi.url_scheme"] = self.scheme
        return self.app(environ, start_response)


#: longer than any address with a port ("[v6]:port"): not parsed, and never cached
MAX_ADDRESS_TEXT = 64


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    return _parse_address(text) if len(text) <= MAX_ADDRESS_TEXT else None


# Parsing an address and testing it against networks costs tens of microseconds in
# the ipaddress module, and every request asks (the request log, the throttles): the
# answers for the few addresses a server sees at a time are kept.
@functools.lru_cache(maxsize=4096)
def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # [v6]:port
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # v4:port
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


@functools.lru_cache(maxsize=4096)
def _trusted(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, proxies: tuple[IPNetwork, ...]) -> bool:
    return address is not None and any(address in network for network in proxies)


WSGIEnviron = dict[str, Any]


def address_in(text: str, networks: tuple[IPNetwork, ...]) -> bool:
    """Whether the address in `text` is in one of `networks` (False for no address)."""
    return _trusted(_address(text), networks)


def peer_is_trusted(config: Config, environ: WSGIEnviron) -> bool:
    return _trusted(_address(environ.get("REMOTE_ADDR") or ""), config.trusted_proxies)


#: where `client_address` keeps its answer in the environ (asked for by the request log,
#: the gateway's X-Forwarded-For and the limits)
CLIENT_ADDRESS = "mcp_oauth.client_address"


def client_address(config: Config, environ: WSGIEnviron | None = None) -> str:
    """The client's IP address: the socket peer, or, when that is a trusted proxy, the
    right-most address in X-Forwarded-For that is not itself a trusted proxy (the
    left-most entries are whatever the client chose to send). Of the current Flask
    request unless an `environ` is given."""
    environ = request.environ if environ is None else environ
    known: str | None = environ.get(CLIENT_ADDRESS)
    if known is None:
        known = environ[CLIENT_ADDRESS] = _client_address(config, environ)
    return known


#: RFC 6177 / RFC 7421: one IPv6 subscriber gets at least a /64, and any address in it
#: is theirs to use, so a limit per IPv6 address is no limit at all.
IPV6_SUBSCRIBER_PREFIX = 64


def network_key(config: Config, environ: WSGIEnviron | None = None) -> str:
    """What the per-address limits count: the client's IPv4 address, or the /64 its
    IPv6 address belongs to (as `2001:db8:1:2::/64`). Of the current Flask request
    unless an `environ` is given."""
    return network_of(client_address(config, environ))


@functools.lru_cache(maxsize=4096)
def network_of(text: str) -> str:
    """An address's key for the per-address limits (see `network_key`); text that is
    no address is its own key."""
    address = _address(text)
    if isinstance(address, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((address, IPV6_SUBSCRIBER_PREFIX), strict=False))
    return text if address is None else str(address)


def _client_address(config: Config, environ: WSGIEnviron) -> str:
    peer = environ.get("REMOTE_ADDR") or ""
    if not _trusted(_address(peer), config.trusted_proxies):
        return peer
    # Repeated header lines arrive joined by commas (waitress, RFC 9110 §5.3).
    hops = (environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break  # garbage: stop believing the chain here
        if not _trusted(address, config.trusted_proxies):
            return str(address)
    return peer


@dataclass(frozen=True)
class ForwardedURL:
    """The URL a ForwardAuth proxy was asked for."""

    scheme: str
    host: str
    raw_path: str


def forwarded_url(config: Config, environ: WSGIEnviron) -> ForwardedURL | None:
    """The original request's URL from X-Forwarded-*, when a trusted proxy sent them."""
    host = environ.get("HTTP_X_FORWARDED_HOST")
    if not host or not peer_is_trusted(config, environ):
        return None
    scheme = environ.get("HTTP_X_FORWARDED_PROTO") or config.issuer.split(":", 1)[0]
    uri = environ.get("HTTP_X_FORWARDED_URI") or "/"
    return ForwardedURL(scheme.split(",")[0].strip().lower(), host.split(",")[0].strip().lower(), uri)
