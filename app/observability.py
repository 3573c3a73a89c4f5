"""What the server does, told to its operator: Prometheus metrics, one log line per
request, and an audit event for every security-relevant act.

- Metrics are prometheus_client's, in its default registry: one process serves one
  app, and that registry also carries the process's CPU, memory and open files.
  `GET /metrics` (app/endpoints/metrics.py) serves them to OAUTH_METRICS_ALLOW.
- `RequestLog` is the outermost WSGI layer. It times and counts every request, those
  answered in front of Flask (app/hotpath.py) too, and logs one line once the
  response has been sent (for a stream: when it ends).
- `audit(event, **fields)` logs a security-relevant act on the `mcp_oauth.audit`
  logger. Callers pass ids, names, scopes and reasons: never a secret, a token, a code
  or a password.
- `audit_to_file(path)` (a context) also appends every audit event to a file (the CLI's
  `audit.log` in the data folder), one JSON object per line.
- `configure_logging` writes every line (waitress's and Flask's too) as text or, with
  OAUTH_LOG_FORMAT=json, as one JSON object.

This module imports nothing of the app's, so every layer may report through it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import quote

from prometheus_client import Counter, Gauge, Histogram, Info

request_log = logging.getLogger("mcp_oauth.request")
audit_log = logging.getLogger("mcp_oauth.audit")
#: where the CLI appends its audit events, in the data folder
AUDIT_FILE = "audit.log"

# -- metrics -------------------------------------------------------------------------

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
WRITE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

HTTP_REQUESTS = Counter(
    "mcp_oauth_http_requests",
    "HTTP requests answered, by endpoint, method and status.",
    ["endpoint", "method", "status"],
)
HTTP_DURATION = Histogram(
    "mcp_oauth_http_request_duration_seconds",
    "Time from a request's arrival to its response's last byte, by endpoint.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
TOKENS_ISSUED = Counter("mcp_oauth_tokens_issued", "Access tokens issued at /token, by grant type.", ["grant_type"])
TOKEN_ERRORS = Counter(
    "mcp_oauth_token_errors", "/token requests refused, by grant type and OAuth error.", ["grant_type", "error"]
)
TOKENS_REVOKED = Counter("mcp_oauth_tokens_revoked", "Grants revoked at /revoke (RFC 7009).")
REPLAYS = Counter(
    "mcp_oauth_replays_detected",
    "A used authorization code or a rotated refresh token presented again; its grant is revoked.",
    ["credential"],
)
REGISTRATIONS = Counter(
    "mcp_oauth_registrations", "Client registrations (RFC 7591): accepted, or refused and why.", ["outcome"]
)
LOGINS = Counter("mcp_oauth_logins", "Logins, by provider and outcome.", ["provider", "outcome"])
CONSENTS = Counter("mcp_oauth_consents", "Consent decisions: approved, denied, or remembered.", ["decision"])
STORE_WRITE = Histogram(
    "mcp_oauth_store_write_duration_seconds",
    "Time a store write takes until it is durable, by collection.",
    ["collection"],
    buckets=WRITE_BUCKETS,
)
UPSTREAM_ERRORS = Counter(
    "mcp_oauth_gateway_upstream_errors", "Gateway requests the MCP server failed, by kind.", ["kind"]
)
UPSTREAM_TOKEN_REFRESHES = Counter(
    "mcp_oauth_upstream_token_refreshes",
    "Refreshes of people's upstream tokens for the MCP server, by outcome (refreshed, failed).",
    ["outcome"],
)
OPEN_STREAMS = Gauge("mcp_oauth_gateway_open_streams", "Gateway responses being streamed from the MCP server now.")
#: `mcp_oauth_build_info{version="…"} 1` (set by app/endpoints/metrics.py)
BUILD_INFO = Info("mcp_oauth_build", "The release serving.")
# What a dashboard shows first, counted by the store when /metrics is scraped (a
# count, not a read of every record: expired grants not yet purged are counted).
CLIENTS = Gauge("mcp_oauth_clients", "Registered clients.")
GRANTS = Gauge("mcp_oauth_grants", "Grants (refresh tokens), expired ones not yet purged included.")
USERS = Gauge("mcp_oauth_users", "Local users (the Custom provider's users.json).")

#: bounded label values: anything else is counted as "other"
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"})
GRANT_TYPES = frozenset({"authorization_code", "refresh_token", "client_credentials"})
OAUTH_ERRORS = frozenset({
    "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client", "unsupported_grant_type",
    "invalid_scope", "invalid_target", "temporarily_unavailable", "server_error",
})  # fmt: skip


def bounded(value: str | None, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def count_token_error(grant_type: str | None, error: str | None) -> None:
    TOKEN_ERRORS.labels(bounded(grant_type, GRANT_TYPES), bounded(error, OAUTH_ERRORS)).inc()


def observe_store_write(collection: str, seconds: float) -> None:
    STORE_WRITE.labels(collection).observe(seconds)


# -- the request being answered -------------------------------------------------------


@dataclass
class RequestContext:
    """What the log lines of one request share."""

    request_id: str
    endpoint: str | None = None
    status: str = "500"
    client_id: str | None = None
    subject: str | None = None
    #: the OAuth `error` of a 4xx answer (RFC 6749 §5.2, RFC 6750 §3.1), for its log line
    error: str | None = None
    #: why, in a word, where the error alone does not say (an error page's `unknown_client`)
    reason: str | None = None


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("mcp_oauth_request", default=None)


def note(
    *,
    client_id: str | None = None,
    subject: str | None = None,
    endpoint: str | None = None,
    error: str | None = None,
    reason: str | None = None,
) -> None:
    """Tell the request's log line who it was for, once that is known (and, for an
    error page, whose body is no JSON to read it from, the error and why)."""
    context = _current.get()
    if context is None:
        return
    if error is not None:
        context.error = error
    if reason is not None:
        context.reason = reason
    if client_id is not None:
        context.client_id = client_id
    if subject is not None:
        context.subject = subject
    if endpoint is not None:
        context.endpoint = endpoint


#: an X-Request-Id a trusted proxy sends (nginx's $request_id, Traefik's, Caddy's)
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}\Z")
#: what a logged path keeps as it is; anything else (a newline, say) is percent-encoded
PATH_SAFE = "/:@!$&'()*+,;=-._~%"
#: the `error` member of a JSON error body (RFC 6749 §5.2): an error code's characters
#: only (§5.2 allows %x20-21 / %x23-5B / %x5D-7E; a code of ours is `[a-z_]`), so
#: nothing an upstream sent can break the log line
ERROR_MEMBER = re.compile(rb'"error"\s*:\s*"([A-Za-z0-9_.:-]{1,64})"')
#: how much of a 4xx body is looked at for it (ours are a few hundred bytes)
ERROR_PEEK = 2048

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestLog:
    """WSGI middleware: a request id, the request counter and latency histogram, and
    one log line per request.

    `exact_endpoints` names the endpoint of each fixed path (the metadata documents,
    /verify: answered before Flask routes them); Flask names the rest (`note`)."""

    def __init__(
        self,
        app: WSGIApp,
        exact_endpoints: dict[str, str],
        trust_request_id: Callable[[dict[str, Any]], bool],
        client_address: Callable[[dict[str, Any]], str],
    ):
        self.app = app
        self.exact_endpoints = exact_endpoints
        self.trust_request_id = trust_request_id
        self.client_address = client_address
        # prometheus_client's `labels()` builds and looks up a key under a lock on
        # every call: the children are kept here instead (the label sets are bounded).
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        started = time.perf_counter()
        context = RequestContext(self._request_id(environ))
        _current.set(context)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            context.status = status[:3]
            headers.append(("X-Request-Id", context.request_id))
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, start)
        except BaseException:
            self.finish(environ, context, started)
            raise
        wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(body, list) or (isinstance(wrapper, type) and isinstance(body, wrapper)):
            # The whole answer is at hand: waitress sends it as it is.
            if context.status[0] == "4" and isinstance(body, list) and body:
                context.error = _error_code(body[0]) or context.error
            self.finish(environ, context, started)
            return body
        if context.status[0] == "4":
            # Only a refusal pays for this: its first chunk is looked at for its error.
            return _Finishing(_ErrorPeek(body, context), lambda: self.finish(environ, context, started))
        return _Finishing(body, lambda: self.finish(environ, context, started))

    def _request_id(self, environ: dict[str, Any]) -> str:
        given = environ.get("HTTP_X_REQUEST_ID")
        if given and REQUEST_ID.match(given) and self.trust_request_id(environ):
            return given
        return os.urandom(8).hex()

    def finish(self, environ: dict[str, Any], context: RequestContext, started: float) -> None:
        seconds = time.perf_counter() - started
        path = environ.get("PATH_INFO", "")
        endpoint = context.endpoint or self.exact_endpoints.get(path) or "unmatched"
        method = bounded(environ.get("REQUEST_METHOD"), METHODS)
        key = (endpoint, method, context.status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (HTTP_REQUESTS.labels(*key), HTTP_DURATION.labels(endpoint))
        children[0].inc()
        children[1].observe(seconds)
        if request_log.isEnabledFor(logging.INFO):
            if not (path.isascii() and path.isprintable()):
                path = quote(path, safe=PATH_SAFE)
            fields: dict[str, Any] = {
                "address": self.client_address(environ),
                "method": method,
                "path": path,
                "status": int(context.status),
                "duration_ms": round(seconds * 1000, 2),
            }
            if context.error:
                fields["error"] = context.error
            if context.reason:
                fields["reason"] = context.reason
            request_log.info(
                "%s %s %s %s %.1fms%s",
                fields["address"],
                method,
                path,
                context.status,
                seconds * 1000,
                _text_context(context),
                extra={"event": "request", "fields": fields, "context": context},
            )


def _error_code(chunk: bytes) -> str | None:
    """The `error` of a JSON error body's first chunk, if it has one."""
    found = ERROR_MEMBER.search(chunk, 0, ERROR_PEEK)
    return found.group(1).decode() if found else None


