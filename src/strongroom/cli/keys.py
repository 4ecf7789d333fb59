"""`strongroom keys …`: master-key status, rotation and retirement."""

from __future__ import annotations

import json
import math
import signal
import time
from typing import Annotated

import typer

from strongroom.cli.output import err, out, print_table, table
from strongroom.cli.store import store

app = typer.Typer(help="Master keys.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
MAX_SECONDS = 3600.0
MAX_VERSION = 2**31 - 1  # the version columns are 32-bit integers on PostgreSQL


def _seconds(value: float) -> float:
    """A finite wait from 0 to an hour, refused as a usage error (exit 2) before anything changes."""
    if not math.isfinite(value) or not 0 <= value <= MAX_SECONDS:
        raise typer.BadParameter(f"{value} is not a number of seconds from 0 to {MAX_SECONDS:g}")
    return value


@app.command("status")
def keys_status(as_json: JsonOpt = False) -> None:
    """Show the active master-key version and how many credentials' data keys each version wraps."""
    with store() as services:
        status = services.keys.status()
    if as_json:
        print(json.dumps(status))
        return
    out.print(f"Active master key version: {status['active']} ({status['source']})")
    out.print(f"Credentials on older versions: {status['onOlderVersions']}")
    grid = table("version", "credentials", "state", "key")
    for v in status["versions"]:
        state = "active" if v["active"] else "retired" if v["retired"] else ""
        grid.add_row(str(v["version"]), str(v["credentials"]), state, v["keyRef"] or "local")
    print_table(grid)


@app.command("rotate")
def keys_rotate(
    batch_size: Annotated[int, typer.Option(help="Data keys re-wrapped per transaction.", min=1, max=1_000_000)] = 500,
    pause: Annotated[
        float,
        typer.Option(help="Seconds to wait between batches (leaves room for traffic).", callback=_seconds),
    ] = 0.0,
    kms_key_id: Annotated[
        str | None,
        typer.Option(
            help="AWS KMS: the key for the new version (default: the active one again); refused when the master "
            "keys are not in KMS (the provider comes from the settings, never from this option)."
        ),
    ] = None,
    settle: Annotated[
        float,
        typer.Option(
            help="Seconds for running servers to adopt the new version (0 if none are running).", callback=_seconds
        ),
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
    # Ctrl-C stops a rotation even when started from a shell or job that ignores SIGINT: a rerun resumes it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with store() as services:
        started = time.monotonic()
        version = services.keys.start_rotation(key_ref=kms_key_id, resume_only=resume)
        active = services.keys.active_version()
        if not as_json:
            what = f"Activated master key version {version}" if version else f"Resuming with version {active}"
            err.print(f"{what}; re-wrapping data keys in batches of {batch_size}")

        def progress(done: int, _batch: int) -> None:
            if not as_json:
                err.print(f"  re-wrapped {done}")

        report = services.keys.rewrap(batch_size=batch_size, pause=pause, settle=settle, on_batch=progress)
    summary = {"active": active, "newVersion": version, **report, "seconds": round(time.monotonic() - started, 3)}
    if as_json:
        print(json.dumps(summary))
    else:
        out.print(
            f"Master key version {active} active: {report['rewrapped']} data key(s) re-wrapped, "
            f"{report['left']} left on older versions, {report['failed']} failed to authenticate"
        )
    if report["left"]:
        raise typer.Exit(1)


@app.command("retire")
def keys_retire(
    version: Annotated[int, typer.Argument(min=1, max=MAX_VERSION)],
    force: Annotated[
        bool, typer.Option("--force", help="Retire it even though recorded master-key backups need it.")
    ] = False,
) -> None:
    """Forget an old master-key version; refused while it is active or any credential still uses it, while a
    master-key backup is being written from this store (even with --force), and, without --force, while a
    master-key backup made from this store needs it.

    A backup being written holds every live version until it finishes. One that died without finishing stops
    holding them back at once when it ran on this host (its process is gone), otherwise 10 minutes after its
    last sign of life (a running backup shows one at least every 30 seconds).
    """
    with store() as services:
        retired = services.keys.retire(version, force=force)
    for claim in retired.cleared:
        err.print(f"Note: cleared the claim of a backup that did not finish: {claim}")
    for path in retired.unrestorable:
        err.print(f"Warning: the backup {path} can no longer be restored")
    out.print(f"Retired master key version {version}")
