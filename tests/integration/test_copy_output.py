"""A passthrough from CSV into a PostgreSQL table (issue 16): each slice of whole rows goes to the staging table by
`COPY … FROM STDIN` as it was read, so the table holds what PostgreSQL's own COPY of the file stores (an unquoted
empty field NULL, a quoted one the empty string, `NA` a value); a slice COPY refuses as it is goes again parsed,
and a value PostgreSQL refuses fails the job naming the line and column, never the value."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from strongroom.config import Settings
from strongroom.jdbc import Target, target
from strongroom.services import batch
from strongroom.services.connections import Connector
from tests.support import backend_database

pytestmark = pytest.mark.postgres

OPTIONS = {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}
HEADER = "id,label,flag,amount,note\n"
ROWS = (
    '1,plain,true,1.5,NA\n2,"two\nlines, ""quoted""",false,,null\n3,"",,2.25,""\n4,,true,-3,\n'
    '5,ünï ✓,false,1e-7,"a,b"\n6,"line\r\nbreak",true,0,NaN\n'
)
COLUMNS = "id bigint, label text, flag boolean, amount double precision, note text"


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with backend_database("postgres") as found:
        assert found is not None
        yield found


@pytest.fixture
def output(url: str, tmp_path: Path) -> Iterator[Any]:
    """A table output's maker: `make(table, statement)`; its staging tables are dropped afterwards."""
    where: Target = target("postgres", "jdbc:postgresql://" + url.split("@", 1)[1], [])
    made: list[batch.TableOutput] = []

    def make(table: str, statement: str = "create_table", job: str = "job") -> batch.TableOutput:
        settings = {"table": table, "statementType": statement}
        made.append(
            batch.TableOutput(Connector(Settings(data_dir=tmp_path)), where, "postgres", "x", settings, job, 30)
        )
        return made[-1]

    yield make
    for out in made:
        out.discard()