class _ErrorPeek:
    """A 4xx response body, passed on as it is, whose first chunk tells the request's
    log line the OAuth error (Flask's answers, Authlib's, the gateway's)."""

    __slots__ = ("body", "context")

    def __init__(self, body: Iterable[bytes], context: RequestContext):
        self.body = body
        self.context = context

    def __iter__(self) -> Iterator[bytes]:
        chunks = iter(self.body)
        for chunk in chunks:
            if chunk:
                self.context.error = _error_code(chunk) or self.context.error
                yield chunk
                break
            yield chunk
        yield from chunks

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()


class _Finishing:
    """A response body that reports when the server has sent it (PEP 3333 `close`)."""

    __slots__ = ("body", "on_close")

    def __init__(self, body: Iterable[bytes], on_close: Callable[[], None]):
        self.body = body
        self.on_close = on_close

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.body)

    def close(self) -> None:
        try:
            close = getattr(self.body, "close", None)
            if close is not None:
                close()
        finally:
            self.on_close()


def _text_context(context: RequestContext) -> str:
    text = f" error={context.error}" if context.error else ""
    if context.reason:
        text += f" reason={context.reason}"
    text += f" request_id={context.request_id}"
    if context.client_id:
        text += f" client_id={_text_value(context.client_id)}"
    if context.subject:
        text += f" subject={_text_value(context.subject)}"
    return text


