"""One judgement per request. The fast front (app/hotpath.py) judges the requests it
may answer with the function the Flask view uses (`verify.judge`, the server's
`introspect`, `Gateway.judge`) and answers the plain success itself. Anything else (a
refusal, an error) it hands on to Flask together with its judgement, and the view
answers that judgement without judging again: a forged token is verified once.

Why the view answers a handed-on refusal rather than the front: Flask's rules for every
request then still apply, each stated once there (a NUL or non-ASCII parameter refused
first, a store error's 503, the error style, the endpoint named in the request log),
and a refusal is not the hot path. The answer is built by the same function either way.

The judgement rides in the WSGI environ under a key no client can set (PEP 3333 puts
every request header under `HTTP_`), tagged with the function that made it, so a view
takes only a judgement of its own kind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

KEY = "mcp_oauth.judged"


class _Raised:
    """A judgement that raised (e.g. the store could not be read): the view raises it
    again, inside Flask's error handling."""

    __slots__ = ("error",)

    def __init__(self, error: Exception):
        self.error = error


def ahead(environ: dict[str, Any], judge: Callable[..., T], *args: Any) -> T | None:
    """`judge(*args)`, made in front of Flask and kept in `environ` for the view; None
    when it raised (the view raises it)."""
    try:
        outcome = judge(*args)
    except Exception as exc:  # noqa: BLE001 - raised again in the view, where Flask handles it
        environ[KEY] = (judge, _Raised(exc))
        return None
    environ[KEY] = (judge, outcome)
    return outcome


def handed(environ: dict[str, Any], judge: Callable[..., T]) -> T | None:
    """The judgement the fast front made of this request with `judge`, or None when it
    made none (the view judges the request itself)."""
    kept = environ.pop(KEY, None)
    if kept is None or kept[0] != judge:
        return None
    outcome = kept[1]
    if isinstance(outcome, _Raised):
        raise outcome.error
    return outcome
