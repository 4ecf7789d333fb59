"""The one pair of consoles every command prints through, and the one way a command fails.

Markup, highlighting and emoji codes are off: user data (names, ids, server messages) is printed as given, so
`[/foo]` or `:smile:` can neither crash a command nor change what is shown. Control characters and bidirectional
controls in any string printed (lines, table cells, error messages) are shown escaped (`\\x1b`, `\\u202e`), so
names and messages from a server, possibly a hostile one, cannot move the cursor, retitle or clear the terminal,
or reorder what is shown. Rich is imported on first use, so `strongroom --help` never pays for it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn, cast

if TYPE_CHECKING:
    from types import TracebackType

    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


# Unicode's Cc (C0 controls, DEL, C1 controls) and the Cf characters that reorder text (bidi marks, embeddings,
# overrides and isolates, as in "Trojan Source").
_CONTROLS = (*range(0x20), *range(0x7F, 0xA0))
_BIDI = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A))
_VISIBLE = {c: f"\\x{c:02x}" for c in _CONTROLS} | {c: f"\\u{c:04x}" for c in _BIDI}
# JSON's own escapes, so the value is unchanged; json.dumps escapes C0 itself (a newline outside strings is layout)
_JSON_VISIBLE = {c: f"\\u{c:04x}" for c in (*range(0x7F, 0xA0), *_BIDI)}


def visible(text: str) -> str:
    """`text` with every control and bidirectional control character escaped, as `\\x1b` or `\\u202e`."""
    return text.translate(_VISIBLE)


def json_text(value: Any, **options: Any) -> str:
    """`value` as JSON that keeps non-ASCII text readable but escapes every control and bidirectional character."""
    return json.dumps(value, ensure_ascii=False, **options).translate(_JSON_VISIBLE)


def plain(text: str) -> None:
    """Print `text` as one line on stdout, unstyled (a value for scripts: an id, a new token), its controls escaped."""
    sys.stdout.write(visible(text) + "\n")


_console_class: type[Console] | None = None


def _console(**options: Any) -> Console:
    """A rich Console with markup, highlighting and emoji off, whose every string is printed `visible`.

    Rich turns each string it prints (a line, a table cell) into Text through `render_str`: the one place to
    catch them all.
    """
    global _console_class
    if _console_class is None:
        from rich.console import Console

        class VisibleConsole(Console):
            def render_str(self, text: str, **kwargs: Any) -> Text:
                return super().render_str(visible(text), **kwargs)

        _console_class = VisibleConsole
    return _console_class(markup=False, highlight=False, emoji=False, **options)


class _LazyConsole:
    """A rich Console built on first attribute access (see `_console`)."""

    def __init__(self, *, stderr: bool) -> None:
        self._stderr = stderr
        self._console: Console | None = None

    def real(self) -> Console:
        """The Console itself, built now if it was not: for rich objects that need a true Console (a Progress)."""
        if self._console is None:
            self._console = _console(stderr=self._stderr, soft_wrap=True)
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
    """Print `Error: message` on stderr, the message verbatim (no markup is interpreted) but its controls escaped."""
    from rich.text import Text

    err.print(Text.assemble(("Error: ", "bold red"), visible(message)))


def table(*headers: str) -> Table:
    """A table for `out` whose cells are plain text."""
    from rich.table import Table

    return Table(*headers)


def print_table(grid: Table) -> None:
    """Print a table on stdout at its natural width when the terminal is narrower, so no cell is cut short."""
    from rich.measure import Measurement

    natural = Measurement.get(out, out.options.update_width(1_000_000), grid).maximum
    if natural <= out.width:
        out.print(grid)
        return
    wide = _console(file=out.file, width=natural, force_terminal=out.is_terminal)
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
