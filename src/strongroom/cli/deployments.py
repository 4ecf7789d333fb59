"""`strongroom deployments …`: register scoring functions for batch jobs (in the local store, as an administrator)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from strongroom.cli.output import out, print_table, table
from strongroom.cli.store import store

app = typer.Typer(help="Scoring functions batch jobs run (administration of the local store).", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


def _admin() -> object:
    """The local administrator as a principal (audited as `local-admin`)."""
    from strongroom.services.accounts import Principal

    return Principal("local", "local-admin", "local", frozenset({"admin"}), is_admin=True)


@app.command("create")
def deployments_create(
    name: str,
    entry_point: Annotated[
        str, typer.Option("--entry-point", metavar="MODULE:FUNCTION", help="package.module:function to call.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Register a deployment: a function called with each chunk as a pyarrow.RecordBatch, returning columns to add."""
    with store() as services:
        found = services.jobs.add_deployment(_admin(), name, entry_point)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(found))
    else:
        out.print(f"Created deployment {found['label']} ({found['id']}) -> {found['entryPoint']}")


@app.command("list")
def deployments_list(as_json: JsonOpt = False) -> None:
    """Every deployment, the built-in passthrough first."""
    with store() as services:
        found = services.jobs.deployments(_admin())  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(found))
        return
    rows = table("ID", "NAME", "ENTRY POINT")
    for d in found:
        rows.add_row(d["id"], d["label"], d["entryPoint"])
    print_table(rows)
