"""RFC 8707 resource indicators: which of our resources a request is for, and the
`invalid_target` error for one we do not serve."""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749 import OAuth2Error

from ..config import Config
from ..policy import same_resource


class InvalidTargetError(OAuth2Error):
    """RFC 8707 §2: the requested resource is not one this server issues tokens for."""

    error = "invalid_target"


def resolve_resources(requested: list[str], config: Config, allowed: list[str] | None = None) -> list[str]:
    """The configured resource URIs a request names (RFC 8707), in their configured
    spelling; the first configured one when none is named."""
    candidates = list(allowed) if allowed is not None else list(config.resources)
    if not requested:
        return candidates[:1] if allowed is None else candidates
    resolved = []
    for value in requested:
        match = next((c for c in candidates if same_resource(c, value)), None)
        if match is None:
            raise InvalidTargetError(f"The resource {value!r} is not served by this authorization server.")
        if match not in resolved:
            resolved.append(match)
    return resolved


class ResourceIndicator:
    """RFC 8707 at the authorization endpoint: resolve `resource` (absent = the first
    configured) or refuse it with `invalid_target`, before any consent is asked."""

    def __init__(self, config: Config):
        self.config = config

    def __call__(self, grant: Any) -> None:
        grant.register_hook("after_validate_authorization_request_payload", self.validate)

    def validate(self, grant: Any, redirect_uri: str) -> None:
        requested = grant.request.payload.datalist.get("resource", [])
        grant.request.resource = resolve_resources(list(requested), self.config)
