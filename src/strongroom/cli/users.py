"""`strongroom users …`: users, on a server over HTTP with an admin token, or in the local store (see cli/remote.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from strongroom.cli.output import out, print_rows
from strongroom.cli.remote import EndpointOpt, TokenOpt, either, remember, target

app = typer.Typer(
    help="Manage users: on a server with an admin token when an endpoint and a token are given "
    "(--endpoint/--token or STRONGROOM_ENDPOINT/STRONGROOM_API_TOKEN), else in the local store.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand (which may also take them)."""
    remember(ctx, endpoint, token)


def _local(user: Any) -> dict[str, Any]:
    from strongroom.representation import iso

    return {
        "id": user.id,
        "username": user.username,
        "createdAt": iso(user.created_at),
        "isAdmin": bool(user.is_admin),
        "disabled": user.disabled_at is not None,
    }


def _show(user: dict[str, Any], as_json: bool, verb: str) -> None:
    if as_json:
        print(json.dumps(user))
    else:
        out.print(f"{verb} user {user['username']} ({user['id']})")


@app.command("create")
def users_create(
    ctx: typer.Context,
    username: str,
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator.")] = False,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Create a user (an administrator with --admin)."""
    user = either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.User.create(username, is_admin=admin).as_dict(),
        local=lambda services: _local(services.accounts.create_user(username, admin=admin)),
    )
    _show(user, as_json, "Created administrator" if admin else "Created")


@app.command("list")
def users_list(
    ctx: typer.Context, as_json: JsonOpt = False, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """List users."""
    rows = either(
        target(ctx, endpoint, token),
        remote=lambda sdk: [u.as_dict() for u in sdk.User.list()],
        local=lambda services: [_local(u) for u in services.accounts.list_users()],
    )
    print_rows(
        rows,
        as_json,
        ("id", "username", "created", "admin", "disabled"),
        lambda r: (
            r["id"],
            r["username"],
            r["createdAt"],
            "yes" if r["isAdmin"] else "",
            "yes" if r["disabled"] else "",
        ),
    )


def _set_disabled(ctx: typer.Context, username: str, disabled: bool, endpoint: str | None, token: str | None) -> None:
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: (sdk.User.disable if disabled else sdk.User.enable)(username),
        local=lambda services: services.accounts.set_disabled(username, disabled),
    )
    out.print(f"{'Disabled' if disabled else 'Enabled'} user {username}")


@app.command("disable")
def users_disable(ctx: typer.Context, username: str, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Disable a user: every token of theirs fails from the next request."""
    _set_disabled(ctx, username, True, endpoint, token)


@app.command("enable")
def users_enable(ctx: typer.Context, username: str, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Enable a disabled user again (their unrevoked, unexpired tokens work again)."""
    _set_disabled(ctx, username, False, endpoint, token)


@app.command("delete")
def users_delete(ctx: typer.Context, username: str, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Delete a user and their tokens; refused while they own credentials."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.User.delete(username),
        local=lambda services: services.accounts.delete_user(username),
    )
    out.print(f"Deleted user {username}")
