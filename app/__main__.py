"""`python -m app …`: the `mcp-oauth` command without installing the package."""

from .console import main

main()
