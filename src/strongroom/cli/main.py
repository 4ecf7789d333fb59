"""The `strongroom` command: the command groups, and the one wrapper that turns every error into an exit code.

Each group lives in its own module and imports the server's packages only inside its commands, so
`strongroom --help` and `strongroom credentials …` start without loading the store, the crypto or the web stack.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence

import typer

from strongroom.cli import (
    archive,
    audit,
    credentials,
    deployments,
    groups,
    jobs,
    keys,
    oauth_providers,
    server,
    tokens,
    users,
    worker,
)
from strongroom.cli.output import CommandError, error_line
from strongroom.cli.store import SERVER_MODULES, server_missing


class _Strongroom(typer.Typer):
    """The app; calling it (as an entry point `strongroom.cli:app` does) runs `main`, wrapper included."""

    def __call__(self, *args: object, **kwargs: object) -> None:
        main()


app = _Strongroom(
    help="Strongroom: a credential store with the DataRobot Credentials API.",
    no_args_is_help=True,
    rich_markup_mode=None,  # plain help: rendering it with rich costs more than the rest of a call
    add_completion=False,
)
app.add_typer(users.app, name="users")
app.add_typer(tokens.app, name="tokens")
app.add_typer(groups.app, name="groups")
app.add_typer(keys.app, name="keys")
app.add_typer(credentials.app, name="credentials")
app.add_typer(audit.app, name="audit")
app.add_typer(deployments.app, name="deployments")
app.add_typer(jobs.app, name="jobs")
app.add_typer(oauth_providers.app, name="oauth-providers")
app.command("serve")(server.serve)
app.command("init")(server.init)
app.command("worker")(worker.worker)
app.command("backup")(archive.backup)
app.command("restore")(archive.restore)

DEBUG_ENV = "STRONGROOM_DEBUG"


@app.callback()
def _private_files() -> None:
    """Files Strongroom creates (database, WAL, keys, backups) are readable by their owner only."""
    os.umask(0o077)


def _where(exc: BaseException) -> str:
    """The innermost frame of the traceback, as module:line (names no values)."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return "unknown place"
    last = frames[-1]
    return f"{os.path.basename(last.filename)}:{last.lineno} in {last.name}"


def main(args: Sequence[str] | None = None) -> None:
    """Run one command and exit: 0 done, 1 refused (one `Error:` line), 2 usage, 130 interrupted.

    Domain and SDK errors print their message, which never holds a secret. Anything else is a bug: it prints
    its type and place, and the traceback (never local variables) only when STRONGROOM_DEBUG is set.
    """
    from strongroom.client.errors import StrongroomSDKError
    from strongroom.errors import StrongroomError

    command = typer.main.get_command(app)
    try:
        command.main(args=list(args) if args is not None else None, prog_name="strongroom")
    except (CommandError, StrongroomError, StrongroomSDKError) as exc:
        error_line(exc.message)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:
        missing = (exc.name or "").split(".")[0] if isinstance(exc, ModuleNotFoundError) else ""
        if missing in SERVER_MODULES:  # a client-only install (`pip install strongroom`) ran a local command
            error_line(server_missing([missing]))
            sys.exit(1)
        if os.environ.get(DEBUG_ENV):
            traceback.print_exception(exc)
        error_line(
            f"unexpected {type(exc).__name__} at {_where(exc)}. This is a bug in Strongroom; "
            f"{DEBUG_ENV}=1 shows the traceback."
        )
        sys.exit(1)
