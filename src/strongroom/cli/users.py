"""`strongroom users …`: local administration of users (talks to the store directly)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from strongroom.cli.output import out, print_table, table
from strongroom.cli.store import store

app = typer.Typer(help="Manage users (local administration, talks to the database directly).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


@app.command("create")
def users_create(username: str, as_json: JsonOpt = False) -> None:
    """Create a user."""
    from strongroom.representation import iso

    with store() as services:
        user = services.accounts.create_user(username)
    if as_json:
        print(json.dumps({"id": user.id, "username": user.username, "createdAt": iso(user.created_at)}))
    else:
        out.print(f"Created user {user.username} ({user.id})")


@app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List users."""
    from strongroom.representation import iso

    with store() as services:
        users = services.accounts.list_users()
    rows = [{"id": u.id, "username": u.username, "createdAt": iso(u.created_at)} for u in users]
    if as_json:
        print(json.dumps(rows))
        return
    grid = table("id", "username", "created")
    for r in rows:
        grid.add_row(r["id"], r["username"], r["createdAt"])
    print_table(grid)
