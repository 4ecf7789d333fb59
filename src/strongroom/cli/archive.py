"""`strongroom backup FILE` and `strongroom restore FILE`: the whole store to an encrypted archive and back."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from strongroom.cli.output import ask, out, real_err
from strongroom.cli.store import settings, store

if TYPE_CHECKING:
    from rich.progress import Progress

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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = real_err()
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as progress:
        yield _Bar(progress)


def _read_passphrase(source: Path) -> str:
    from strongroom import backup as archive

    # What was given is never repeated: a passphrase typed where its file's path belongs would be printed.
    where = "standard input" if str(source) == "-" else "the file given to --passphrase-file"
    try:
        text = sys.stdin.read() if str(source) == "-" else source.read_text()
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise archive.ArchiveError(f"cannot read {where}: {reason}") from None
    except UnicodeDecodeError:
        raise archive.ArchiveError(f"cannot read {where}: it is not UTF-8 text") from None
    passphrase = text.rstrip("\r\n")
    if not passphrase:
        raise archive.ArchiveError(f"{where} is empty")
    return passphrase


def _summary(rows: dict[str, int]) -> str:
    users, tokens, credentials = (rows.get(name, 0) for name in ("users", "api_tokens", "credentials"))
    return f"{users} user(s), {tokens} token(s), {credentials} credential(s)"


def backup(
    file: Annotated[Path, typer.Argument(help="The archive to write (created 0600), or to check.", dir_okay=False)],
    passphrase_file: PassphraseFile = None,
    passphrase: Annotated[
        bool, typer.Option("--passphrase", help="Prompt for a passphrase instead of using the master key.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace FILE if it exists.")] = False,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify",
            help="Check the existing archive FILE instead: authenticate every chunk and decrypt every secret "
            "(with the master key, or the passphrase); writes nothing.",
        ),
    ] = False,
) -> None:
    """Write an encrypted archive of the store; a passphrase archive restores on a new machine with only the
    archive and the passphrase (a fresh master key is made there).

    While a master-key archive is written, `keys retire` of any version it may need is refused (see `keys retire
    --help` for a backup that died).
    """
    from strongroom import backup as archive

    if verify:
        _verify(file, passphrase_file)
        return
    secret = None
    if passphrase_file is not None:
        secret = _read_passphrase(passphrase_file)
    elif passphrase:
        secret = ask("Archive passphrase", hide_input=True, confirmation_prompt=True)
    if secret is not None:
        archive.check_passphrase(secret)
    with store() as service, _bar() as bar:
        summary = archive.backup(
            service.db, service.barrier.keys, file, passphrase=secret, overwrite=force, reporter=bar
        )
    out.print(f"Backed up {_summary(summary.rows)} to {file} ({summary.size:,} bytes)")


def _verify(file: Path, passphrase_file: Path | None) -> None:
    """`backup --verify FILE`: every chunk authenticated, every secret decrypted, nothing written."""
    from strongroom import backup as archive

    secret = _archive_passphrase(file, passphrase_file)
    with _bar() as bar:
        summary = archive.verify_archive(settings(), file, passphrase=secret, reporter=bar)
    made = f", made {summary.created_at}" if summary.created_at else ""
    out.print(f"{file} is intact: {_summary(summary.rows)}, every secret decrypts{made}")


def _archive_passphrase(file: Path, passphrase_file: Path | None) -> str | None:
    """The passphrase an archive needs: from the file, or prompted on a terminal; None for a master-key one."""
    from strongroom import backup as archive

    header = archive.header_of(file)
    if passphrase_file is not None:
        return _read_passphrase(passphrase_file)
    if header.key_mode != "passphrase":
        return None
    if not sys.stdin.isatty():
        raise archive.ArchiveError("this archive is protected by a passphrase; give it with --passphrase-file")
    return str(ask("Archive passphrase", hide_input=True))


def restore(
    file: Annotated[Path, typer.Argument(help="The archive to restore.", dir_okay=False)],
    passphrase_file: PassphraseFile = None,
) -> None:
    """Load an archive into an empty store on any backend: a master-key archive needs the backed-up store's
    master key; a passphrase archive needs only the passphrase (a store without keys gets a fresh one)."""
    from strongroom import backup as archive

    secret = _archive_passphrase(file, passphrase_file)
    with _bar() as bar:
        summary = archive.restore(settings(), file, passphrase=secret, reporter=bar)
    made = f" (made {summary.created_at})" if summary.created_at else ""
    out.print(f"Restored {_summary(summary.rows)} from {file}{made}")
