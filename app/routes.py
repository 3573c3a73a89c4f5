"""Every route's path is stated once, where its view is declared (a blueprint's rule, or
an `init_app` that builds the rule from the configuration), and what else applies to the
route is declared beside it:

- `cross_origin` (a view): browser-based MCP clients call it directly, so any origin
  may (app/cors.py);
- `for_people` (a blueprint): a person sees its answers, so an error is the error page,
  not RFC 6749 §5.2 JSON (app/errors.py);
- `authenticates_clients` (a blueprint): its endpoints authenticate the client (RFC 6749
  §2.3), where a failed authentication is a 401 (app/oauth2/server.py).

Everything else that needs a path reads Flask's URL map, once, when every route is
registered (`Routes`): the metadata's endpoint URLs, CORS, the error style, the 401
paths and what the fast front (app/hotpath.py) answers. Nothing here runs per request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask
from flask.sansio.blueprints import Blueprint

View = TypeVar("View", bound=Callable[..., Any])


def cross_origin(view: View) -> View:
    """Declare that any origin may call this view (it reads no cookie)."""
    view.cross_origin = True  # type: ignore[attr-defined]
    return view


B = TypeVar("B", bound=Blueprint)


def for_people(blueprint: B) -> B:
    """Declare that a person sees this blueprint's answers: its errors are pages."""
    blueprint.for_people = True  # type: ignore[attr-defined]
    return blueprint


def authenticates_clients(blueprint: B) -> B:
    """Declare that this blueprint's endpoints authenticate the client."""
    blueprint.authenticates_clients = True  # type: ignore[attr-defined]
    return blueprint


def path_of(app: Flask, endpoint: str) -> str:
    """The path Flask routes to `endpoint`, the issuer's path included (the shortest of
    its rules: for the gateway's pair, the resource path without what follows)."""
    return min((rule.rule for rule in app.url_map.iter_rules(endpoint)), key=len)


class Routes:
    """What the declarations say, read from the URL map once every route is registered."""

    def __init__(self, app: Flask):
        self.app = app
        rules = list(app.url_map.iter_rules())
        #: endpoints any origin may call, and their paths (a 405 is routed to no
        #: endpoint, but its path is still the endpoint's)
        self.cross_origin = frozenset(
            e for e, view in app.view_functions.items() if getattr(view, "cross_origin", False)
        )
        self.cross_origin_paths = frozenset(rule.rule for rule in rules if rule.endpoint in self.cross_origin)
        #: endpoints whose errors are pages, and their paths
        self.pages = _of_blueprints(app, "for_people")
        self.page_paths = frozenset(rule.rule for rule in rules if rule.endpoint in self.pages)
        #: where a failed client authentication is a 401
        authenticating = _of_blueprints(app, "authenticates_clients")
        self.client_authenticated_paths = frozenset(rule.rule for rule in rules if rule.endpoint in authenticating)

    def path(self, endpoint: str) -> str:
        return path_of(self.app, endpoint)


def _of_blueprints(app: Flask, declared: str) -> frozenset[str]:
    """The endpoints of the blueprints declared so."""
    names = {name for name, blueprint in app.blueprints.items() if getattr(blueprint, declared, False)}
    return frozenset(endpoint for endpoint in app.view_functions if endpoint.rpartition(".")[0] in names)