def _run(url: str, *statements: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
        found: list[tuple[Any, ...]] = []
        for statement in statements:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            found = cur.fetchall() if cur.description else []
        return found


def _copied(url: str, table: str, csv: str) -> list[tuple[Any, ...]]:
    """PostgreSQL's own `COPY … FROM STDIN` of the CSV into a fresh table: what the job's table must hold."""
    _run(url, f"CREATE TABLE {table} ({COLUMNS})")
    statement = f"COPY {table} FROM STDIN (FORMAT csv, HEADER true)"
    with psycopg.connect(url.replace("+psycopg", "")) as conn, conn.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[arg-type]
        copy.write(csv.encode())
    return _run(url, f"SELECT * FROM {table} ORDER BY id")


def _slices(csv: str, size: int, copy: bool = True) -> list[batch.CsvSlice]:
    return list(batch.split_csv(io.BytesIO(csv.encode()), OPTIONS, size, "s3 intake", copy=copy))


@pytest.mark.parametrize("size", [1, 40, 10_000])
def test_the_table_holds_what_postgres_own_copy_of_the_file_holds(
    output: Any, url: str, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = output(f"moved_{size}")
    slices = _slices(HEADER + ROWS, size)
    expected = [len(s.parse()) for s in slices]
    assert all(s.copy and s.copies_as_is() for s in slices)

    def parsed(self: batch.CsvSlice) -> Any:
        raise AssertionError("a slice for COPY was parsed")

    monkeypatch.setattr(batch.CsvSlice, "parse", parsed)
    rows = [out.write(n, s, attempt=1) for n, s in enumerate(slices)]
    out.finish(len(slices))
    assert sum(rows) == 6 and rows == expected
    moved = _run(url, f"SELECT * FROM moved_{size} ORDER BY id")
    assert moved == _copied(url, f"copied_{size}", HEADER + ROWS)
    assert [r[1] for r in moved[2:4]] == ["", None]  # quoted empty: the empty string; unquoted: NULL
    assert [r[4] for r in moved] == ["NA", "null", "", None, "a,b", "NaN"]  # text, as COPY reads it
    types = _run(
        url,
        f"SELECT data_type FROM information_schema.columns WHERE table_name = 'moved_{size}' ORDER BY ordinal_position",
    )
    assert [t[0] for t in types] == ["bigint", "text", "boolean", "double precision", "text"]


def test_parsed_slices_read_the_empty_field_otherwise(output: Any, url: str) -> None:
    """The contrast that shows COPY read the bytes: slices not meant for COPY are parsed by pyarrow's defaults,
    where an unquoted empty text field is the empty string and `NA`/`null`/`NaN` in text stay text."""
    out = output("parsed")
    slices = _slices(HEADER + ROWS, 10_000, copy=False)
    out.write(0, slices[0], attempt=1)
    out.finish(1)
    assert [r[0] for r in _run(url, "SELECT label FROM parsed ORDER BY id")][2:4] == ["", ""]


def test_a_chunk_written_again_replaces_its_rows(output: Any, url: str) -> None:
    """A chunk run again (attempt 2: its first run's transaction may have committed) deletes the rows its earlier
    writers stored, found by their transaction (`xmin`), and leaves the other chunks' rows alone."""
    out = output("again", job="again")
    first, second = _slices(HEADER + ROWS, 60)[:2]
    rows = (len(first.parse()), len(second.parse()))
    out.write(0, first, attempt=1)
    out.write(1, second, attempt=1)
    out.write(1, second, attempt=2)
    out.write(0, first, attempt=3)
    assert _run(url, "SELECT count(*) FROM sr_stage_again") == [(sum(rows),)]
    writers = _run(url, "SELECT chunk, count(*) FROM sr_stage_again_tx GROUP BY 1 ORDER BY 1")
    assert writers == [(0, 1), (1, 1)]
    per_chunk = _run(
        url,
        "SELECT w.chunk, count(*) FROM sr_stage_again s JOIN sr_stage_again_tx w ON s.xmin = w.tx "
        "GROUP BY 1 ORDER BY 1",
    )
    assert per_chunk == [(0, rows[0]), (1, rows[1])]


def test_the_staging_rows_hold_the_intake_columns_only(output: Any, url: str) -> None:
    """COPY stores nothing beside the intake's columns (no chunk column to default per row); finishing renames
    the staging table into place and drops its record of writers."""
    out = output("plain", job="plain")
    out.write(0, _slices(HEADER + ROWS, 10_000)[0], attempt=1)
    columns = "SELECT column_name FROM information_schema.columns WHERE table_name = '{}' ORDER BY ordinal_position"
    assert [c[0] for c in _run(url, columns.format("sr_stage_plain"))] == HEADER.strip().split(",")
    out.finish(1)
    assert [c[0] for c in _run(url, columns.format("plain"))] == HEADER.strip().split(",")
    left = "SELECT count(*) FROM pg_class WHERE relname LIKE 'sr_stage_plain%'"
    assert _run(url, left) == [(0,)]


def test_bytes_copy_would_read_otherwise_go_again_parsed(output: Any, url: str) -> None:
    """A blank line (COPY: a row of NULLs, or a refusal) and a mix of line ends (COPY refuses it): the slice is
    parsed instead, and the table holds the rows without the blank line."""
    csv = HEADER + "1,a,true,1,x\n\n2,b,false,2,y\r\n3,c,true,3,z\n"
    out = output("mixed")
    (piece,) = _slices(csv, 10_000)
    assert out.write(0, piece, attempt=1) == 3
    out.finish(1)
    assert _run(url, "SELECT id, label FROM mixed ORDER BY id") == [(1, "a"), (2, "b"), (3, "c")]
    (one,) = list(batch.split_csv(io.BytesIO(b"word\na\n\nb\n"), OPTIONS, 100, "s3 intake", copy=True))
    assert not one.copies_as_is()  # one column: COPY would store the blank line as a NULL row
    (marker,) = list(batch.split_csv(io.BytesIO(b"word\na\n\\.\nb\n"), OPTIONS, 100, "s3 intake", copy=True))
    assert not marker.copies_as_is()  # COPY would end the data at `\.` and lose `b`


def test_an_insert_leaves_no_staging_table_behind(output: Any, url: str) -> None:
    _run(url, f"CREATE TABLE existing ({COLUMNS})")
    out = output("existing", statement="insert", job="existing")
    out.write(0, _slices(HEADER + ROWS, 10_000)[0], attempt=1)
    out.finish(1)
    assert _run(url, "SELECT count(*) FROM existing") == [(6,)]
    assert _run(url, "SELECT count(*) FROM pg_class WHERE relname LIKE 'sr_stage_existing%'") == [(0,)]


def test_a_value_postgres_refuses_names_line_and_column_not_the_value(output: Any, url: str) -> None:
    _run(url, "CREATE TABLE strict (id bigint, label text, flag boolean, amount integer, note text)")
    out = output("strict", statement="insert")
    csv = HEADER + "1,a,true,1,x\n2,b,false,2,y\n3,c,true,SECRET-ish,z\n"
    (piece,) = _slices(csv, 10_000)
    with pytest.raises(batch.JobFailed) as failed:
        out.write(4, piece, attempt=1)
    message = failed.value.message
    assert message.startswith("jdbc output: PostgreSQL refused the CSV for 'strict' at line 3 of chunk 4")
    assert "column amount" in message and "SECRET" not in message
    assert _run(url, "SELECT count(*) FROM sr_stage_job") == [(0,)]


def test_an_upload_in_parts_is_sliced_with_the_first_parts_columns(output: Any, url: str, tmp_path: Path) -> None:
    """A localFile intake of several parts (each with its header) into PostgreSQL: the parts' slices go to COPY
    as read, with the first part's types; the table holds what COPY of the whole file holds. A part whose header
    names other columns fails the job, naming the intake."""
    lines = ROWS.splitlines(keepends=True)
    parts = [tmp_path / "part-1.csv", tmp_path / "part-2.csv", tmp_path / "part-3.csv"]
    parts[0].write_text(HEADER + "".join(lines[:3]))
    parts[1].write_text(HEADER)  # a part with no rows
    parts[2].write_text(HEADER + "".join(lines[3:]))
    slices = list(batch.split_files(parts, OPTIONS, 40, copy=True))
    assert len(slices) > 2 and all(s.copy and s.schema.equals(slices[0].schema) for s in slices)
    out = output("uploaded")
    assert sum(out.write(n, s, attempt=1) for n, s in enumerate(slices)) == 6
    out.finish(len(slices))
    assert _run(url, "SELECT * FROM uploaded ORDER BY id") == _copied(url, "uploaded_copy", HEADER + ROWS)
    parts[1].write_text("id,label,other\n7,x,y\n")
    with pytest.raises(batch.JobFailed, match=r"^localFile intake: a part's header"):
        list(batch.split_files(parts, OPTIONS, 40, copy=True))
    (empty,) = list(batch.split_files([], OPTIONS, 40, copy=True))
    assert not len(empty.data)


def test_a_spooled_copy_slice_reads_back_unparsed(tmp_path: Path) -> None:
    (piece,) = _slices(HEADER + ROWS, 10_000)
    batch.spool_batch(piece, tmp_path / "0.arrow")
    back = batch.read_spooled(tmp_path / "0.arrow")
    assert isinstance(back, batch.CsvSlice) and back.copy
    assert bytes(memoryview(back.data)) == piece.data and back.schema.equals(piece.schema)


def test_copy_rules_infer_na_as_text() -> None:
    """Types for COPY are inferred as COPY reads values: `NA` makes a column text (pyarrow's defaults read it as
    NULL and the column as integers, which COPY would then refuse)."""
    csv = "id,count\n1,5\n2,NA\n3,\n"
    copied = _slices(csv, 100)[0].schema
    parsed = _slices(csv, 100, copy=False)[0].schema
    assert str(copied.field("count").type) == "string" and str(parsed.field("count").type) == "int64"
