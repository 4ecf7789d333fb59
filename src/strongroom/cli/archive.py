"""`strongroom backup FILE` and `strongroom restore FILE`: the whole store to an encrypted archive and back."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from strongroom import backup as archive
from strongroom.bootstrap import Services
from strongroom.config import Settings
from strongroom.errors import StrongroomError

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

PassphraseFile = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="Read the archive passphrase from this file ('-' for stdin) instead of using the master key.",
        dir_okay=False,
    ),
]


class _Bar:
    """A rich progress bar on stderr, one task per phase; silent when stderr is not a terminal."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: int | None = None

    def start(self, description: str, total: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, visible=False)
        self._task = self._progress.add_task(description, total=total)

    def advance(self, rows: int) -> None:
        if self._task is not None:
            self._progress.advance(self._task, rows)


@contextmanager
def _bar() -> Iterator[_Bar]:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not err.is_terminal) as progress:
        yield _Bar(progress)


@contextmanager
def _clean_errors() -> Iterator[None]:
    """Every refusal is one line on stderr and exit status 1, never a traceback."""
    try:
        yield
    except StrongroomError as exc:
        err.print(f"[red]Error:[/red] {exc.message}", markup=True, highlight=False)
        raise typer.Exit(1) from None


def _read_passphrase(source: Path) -> str:
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise archive.ArchiveError(f"cannot read the passphrase file {source}: {exc}") from None
    passphrase = text.rstrip("\r\n")
    if not passphrase:
        raise archive.ArchiveError(f"the passphrase file {source} is empty")
    return passphrase


def _summary(rows: dict[str, int]) -> str:
    users, tokens, credentials = (rows.get(name, 0) for name in ("users", "api_tokens", "credentials"))
    return f"{users} user(s), {tokens} token(s), {credentials} credential(s)"


def backup(
    file: Annotated[Path, typer.Argument(help="The archive to write (created 0600).", dir_okay=False)],
    passphrase_file: PassphraseFile = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Prompt for a passphrase instead of using the master key.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
) -> None:
    """Write an encrypted archive of the store; with a passphrase, it opens without this machine's key file."""
    with _clean_errors():
        secret = None
        if passphrase_file is not None:
            secret = _read_passphrase(passphrase_file)
        elif passphrase:
            secret = typer.prompt("Archive passphrase", hide_input=True, confirmation_prompt=True)
        if secret is not None:
            archive.check_passphrase(secret)
        service = Services.open(Settings())
        try:
            with _bar() as bar:
                summary = archive.backup(
                    service.db, service.barrier.keys, file, passphrase=secret, overwrite=force, reporter=bar
                )
        finally:
            service.close()
    out.print(f"Backed up {_summary(summary.rows)} to {file} ({summary.size:,} bytes)", highlight=False)


def restore(
    file: Annotated[Path, typer.Argument(help="The archive to restore.", dir_okay=False)],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Load an archive into an empty store on any backend, configured with the backed-up store's master key."""
    with _clean_errors():
        header = archive.header_of(file)
        secret = None
        if passphrase_file is not None:
            secret = _read_passphrase(passphrase_file)
        elif header.key_mode == "passphrase":
            if not sys.stdin.isatty():
                raise archive.ArchiveError("this archive is protected by a passphrase; give it with --passphrase-file")
            secret = typer.prompt("Archive passphrase", hide_input=True)
        with _bar() as bar:
            summary = archive.restore(Settings(), file, passphrase=secret, reporter=bar)
    made = f" (made {summary.created_at})" if summary.created_at else ""
    out.print(f"Restored {_summary(summary.rows)} from {file}{made}", highlight=False)
