"""The event-loop pool's statement rewriting and error reading, which need no database."""

from __future__ import annotations

import pytest

from strongroom.store.pgloop import connection_ended, numbered


def test_placeholders_become_numbered_once_per_name() -> None:
    sql, names = numbered("SELECT %(a)s, %(b)s, %(a)s, 100 %% 7")
    assert sql == b"SELECT $1, $2, $1, 100 % 7"
    assert names == ("a", "b")


@pytest.mark.parametrize(
    ("sqlstate", "ended"),
    [
        ("57P01", True),  # terminated by an administrator: seen as AdminShutdown before libpq saw the close
        ("57P02", True),
        ("57P05", True),
        ("08006", True),
        ("08000", True),
        ("57P03", False),  # cannot connect now: a refusal of a new connection, not the end of this one
        ("57014", False),  # a statement cancelled (statement_timeout): the connection lives on
        ("40001", False),
        (None, False),
    ],
)
def test_the_server_ending_a_connection_is_told_by_its_sqlstate(sqlstate: str | None, ended: bool) -> None:
    assert connection_ended(sqlstate) is ended
