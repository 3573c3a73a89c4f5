"""The requests every discovery and every MCP call make, answered in front of Flask.

A reverse proxy asks /verify once per MCP request, and clients fetch metadata and the
JWKS on every connection, so what these cost sets what the deployment costs. Flask's
request machinery (request and app contexts, routing, session, hooks) costs more than
a verified token does. This WSGI layer answers the plain successful cases itself:

- GET of a metadata document or the JWKS: bytes computed once (the JWKS again when
  the keys change), the documents the Flask views serve;
- GET /verify whose token passes (`verify.judge`);
- POST /introspect that RFC 7662 answers with 200 (the server's `introspect`, given a
  request read from the WSGI environ);
- the gateway's GET, POST or DELETE whose token passes (`Gateway`).

It judges each of those requests with the function the Flask view uses; a judgement
that is not a plain success (a refused token, a bad `scope`, a non-200 introspection, a
store that cannot be read) goes on to Flask with the request, and the view answers it
without judging again (app/endpoints/once.py). Everything else (HEAD, OPTIONS, other
paths) Flask judges and answers. Paths come from the URL map, read once at start-up.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from authlib.consts import default_json_headers

from .endpoints import verify
from .endpoints.gateway import Gateway
from .endpoints.metadata import Document
from .endpoints.once import ahead
from .errors import SECURITY_HEADERS
from .oauth2.requests import EnvironFormRequest

if TYPE_CHECKING:
    from . import Services
    from .routes import Routes

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]

#: an introspection request is a token and a hint; anything longer goes to Flask
MAX_FORM = 16 * 1024
FORM = "application/x-www-form-urlencoded"


class HotPaths:
    def __init__(
        self,
        app: WSGIApp,
        services: Services,
        routes: Routes,
        documents: dict[str, Document],
        gateway: Gateway | None = None,
    ):
        self.app = app
        self.services = services
        self.gateway = gateway
        # Paths from the URL map, read once (app/routes.py): no routing per request.
        self.documents = documents
        self.jwks_path = routes.path("metadata.jwks")
        self.verify_path = routes.path("verify.verify")
        self.introspect_path = routes.path("token.introspect")
        self.introspect_url = services.config.issuer_origin + self.introspect_path
        self.server = services.server

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.gateway is not None and self.gateway.matches(environ.get("PATH_INFO", "")):
            forwarded = self.gateway(environ)
            if forwarded is None:
                return self.app(environ, start_response)
            try:
                start_response(forwarded[0], forwarded[1])
            except BaseException:
                close = getattr(forwarded[2], "close", None)  # a stream gives back its slot
                if close is not None:
                    close()
                raise
            return forwarded[2]
        if environ.get("REQUEST_METHOD") == "GET":
            path = environ.get("PATH_INFO", "")
            document = self.documents.get(path)
            if document is None and path == self.jwks_path:
                document = self._jwks()
            if document is not None:
                body, headers = document
                start_response("200 OK", list(headers.items()))
                return [body]
            if path == self.verify_path:
                answer = ahead(environ, verify.judge, self.services, environ)
                if answer is not None and answer[0] == verify.PASSED:
                    start_response(answer[0], answer[1])
                    return answer[2]
        elif environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO") == self.introspect_path:
            answered = self._introspect(environ)
            if answered is not None:
                json_headers = [
                    *default_json_headers,
                    *SECURITY_HEADERS.items(),
                    ("Content-Length", str(len(answered))),
                ]
                start_response("200 OK", json_headers)
                return [answered]
        return self.app(environ, start_response)

    def _jwks(self) -> Document | None:
        try:
            return self.services.jwks.get()
        except Exception:  # noqa: BLE001 - e.g. an unreadable store: Flask answers 503
            return None

    def _introspect(self, environ: dict[str, Any]) -> bytes | None:
        """The body of a 200 introspection answer; None leaves the request to Flask
        (which then reads the same body: it is put back as it was read), with the
        judgement when one was made."""
        length = environ.get("CONTENT_LENGTH") or ""
        content_type = (environ.get("CONTENT_TYPE") or "").partition(";")[0].strip().lower()
        if content_type != FORM or not length.isdigit() or int(length) > MAX_FORM:
            return None
        raw = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(raw)
        try:
            params = parse_qs(raw.decode("ascii"), keep_blank_values=True, errors="strict")
        except ValueError:  # not ASCII, a bad escape: Flask judges what it reads
            return None
        request = EnvironFormRequest(self.introspect_url, environ, params)
        answer = ahead(environ, self.server.introspect, request)
        return json.dumps(answer[1]).encode() if answer is not None and answer[0] == 200 else None
