"""Google and Azure (Entra ID) login against a real local OpenID Connect provider
(tests/oidc_idp.py: discovery, JWKS, authorize and token endpoints, RS256 ID tokens)."""

from __future__ import annotations


def test_nothing_below_the_endpoints_imports_the_factory():
    """Providers, the CLI, the admin service and the rest get what they need handed to
    them (or, at the endpoints' level, from app/services.py): only the endpoints, the
    fast front and the entry points may import the `app` package itself."""
    import ast

    from support.harness import ROOT

    allowed = {"__init__.py", "hotpath.py", "serve.py", "console.py"}
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        relative = path.relative_to(ROOT / "app")
        if relative.parts[0] == "endpoints" or str(relative) in allowed:
            continue
        depth = len(relative.parts)  # the level of a relative import that names `app`
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {alias.name for alias in node.names} - {"__version__"}
                # a module of the package is no part of the factory
                names = {
                    n
                    for n in names
                    if n == "services" or not ((ROOT / "app" / f"{n}.py").exists() or (ROOT / "app" / n).is_dir())
                }
                to_app = (node.level == depth and not node.module) or (node.level == 0 and node.module == "app")
                if to_app and names:
                    offenders.append(f"{relative}: {sorted(names)}")
    assert offenders == []
