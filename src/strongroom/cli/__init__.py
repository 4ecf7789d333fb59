"""`strongroom` command line: serve, administer users, tokens and keys, and manage credentials."""

from strongroom.cli.main import app, main

__all__ = ["app", "main"]
