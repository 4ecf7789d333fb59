"""Which way an administration command goes: to a server over HTTP, or to the local store.

The rule: remote when an endpoint **and** a token are given (`--endpoint`/`--token`, before or after the
subcommand, or STRONGROOM_ENDPOINT / STRONGROOM_API_TOKEN); local otherwise. An explicit `--endpoint` without
any token is refused rather than silently run locally. `either` runs a command's remote or local step by it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from strongroom.cli.output import fail
from strongroom.cli.store import store

if TYPE_CHECKING:
    from strongroom.bootstrap import Services
    from strongroom.client import Client

T = TypeVar("T")

EndpointOpt = Annotated[
    str | None,
    typer.Option(
        "--endpoint",
        metavar="URL",
        help="Administer this server over HTTP (with an admin token) instead of the local store "
        "(or STRONGROOM_ENDPOINT with STRONGROOM_API_TOKEN).",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option("--token", metavar="TOKEN", help="API token (prefer STRONGROOM_API_TOKEN: options show up in `ps`)."),
]


def remember(ctx: typer.Context, endpoint: str | None, token: str | None) -> None:
    """Keep the group's connection options for its subcommands."""
    ctx.ensure_object(dict).update(endpoint=endpoint, token=token)


def target(ctx: typer.Context, endpoint: str | None, token: str | None) -> tuple[str, str] | None:
    """(endpoint, token) when the command is to go to a server, None for the local store."""
    options = ctx.find_object(dict) or {}
    explicit = endpoint or options.get("endpoint")
    url = explicit or os.environ.get("STRONGROOM_ENDPOINT")
    secret = token or options.get("token") or os.environ.get("STRONGROOM_API_TOKEN")
    if url and secret:
        return url, secret
    if explicit:
        fail("--endpoint needs an API token: set STRONGROOM_API_TOKEN")
    return None


@contextmanager
def connect(remote: tuple[str, str]) -> Iterator[Client]:
    """A client for the server (the SDK checks the token at once)."""
    from strongroom.client import Client

    with Client(endpoint=remote[0], token=remote[1]) as client:
        yield client


def either(where: tuple[str, str] | None, *, remote: Callable[[ModuleType], T], local: Callable[[Services], T]) -> T:
    """`remote(sdk)` against the server `where` names (see `target`), else `local(services)` on the local store.

    Returns the value of whichever ran. `sdk` is the `strongroom.client` module, imported here and only on the
    remote way (its classes load on first use), so a command module never imports the SDK itself.
    """
    if where is not None:
        import strongroom.client as sdk

        with connect(where):
            return remote(sdk)
    with store() as services:
        return local(services)
