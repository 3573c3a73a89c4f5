"""The clients of 2026: Client ID Metadata Documents (fetched for real from an https
server with a test CA), native apps' private-use redirect schemes, and client ids an
operator can type."""

from __future__ import annotations

import ipaddress

import pytest

from app.cimd import address_allowed
from app.repositories import new_client_id
from app.security import new_id


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "100.64.0.1", "0.0.0.0", "224.0.0.1",
     "fe80::1", "fc00::1", "::1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "2002:a00:1::1", "ff02::1",
     # site-local (RFC 3879), which some Pythons' is_global admits
     "fec0::1", "feff::ffff", "fec0::a9fe:a9fe",
     # an IPv4 address wrapped in IPv6: compatible, translated, NAT64 (RFC 6052), 6to4, Teredo
     "::a9fe:a9fe", "::ffff:0:a00:1", "64:ff9b::a00:1", "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1",
     "2002:a9fe:a9fe::1", "2001:0:4136:e378:8000:63bf:f5ff:fffe",
     # local-use NAT64 (RFC 8215), documentation (RFC 3849, RFC 9637), discard (RFC 6666)
     "64:ff9b:1::808:808", "2001:db8::1", "3fff::1", "100::1"],
)  # fmt: skip
def test_the_address_guard_refuses_non_public_addresses(address):
    assert not address_allowed(ipaddress.ip_address(address), allow_private=False)


def test_the_address_guard_admits_public_addresses():
    """Public ones, also when IPv6 wraps a public IPv4 address (a NAT64 network's
    DNS64 answers with 64:ff9b::/96 for an IPv4-only host)."""
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1",
                    "64:ff9b::808:808"):  # fmt: skip
        assert address_allowed(ipaddress.ip_address(address), allow_private=False), address
    assert address_allowed(ipaddress.ip_address("10.0.0.1"), allow_private=True)
    assert not address_allowed(ipaddress.ip_address("224.0.0.1"), allow_private=True)


# -- client ids an operator can type -------------------------------------------------------


def test_client_and_grant_ids_never_begin_with_a_dash():
    assert not any(new_client_id().startswith("-") for _ in range(5000))
    assert not any(new_id(18).startswith("-") for _ in range(5000))
