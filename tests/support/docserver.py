"""An https server of client metadata documents for the CIMD tests, with misbehaving
ones: `python docserver.py PORT CERT KEY LOG`. Every request's path is appended to LOG
first, so a test can show that a refused fetch never connected. `/hold/NAME/…` answers
only once a file NAME exists beside LOG (or after 6 s): a slow host a test releases.
`/file/NAME` serves docs/NAME beside LOG as a document naming itself, `/raw/PATH`
serves docs/raw/PATH as it is (a key set, an identity provider's discovery)."""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

port, cert, key, log_path = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
REDIRECT_URIS = ["https://app.example/cb", "cursor://anysphere.cursor-retrieval/oauth/callback"]


class Documents(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json", **headers: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        with open(log_path, "a") as log:
            log.write(self.path + "\n")
        own_url = f"https://{self.headers['Host']}{self.path}"
        document = {"client_id": own_url, "client_name": "Doc Client", "redirect_uris": REDIRECT_URIS}
        kind = self.path.split("/")[1]
        if kind == "good":
            self._send(200, json.dumps(document).encode(), Cache_Control="max-age=60")
        elif kind == "loopback":  # a command-line client: its callback on any loopback port
            loopback = {**document, "redirect_uris": ["http://localhost/callback", "http://127.0.0.1/callback"]}
            self._send(200, json.dumps(loopback).encode(), Cache_Control="max-age=60")
        elif kind == "file":  # /file/NAME: docs/NAME beside the log, as it is now (a test changes it)
            try:
                with open(os.path.join(os.path.dirname(log_path), "docs", os.path.basename(self.path))) as file:
                    written = json.load(file)
            except OSError:
                self._send(404, b"{}")
                return
            self._send(200, json.dumps({**written, "client_id": own_url}).encode(), Cache_Control="no-store")
        elif kind == "raw":  # /raw/PATH: docs/raw/PATH beside the log, as it is (key sets, an IdP's discovery)
            relative = self.path.split("?", 1)[0][len("/raw/") :]
            if ".." in relative.split("/"):
                self._send(404, b"{}")
                return
            try:
                with open(os.path.join(os.path.dirname(log_path), "docs", "raw", relative), "rb") as file:
                    self._send(200, file.read(), Cache_Control="max-age=60")
            except OSError:
                self._send(404, b"{}")
        elif kind == "other":
            self._send(200, json.dumps({**document, "client_id": "https://elsewhere.example/doc"}).encode())
        elif kind == "big":
            self._send(200, json.dumps({**document, "padding": ["x" * 1000] * 70}).encode())
        elif kind == "hold":
            gate = Path(log_path).parent / self.path.split("/")[2]
            deadline = time.monotonic() + 6
            while not gate.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            self._send(200, json.dumps(document).encode())
        elif kind == "slow":
            time.sleep(7)
            self._send(200, json.dumps(document).encode())
        elif kind == "deep":  # 1,100 levels: Python's parser would recurse into a RecursionError
            self._send(200, json.dumps(document)[:-1].encode() + b', "x": ' + b"[" * 1100 + b"]" * 1100 + b"}")
        elif kind == "nul":
            self._send(200, json.dumps({**document, "client_name": "Doc\x00Client"}).encode())
        elif kind == "notjson":
            self._send(200, b"<html>hello</html>", "text/html")
        elif kind == "redirect":
            self._send(302, b"", Location=own_url.replace("/redirect/", "/good/"))
        elif kind == "secret":
            self._send(200, json.dumps({**document, "client_secret": "s3cret"}).encode())
        else:
            self._send(404, b"{}")


server = ThreadingHTTPServer(("127.0.0.1", port), Documents)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
