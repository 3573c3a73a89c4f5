"""Requests Authlib's endpoints are given besides Flask's own: a stored authorization
request, a form read straight off a WSGI environ, and JSON that never raises."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Request
from authlib.oauth2.rfc6749.requests import BasicOAuth2Payload, JsonPayload
from werkzeug.datastructures import EnvironHeaders

from ..policy import InvalidJSON, parse_json


class EnvironFormRequest(OAuth2Request):
    """A form POST read straight from a WSGI environ (app/hotpath.py). Authlib's
    endpoints need only its method, URL, headers and form, none of Flask's context."""

    def __init__(self, uri: str, environ: dict[str, Any], params: dict[str, list[str]]):
        super().__init__(environ["REQUEST_METHOD"], uri, headers=EnvironHeaders(environ))
        self.payload = StoredPayload(params)

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data

    @property
    def args(self) -> dict[str, str]:
        return {}


class StoredPayload(BasicOAuth2Payload):
    """A stored request: parameter name -> list of values (as sent, repeats kept)."""

    def __init__(self, params: dict[str, list[str]]):
        self._data = {k: v[0] for k, v in params.items() if v}
        self._datalist = {k: list(v) for k, v in params.items()}


class SafeJsonPayload(JsonPayload):
    """Authlib's Flask JSON payload lets a malformed body raise an HTML 400 (and a
    deeply nested one a RecursionError: a 500); this one yields an empty payload,
    which the endpoints answer in RFC 7591 error format, and says why in `problem`.
    The body is parsed once (`policy.parse_json`, depth-limited), however often
    Authlib asks."""

    def __init__(self, request: Any):
        self._request = request
        self._data: dict | None = None
        #: why the body gave no metadata (not JSON, nested too deep), or ""
        self.problem = ""

    @property
    def data(self) -> dict:
        if self._data is None:
            self._data = {}
            if self._request.is_json:
                try:
                    body = parse_json(self._request.get_data(cache=True))
                except InvalidJSON as exc:
                    self.problem = f"The body {exc}."
                else:
                    self._data = body if isinstance(body, dict) else {}
        return self._data
