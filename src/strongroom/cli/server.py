"""`strongroom serve` and `strongroom init`: the two commands that may create a store."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from strongroom.cli.output import out
from strongroom.cli.store import creating, open_services, settings


def init() -> None:
    """Create the store (database and master key) where the settings point, or confirm the one already there."""
    config = settings()
    with creating(config) as missing:
        open_services(config).close()
    where = "STRONGROOM_DATABASE_URL" if config.database_url else str(config.data_dir)
    key = "STRONGROOM_MASTER_KEY" if config.master_key else "AWS KMS" if config.kms_key_id else config.resolved_key_file
    verb = "Created a store" if missing else "A store already exists"
    out.print(f"{verb} at {where} (master key: {key})")


def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8484).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
) -> None:
    """Run the API server (SQLite and a generated master key in the data directory unless configured)."""
    updates = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    config = settings().model_copy(update=updates)

    from strongroom.api import serve as serve_api
    from strongroom.config import mask_password

    with creating(config):
        services = open_services(config)  # migrate and verify keys once, before any worker starts
    try:
        has_users = bool(services.accounts.list_users())
    finally:
        services.close()
    out.print(f"Strongroom listening on http://{config.host}:{config.port}/api/v2")
    out.print(f"  database: {mask_password(config.resolved_database_url)}")
    key_source = "STRONGROOM_MASTER_KEY" if config.master_key else str(config.resolved_key_file)
    out.print(f"  master key: {key_source}")
    out.print(f"  API docs: http://{config.host}:{config.port}/api/v2/docs")
    if not has_users:
        out.print("  No users yet. Create one and a token (shown once):")
        out.print("    strongroom users create alice && strongroom tokens create alice")
    os.environ.update({f"STRONGROOM_{k.upper()}": str(v) for k, v in updates.items()})  # for worker processes
    serve_api.run(config)