def _text_value(value: object) -> str:
    text = str(value)
    return text if text and text.isprintable() and " " not in text and '"' not in text else json.dumps(text)


# -- audit ---------------------------------------------------------------------------


def audit(event: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log a security-relevant act. `fields` must never hold a secret."""
    fields = {k: v for k, v in fields.items() if v is not None}
    context = _current.get()
    text = " ".join(f"{k}={_text_value(v)}" for k, v in fields.items())
    if context is not None:
        text += f" request_id={context.request_id}"
    audit_log.log(level, "%s %s", event, text, extra={"event": event, "fields": fields, "context": context})


class AuditFile(logging.Handler):
    """Audit events appended to a file (`audit.log` in the data folder), one JSON
    object per line, created with mode 0600.

    Each event opens the file with O_APPEND and writes its line in one `write`, so
    several processes (the CLI beside the running server) may append to one file
    without losing or tearing each other's lines. Events are rare (operator
    commands), so an open per event costs nothing that matters and leaves no file
    descriptor behind in a short-lived command."""

    def __init__(self, path: str):
        super().__init__(logging.INFO)
        self.path = path
        self.setFormatter(JSONFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        line = (self.format(record) + "\n").encode("utf-8")
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        try:
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:  # a store in a database: the folder may not exist yet
                os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
                fd = os.open(self.path, flags, 0o600)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as exc:
            # One line, not logging's traceback: the command itself has succeeded.
            print(f"Warning: cannot append to {self.path}: {exc.strerror or exc}", file=sys.stderr)


@contextlib.contextmanager
def audit_to_file(path: str) -> Iterator[AuditFile]:
    """Within the block, every audit event also goes to `path` (see AuditFile)."""
    handler = AuditFile(path)
    level = audit_log.level
    audit_log.addHandler(handler)
    if not audit_log.isEnabledFor(logging.INFO):
        audit_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        audit_log.removeHandler(handler)
        audit_log.setLevel(level)


def audit_quietly(event: str, **fields: Any) -> None:
    """An audit event for the audit file only, not the console: a cron job's
    success is silent (cron mails whatever a job prints)."""
    propagate = audit_log.propagate
    audit_log.propagate = False
    try:
        audit(event, **fields)
    finally:
        audit_log.propagate = propagate


# -- log format ----------------------------------------------------------------------

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: keys every JSON line has; a record's own fields never overwrite them
BASE_KEYS = ("time", "level", "event", "logger")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, event, logger, the request's id, client
    and subject where known, then the event's own fields (or `message`)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "event": getattr(record, "event", "log"),
            "logger": record.name,
        }
        context: RequestContext | None = getattr(record, "context", None) or _current.get()
        if context is not None:
            entry["request_id"] = context.request_id
            if context.client_id:
                entry["client_id"] = context.client_id
            if context.subject:
                entry["subject"] = context.subject
        fields = getattr(record, "fields", None)
        if fields:
            entry.update((k, v) for k, v in fields.items() if k not in BASE_KEYS)
        else:
            entry["message"] = record.getMessage()
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(log_format: str, stream: IO[str] | None = None) -> None:
    """Every logger (ours, waitress's, Flask's) to one handler, at INFO."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    # Neither format names the caller, thread or process: skip collecting them on
    # every record (the logging HOWTO's "Optimization"; findCaller walks the stack).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
