"""A small MCP server built with the official SDK (FastMCP, mcp 1.x), used as the
gateway's upstream in the end-to-end tests: `python mcp_upstream.py PORT`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

from mcp.server.fastmcp import Context, FastMCP
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse

port = int(sys.argv[1])
server = FastMCP("gateway-test-upstream", host="127.0.0.1", port=port, log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@server.tool()
def whoami(ctx: Context) -> str:
    """The identity headers the gateway passed, and whether a token leaked through."""
    headers = ctx.request_context.request.headers
    return json.dumps(
        {
            "subject": headers.get("x-auth-subject"),
            "client_id": headers.get("x-auth-client-id"),
            "scope": headers.get("x-auth-scope"),
            "authorization": headers.get("authorization"),
        }
    )


@server.custom_route("/mcp/ticks", methods=["GET"])
async def ticks(request: Request) -> StreamingResponse:
    """An SSE stream: `count` events, `interval` seconds apart."""
    count = int(request.query_params.get("count", "5"))
    interval = float(request.query_params.get("interval", "0.3"))

    async def events():
        for i in range(count):
            yield f"id: {i}\ndata: tick {i}\n\n".encode()
            await asyncio.sleep(interval)

    return StreamingResponse(events(), media_type="text/event-stream")


@server.custom_route("/mcp/slow", methods=["GET"])
async def slow(request: Request) -> JSONResponse:
    await asyncio.sleep(float(request.query_params.get("seconds", "3")))
    return JSONResponse({"slow": True})


@server.custom_route("/mcp/echo", methods=["POST"])
async def echo(request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse(
        {
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
            "query": str(request.query_params),
            "raw_query": request.scope["query_string"].decode("latin-1"),  # as it arrived
            "headers": {k: v for k, v in request.headers.items()},
        }
    )


@server.custom_route("/mcp/path/{rest:path}", methods=["GET", "POST"])
async def path(request: Request) -> JSONResponse:
    """The request line's path exactly as it arrived (not decoded)."""
    return JSONResponse({"raw_path": request.scope["raw_path"].decode("latin-1")})


@server.custom_route("/admin", methods=["GET", "POST"])
async def admin(request: Request) -> JSONResponse:
    """Outside the MCP path: the gateway must never reach it."""
    return JSONResponse({"admin": True})


if __name__ == "__main__":
    server.run(transport="streamable-http")
