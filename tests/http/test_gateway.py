"""Gateway mode end to end, with parts no one here wrote: an MCP server built with the
official Python SDK as the upstream, and the SDK's client with its OAuth support
(`OAuthClientProvider`) discovering, registering, logging in and calling a tool, then
doing it again after our server restarts, without registering again."""

from __future__ import annotations

import hashlib
import io
import json


def test_a_body_of_unknown_length_is_chunked_again(upstream, tmp_path):
    """Waitress reads a chunked body whole and gives its length; a WSGI server that
    streams it leaves the length unknown, and the gateway chunks it on (RFC 9112 §7.1)."""
    from app.config import Config
    from app.endpoints.gateway import Upstream

    config = Config.from_env({"OAUTH_DATA_DIR": str(tmp_path)}, env_file=None)
    body = b"first block " + b"x" * 100_000 + b" last"
    environ = {
        "REQUEST_METHOD": "POST",
        "QUERY_STRING": "",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/octet-stream",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
        "wsgi.input_terminated": True,
    }
    status, headers, answer = Upstream(upstream, 5).forward(environ, "/echo", {"X-Auth-Subject": "alice"}, config)
    assert status.startswith("200 "), (status, answer)
    echoed = json.loads(b"".join(answer))
    assert echoed["length"] == len(body) and echoed["sha256"] == hashlib.sha256(body).hexdigest()
    assert echoed["headers"]["transfer-encoding"] == "chunked" and "content-length" not in echoed["headers"]
