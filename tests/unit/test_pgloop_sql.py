"""The event-loop pool's statement rewriting, which needs no database."""

from __future__ import annotations

from strongroom.store.pgloop import numbered


def test_placeholders_become_numbered_once_per_name() -> None:
    sql, names = numbered("SELECT %(a)s, %(b)s, %(a)s, 100 %% 7")
    assert sql == b"SELECT $1, $2, $1, 100 % 7"
    assert names == ("a", "b")
