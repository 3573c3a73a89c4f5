"""An /etc/hosts line for a child process of the tests: with this folder on PYTHONPATH
and `MCP_OAUTH_TEST_HOSTS=name=address[,…]`, the process resolves each name to its
address (tests/support/tls.py's `resolving`, for a process the test starts, such as
`flask oauth check` against the TLS proxy's `mcp-oauth.test`)."""

import os
import socket

_HOSTS = dict(
    item.split("=", 1) for item in os.environ.get("MCP_OAUTH_TEST_HOSTS", "").split(",") if "=" in item
)

if _HOSTS:
    _original = socket.getaddrinfo

    def _getaddrinfo(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        text = name.decode() if isinstance(name, bytes) else name
        return _original(_HOSTS.get(text, name), *args, **kwargs)

    socket.getaddrinfo = _getaddrinfo
