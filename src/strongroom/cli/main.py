"""The `strongroom` command: server and local administration commands; credentials live in credentials.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from strongroom.bootstrap import Services
from strongroom.cli import archive
from strongroom.cli.credentials import app as credentials_app
from strongroom.config import Settings
from strongroom.errors import StrongroomError
from strongroom.representation import iso
from strongroom.services.accounts import SCOPES

app = typer.Typer(
    help="Strongroom: a credential store with the DataRobot Credentials API.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,  # a traceback must never print local variables holding secrets
)
users_app = typer.Typer(help="Manage users (local administration, talks to the database directly).")
tokens_app = typer.Typer(help="Manage API tokens (local administration).")
keys_app = typer.Typer(help="Master keys.")
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(keys_app, name="keys")
app.add_typer(credentials_app, name="credentials")
app.command("backup")(archive.backup)
app.command("restore")(archive.restore)

out = Console()
err = Console(stderr=True, soft_wrap=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]


@app.callback()
def _private_files() -> None:
    """Files Strongroom creates (database, WAL, keys, backups) are readable by their owner only."""
    os.umask(0o077)


@contextmanager
def store() -> Iterator[Services]:
    """Open the store as the server would (same settings, same key checks); errors become clean exits."""
    service = None
    try:
        service = Services.open(Settings())
        yield service
    except StrongroomError as exc:
        err.print(f"[red]Error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    finally:
        if service is not None:
            service.close()


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8484).")] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default 1).")] = None,
) -> None:
    """Run the API server (SQLite and a generated master key in the data directory unless configured)."""
    from strongroom.api import serve as serve_api

    updates = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    settings = Settings().model_copy(update=updates)
    workers = settings.workers
    with store() as service:  # migrate and verify keys once, before any worker starts
        has_users = bool(service.accounts.list_users())
        database = service.db.engine.url.render_as_string(hide_password=True)
    out.print(f"Strongroom listening on [bold]http://{settings.host}:{settings.port}/api/v2[/bold]")
    out.print(f"  database: {database}")
    key_source = "STRONGROOM_MASTER_KEY" if settings.master_key else str(settings.resolved_key_file)
    out.print(f"  master key: {key_source}")
    out.print(f"  API docs: http://{settings.host}:{settings.port}/api/v2/docs")
    if not has_users:
        out.print("  No users yet. Create one and a token (shown once):")
        out.print("    strongroom users create alice && strongroom tokens create alice")
    os.environ.update({f"STRONGROOM_{k.upper()}": str(v) for k, v in updates.items()})  # for worker processes
    serve_api.run(settings)


@users_app.command("create")
def users_create(username: str, as_json: JsonOpt = False) -> None:
    """Create a user."""
    with store() as service:
        user = service.accounts.create_user(username)
    if as_json:
        out.print_json(json.dumps({"id": user.id, "username": user.username, "createdAt": iso(user.created_at)}))
    else:
        out.print(f"Created user [bold]{user.username}[/bold] ({user.id})")


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """List users."""
    with store() as service:
        users = service.accounts.list_users()
    rows = [{"id": u.id, "username": u.username, "createdAt": iso(u.created_at)} for u in users]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "username", "created")
    for r in rows:
        table.add_row(r["id"], r["username"], r["createdAt"])
    out.print(table)


@tokens_app.command("create")
def tokens_create(
    username: str,
    name: Annotated[str, typer.Option(help="A label for the token.")] = "default",
    scope: Annotated[
        list[str] | None, typer.Option(help=f"Scopes (repeat): {', '.join(SCOPES)}. Default: all.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create an API token for a user. The token is shown once and stored only as a hash."""
    with store() as service:
        token, raw = service.accounts.create_token(username, name, tuple(scope or SCOPES))
    if as_json:
        out.print_json(json.dumps({"id": token.id, "name": token.name, "scopes": token.scopes.split(), "token": raw}))
        return
    err.print(f"Token {token.id} for {username} (scopes: {token.scopes}). It is shown only now:")
    print(raw)


@tokens_app.command("list")
def tokens_list(username: str, as_json: JsonOpt = False) -> None:
    """List a user's tokens (never their values)."""
    with store() as service:
        tokens = service.accounts.list_tokens(username)
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "scopes": t.scopes,
            "createdAt": iso(t.created_at),
            "revoked": t.revoked_at is not None,
        }
        for t in tokens
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table("id", "name", "prefix", "scopes", "created", "revoked")
    for r in rows:
        table.add_row(r["id"], r["name"], r["prefix"] + "…", r["scopes"], r["createdAt"], "yes" if r["revoked"] else "")
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: str) -> None:
    """Revoke a token; it stops working at once."""
    with store() as service:
        service.accounts.revoke_token(token_id)
    out.print(f"Revoked token {token_id}")


@keys_app.command("status")
def keys_status(as_json: JsonOpt = False) -> None:
    """Show the active master-key version and how many credentials' data keys each version wraps."""
    with store() as service:
        status = service.keys.status()
    if as_json:
        out.print_json(json.dumps(status))
        return
    out.print(f"Active master key version: {status['active']} ({status['source']})")
    out.print(f"Credentials on older versions: {status['onOlderVersions']}")
    table = Table("version", "credentials", "state", "key")
    for v in status["versions"]:
        state = "active" if v["active"] else "retired" if v["retired"] else ""
        table.add_row(str(v["version"]), str(v["credentials"]), state, v["keyRef"] or "local")
    out.print(table)


@keys_app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int, typer.Option(help="Data keys re-wrapped per transaction.", min=1)] = 500,
    pause: Annotated[float, typer.Option(help="Seconds to wait between batches (leaves room for traffic).")] = 0.0,
    kms_key_id: Annotated[
        str | None, typer.Option(help="AWS KMS: the key for the new version (default: the active one again).")
    ] = None,
    settle: Annotated[
        float, typer.Option(help="Seconds for running servers to adopt the new version (0 if none are running).")
    ] = 2.0,
    resume: Annotated[
        bool, typer.Option("--resume", help="Only finish an interrupted rotation; never add a version.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Activate a new master-key version and re-wrap every data key under it, while servers keep serving.

    An interrupted rotation (crash, Ctrl-C, SIGKILL) is finished by running this again: it then adds no
    version but re-wraps what is left. Running servers start writing with the new version within a second.
    """
    with store() as service:
        started = time.monotonic()
        version = service.keys.start_rotation(key_ref=kms_key_id, resume_only=resume)
        active = service.barrier.keys.active_version()
        if not as_json:
            what = f"Activated master key version {version}" if version else f"Resuming with version {active}"
            err.print(f"{what}; re-wrapping data keys in batches of {batch_size}")

        def progress(done: int, _batch: int) -> None:
            if not as_json:
                err.print(f"  re-wrapped {done}")

        report = service.keys.rewrap(batch_size=batch_size, pause=pause, settle=settle, on_batch=progress)
        report_out = {
            "active": active,
            "newVersion": version,
            **report,
            "seconds": round(time.monotonic() - started, 3),
        }
    if as_json:
        out.print_json(json.dumps(report_out))
    else:
        out.print(
            f"Master key version {active} active: {report['rewrapped']} data key(s) re-wrapped, "
            f"{report['left']} left on older versions, {report['failed']} failed to authenticate"
        )
    if report["left"]:
        raise typer.Exit(1)


@keys_app.command("retire")
def keys_retire(version: int) -> None:
    """Forget an old master-key version; refused while it is active or any credential still uses it."""
    with store() as service:
        service.keys.retire(version)
    out.print(f"Retired master key version {version}")
