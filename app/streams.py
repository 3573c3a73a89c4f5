"""How many gateway requests may be open at once: OAUTH_MAX_STREAMS in all and
OAUTH_MAX_STREAMS_PER_GRANT for one grant (the access token's `grant_id` claim).

A forwarded gateway request holds a waitress worker thread from the moment it is
forwarded until its answer's body ends, and an MCP server's GET event stream may stay
open and silent for hours. wsgi.py gives waitress OAUTH_THREADS + OAUTH_MAX_STREAMS
threads in gateway mode; with at most OAUTH_MAX_STREAMS requests forwarded at once,
OAUTH_THREADS always remain for /token, /authorize, /healthz, /verify and the rest.
The cap per grant keeps one token from taking every stream.

A lock and two counters: taken and given back once per forwarded request, on the hot
path (app/hotpath.py), with no system call.
"""

from __future__ import annotations

import threading

#: seconds a refused client is told to wait: a stream whose client has gone gives its
#: slot back within a few seconds (app/endpoints/gateway/upstream.py checks every second)
RETRY_AFTER = 5


class StreamSlots:
    def __init__(self, total: int, per_grant: int):
        self.total = total
        self.per_grant = per_grant
        self.open = 0
        self._by_grant: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, grant: str) -> str | None:
        """Take a slot for one of `grant`'s requests; None when taken, else why not
        (an `error_description`)."""
        with self._lock:
            held = self._by_grant.get(grant, 0)
            if held >= self.per_grant:
                return "This grant has too many open streams; close one first."
            if self.open >= self.total:
                return "The server has too many open streams; try again shortly."
            self._by_grant[grant] = held + 1
            self.open += 1
        return None

    def give_back(self, grant: str) -> None:
        with self._lock:
            self.open -= 1
            held = self._by_grant[grant] - 1
            if held:
                self._by_grant[grant] = held
            else:
                del self._by_grant[grant]  # grants come and go: keep only those open
