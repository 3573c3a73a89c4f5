"""The gateway benchmark's upstream: an MCP server built with the official SDK
(FastMCP), stateless and answering JSON, so that one `tools/call` POST is one
request: `python scripts/bench_upstream.py PORT`."""

from __future__ import annotations

import sys

from mcp.server.fastmcp import FastMCP

server = FastMCP(
    "bench-upstream",
    host="127.0.0.1",
    port=int(sys.argv[1]),
    log_level="WARNING",
    stateless_http=True,
    json_response=True,
)


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


server.run(transport="streamable-http")
