"""`strongroom oauth-providers …`: the OAuth providers that refresh oauth credentials, on a server with an admin
token or in the local store (cli/remote.py). The client secret is prompted for without echo, or read from stdin."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from strongroom.cli.output import ask, fail, out, print_rows
from strongroom.cli.remote import EndpointOpt, TokenOpt, either, remember, target

app = typer.Typer(
    help="Manage OAuth providers (token endpoint, client id and secret) that refresh oauth credentials: on a server "
    "with an admin token when an endpoint and a token are given (--endpoint/--token or "
    "STRONGROOM_ENDPOINT/STRONGROOM_API_TOKEN), else in the local store.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand (which may also take them)."""
    remember(ctx, endpoint, token)


def _client_secret() -> str:
    """Prompted twice without echo on a terminal; else the first line of stdin."""
    if sys.stdin.isatty():
        return str(ask("Client secret", hide_input=True, confirmation_prompt=True))
    secret = sys.stdin.readline().rstrip("\r\n")
    if not secret:
        fail("give the client secret on stdin (one line), or run the command on a terminal to be prompted")
    return secret


@app.command("create")
def providers_create(
    ctx: typer.Context,
    name: str,
    token_url: Annotated[str, typer.Option("--token-url", help="The provider's token endpoint (https://…/token).")],
    client_id: Annotated[str, typer.Option("--client-id", help="The client Strongroom refreshes tokens as.")],
    auth_method: Annotated[
        str,
        typer.Option("--auth-method", help="How the client authenticates: client_secret_basic or client_secret_post."),
    ] = "client_secret_basic",
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Add an OAuth provider; the client secret is prompted for (or read from stdin), never an option."""
    where = target(ctx, endpoint, token)
    secret = _client_secret()
    body = {
        "name": name,
        "tokenUrl": token_url,
        "clientId": client_id,
        "clientSecret": secret,
        "tokenEndpointAuthMethod": auth_method,
    }
    made = either(
        where,
        remote=lambda sdk: sdk.OAuthProvider.create(name, token_url, client_id, secret, auth_method).as_dict(),
        local=lambda services: services.oauth.create_provider(None, body),
    )
    if as_json:
        print(json.dumps(made))
    else:
        out.print(f"Created OAuth provider {made['name']} ({made['id']})")


@app.command("list")
def providers_list(
    ctx: typer.Context, as_json: JsonOpt = False, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """List OAuth providers (never a client secret)."""
    rows: list[dict[str, Any]] = either(
        target(ctx, endpoint, token),
        remote=lambda sdk: [p.as_dict() for p in sdk.OAuthProvider.list()],
        local=lambda services: services.oauth.list_providers(None),
    )
    print_rows(
        rows,
        as_json,
        ("id", "name", "token url", "client id", "auth method"),
        lambda r: (r["id"], r["name"], r["tokenUrl"], r["clientId"], r["tokenEndpointAuthMethod"]),
    )


@app.command("delete")
def providers_delete(
    ctx: typer.Context,
    provider_id: Annotated[str, typer.Argument(help="The provider's id.")],
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Delete an OAuth provider (refused while oauth credentials name it)."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.OAuthProvider.delete(provider_id),
        local=lambda services: services.oauth.delete_provider(None, provider_id),
    )
    out.print(f"Deleted OAuth provider {provider_id}")
