"""The `mcp-oauth` command of the installed package (pyproject.toml's console script).

`mcp-oauth serve` serves (app/serve.py, what `python wsgi.py` does); every other
command is one of the `flask oauth …` group (app/cli.py), run in the app's context as
`flask` runs it, from any directory and with no FLASK_APP: the configuration comes from
the environment and a `.env` in the current directory, as for the server.
"""

from __future__ import annotations

import sys

import click
from flask.cli import ScriptInfo

from . import __version__


class Console(click.Group):
    """`serve`, then the `oauth` group's commands, looked up when asked for: a command
    added to that group anywhere is also one of `mcp-oauth`'s."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_oauth().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _oauth().get_command(ctx, cmd_name)


def _oauth() -> click.Group:
    from .cli import oauth

    return oauth


def _cli_app() -> object:
    from . import create_cli_app

    return create_cli_app()


@click.group(cls=Console, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="mcp-oauth", message="%(prog)s %(version)s")
@click.pass_context
def console(ctx: click.Context) -> None:
    """mcp-oauth: an OAuth 2.1 authorization server for MCP servers.

    Settings come from the environment (and a .env file in the current directory):
    OAUTH_ISSUER, OAUTH_DATA_DIR and the rest docs/configuration.md lists."""
    # The `oauth` commands are Flask AppGroup commands: they build the app through
    # the ScriptInfo they find here, as `flask oauth …` builds it from FLASK_APP.
    ctx.obj = ScriptInfo(create_app=_cli_app, set_debug_flag=False)  # type: ignore[arg-type]


@console.command("serve", short_help="Serve on HOST:PORT (as `python wsgi.py`).")
def serve() -> None:
    """Serve on HOST:PORT with waitress (what `python wsgi.py` and `make run` do)."""
    from .serve import main as serve_main

    sys.exit(serve_main())


def main() -> None:
    console(prog_name="mcp-oauth")


if __name__ == "__main__":
    main()
