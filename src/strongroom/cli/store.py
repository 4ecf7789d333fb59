"""Opening the local store for administration: only `serve` and `init` may create one."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from typing import TYPE_CHECKING, Any

from strongroom.cli.output import CommandError, fail

if TYPE_CHECKING:
    from strongroom.bootstrap import Services
    from strongroom.config import Settings


# What the local commands (serve, init, users, tokens, keys, backup, restore) import: the `server` extra.
SERVER_MODULES = ("sqlalchemy", "alembic", "starlette", "uvicorn", "cryptography", "pydantic_settings", "orjson")


def require_server() -> None:
    """Refuse, saying what to install, when the server's packages are missing (a client-only install)."""
    missing = [name for name in SERVER_MODULES if find_spec(name) is None]
    if missing:
        fail(server_missing(missing))


def server_missing(modules: list[str]) -> str:
    """The refusal for a local command on a client-only install, naming the missing modules."""
    return (
        "this command runs the server's code, which this installation lacks "
        f"({', '.join(modules)} not installed): install strongroom[server] (pip install 'strongroom[server]')"
    )


def settings() -> Settings:
    """The server's settings from the environment (STRONGROOM_*); refused on a client-only install."""
    require_server()
    from pydantic import ValidationError

    from strongroom.config import Settings

    try:
        return Settings()
    except ValidationError as exc:
        raise CommandError(invalid_settings(exc)) from None


def invalid_settings(exc: Any) -> str:
    """One line naming each setting pydantic refused and why (never the value, which may be a password)."""
    problems = []
    for error in exc.errors():
        name = "STRONGROOM_" + "_".join(str(part) for part in error["loc"]).upper()
        reason = str(error["msg"]).removeprefix("Value error, ")
        problems.append(reason if reason.startswith(name) else f"{name}: {reason}")
    return "; ".join(problems)


def _data_dir_origin() -> str:
    """How the data directory was chosen, in the words a user can act on."""
    if os.environ.get("STRONGROOM_DATA_DIR"):
        return "from STRONGROOM_DATA_DIR"
    if os.environ.get("XDG_DATA_HOME"):
        return "the default: $XDG_DATA_HOME/strongroom; set STRONGROOM_DATA_DIR to use another"
    return "the default: ~/.local/share/strongroom; set STRONGROOM_DATA_DIR to use another"


def missing_parts(config: Settings) -> list[str]:
    """What a store needs but is not there (the SQLite file, the key file), each with where it was looked for."""
    missing = []
    if config.database_url is None:
        database = config.data_dir / "strongroom.db"
        if not database.is_file():
            missing.append(f"no database file {database} (data directory {_data_dir_origin()})")
    if not (config.master_key or config.kms_key_id):
        key_file = config.resolved_key_file
        if not key_file.is_file():
            origin = (
                "from STRONGROOM_MASTER_KEY_FILE"
                if config.master_key_file is not None
                else f"in the data directory, {_data_dir_origin()}"
            )
            missing.append(f"no master key file {key_file} ({origin})")
    return missing


def require_store(config: Settings) -> None:
    """Refuse, naming every missing part, unless the configured store already exists (creating nothing)."""
    missing = missing_parts(config)
    if missing:
        fail(
            "no Strongroom store here: "
            + "; ".join(missing)
            + ". Point STRONGROOM_DATA_DIR at an existing store, or create one with `strongroom init` "
            "(or `strongroom serve`)."
        )


@contextmanager
def creating(config: Settings) -> Iterator[list[str]]:
    """What the store lacks (`missing_parts`), held true while the block runs: commands that may create the store
    (init, serve) take turns on a lock of its directory, so of several started at once only one finds it missing."""
    if not missing_parts(config):
        yield []  # complete: nothing will be created, no need to wait for anyone
        return
    directory = config.data_dir if config.database_url is None else config.resolved_key_file.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a lock on the directory itself: no lock file is left behind
        yield missing_parts(config)  # again: another command may have created it meanwhile
    finally:
        os.close(fd)  # releases the lock


def open_services(config: Settings) -> Services:
    """Open the store as the server would (migrate, load and verify the keys), creating it if it is new."""
    from strongroom.bootstrap import Services

    return Services.open(config)


@contextmanager
def store(config: Settings | None = None) -> Iterator[Services]:
    """Open an existing store for one command and close it after; a missing one is refused, never created."""
    config = config or settings()
    require_store(config)
    services = open_services(config)
    try:
        yield services
    finally:
        services.close()
