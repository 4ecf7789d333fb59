"""`strongroom groups …`: groups of users, on a server with an admin token or in the local store (cli/remote.py)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from strongroom.cli.output import out, print_rows
from strongroom.cli.remote import EndpointOpt, TokenOpt, either, remember, target

app = typer.Typer(
    help="Manage groups: on a server with an admin token when an endpoint and a token are given "
    "(--endpoint/--token or STRONGROOM_ENDPOINT/STRONGROOM_API_TOKEN), else in the local store. Sharing a "
    "credential with a group gives every member the role; removing a member ends their access at once.",
    no_args_is_help=True,
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
GroupArg = Annotated[str, typer.Argument(help="The group's name or id.")]


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand (which may also take them)."""
    remember(ctx, endpoint, token)


def _shown(group: Any) -> dict[str, Any]:
    """A group from the server (`strongroom.client.Group`) as the command prints it."""
    return {"id": group.group_id, "name": group.name, "members": group.members}


def _created(group: Any) -> dict[str, Any]:
    """A group just made in the local store (no members yet) as the command prints it."""
    return {"id": group.id, "name": group.name, "members": []}


@app.command("create")
def groups_create(
    ctx: typer.Context, name: str, as_json: JsonOpt = False, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """Create a group."""
    group = either(
        target(ctx, endpoint, token),
        remote=lambda sdk: _shown(sdk.Group.create(name)),
        local=lambda services: _created(services.sharing.create_group(None, name)),
    )
    if as_json:
        print(json.dumps(group))
    else:
        out.print(f"Created group {group['name']} ({group['id']})")


@app.command("list")
def groups_list(
    ctx: typer.Context, as_json: JsonOpt = False, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """List groups and their members."""
    rows: list[dict[str, Any]] = either(
        target(ctx, endpoint, token),
        remote=lambda sdk: [_shown(g) for g in sdk.Group.list()],
        local=lambda services: services.sharing.list_groups(None),
    )
    print_rows(rows, as_json, ("id", "name", "members"), lambda r: (r["id"], r["name"], " ".join(r["members"])))


@app.command("add")
def groups_add(
    ctx: typer.Context, group: GroupArg, username: str, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """Add a user to a group."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.Group.add_member(group, username),
        local=lambda services: services.sharing.add_member(None, group, username),
    )
    out.print(f"Added {username} to group {group}")


@app.command("remove")
def groups_remove(
    ctx: typer.Context, group: GroupArg, username: str, endpoint: EndpointOpt = None, token: TokenOpt = None
) -> None:
    """Remove a user from a group; their access through it ends at once."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.Group.remove_member(group, username),
        local=lambda services: services.sharing.remove_member(None, group, username),
    )
    out.print(f"Removed {username} from group {group}")


@app.command("delete")
def groups_delete(ctx: typer.Context, group: GroupArg, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Delete a group and every role given to it."""
    either(
        target(ctx, endpoint, token),
        remote=lambda sdk: sdk.Group.delete(group),
        local=lambda services: services.sharing.delete_group(None, group),
    )
    out.print(f"Deleted group {group}")
