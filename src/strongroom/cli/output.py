"""The one pair of consoles every command prints through, and the one way a command fails.

Markup, highlighting and emoji codes are off: user data (names, ids, server messages) is printed as given, so
`[/foo]` or `:smile:` can neither crash a command nor change what is shown. Rich is imported on first use, so
`strongroom --help` never pays for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.table import Table


class _LazyConsole:
    """A rich Console built on first attribute access, with markup, highlighting and emoji off."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        """The Console itself, built now if it was not: for rich objects that need a true Console (a Progress)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=self._stderr, markup=False, highlight=False, emoji=False, soft_wrap=True)
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real(), name)

    def __enter__(self) -> Console:
        return self.real().__enter__()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.real().__exit__(kind, value, tb)


_out = _LazyConsole(stderr=False)
_err = _LazyConsole(stderr=True)
out = cast("Console", _out)
err = cast("Console", _err)


def real_err() -> Console:
    """The true stderr Console behind `err` (rich's Live and Progress enter it as a context manager)."""
    return _err.real()


def forget_consoles() -> None:
    """Drop the consoles built so far: the next print builds them for the streams and environment of then
    (for running several commands in one process)."""
    _out._console = None
    _err._console = None


class CommandError(Exception):
    """A refusal the user can act on: the wrapper prints `Error: <message>` on stderr and exits 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def ask(text: str, **options: Any) -> Any:
    """`typer.prompt`, except that Ctrl-C at the prompt stays an interrupt (exit 130, as anywhere else) rather than
    click's "Aborted!" (exit 1), which end of input still gives."""
    import typer

    try:
        return typer.prompt(text, **options)
    except typer.Abort as exc:
        if isinstance(exc.__context__, KeyboardInterrupt):  # raised "from None" while handling the interrupt
            raise KeyboardInterrupt from None
        raise


def fail(message: str) -> NoReturn:
    """Stop the command with one clean error line (never a traceback)."""
    raise CommandError(message)


def error_line(message: str) -> None:
    """Print `Error: message` on stderr, the message verbatim (no markup is interpreted)."""
    from rich.text import Text

    err.print(Text.assemble(("Error: ", "bold red"), message))


def table(*headers: str) -> Table:
    """A table for `out` whose cells are plain text."""
    from rich.table import Table

    return Table(*headers)


def print_table(grid: Table) -> None:
    """Print a table on stdout at its natural width when the terminal is narrower, so no cell is cut short."""
    from rich.console import Console
    from rich.measure import Measurement

    natural = Measurement.get(out, out.options.update_width(1_000_000), grid).maximum
    if natural <= out.width:
        out.print(grid)
        return
    wide = Console(
        file=out.file, width=natural, markup=False, highlight=False, emoji=False, force_terminal=out.is_terminal
    )
    wide.print(grid, crop=False)


def print_rows(
    rows: list[dict[str, Any]], as_json: bool, headers: Sequence[str], cells: Callable[[dict[str, Any]], Sequence[str]]
) -> None:
    """Print `rows` on stdout: one JSON array with `--json`, else a table of `headers` whose lines are `cells(row)`."""
    if as_json:
        print(json.dumps(rows))
        return
    grid = table(*headers)
    for row in rows:
        grid.add_row(*cells(row))
    print_table(grid)
