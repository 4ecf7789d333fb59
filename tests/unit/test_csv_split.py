"""Cutting a CSV stream into slices of whole rows by bytes (a queued job's S3 producer, issue 16): every slice
ends at a row end, even with quoted newlines, doubled quotes and CRLF; the header goes once into the schema;
parsed, the slices are the rows a streaming reader reads, in order."""

from __future__ import annotations

import io
import re
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from strongroom.services import batch
from strongroom.services.batch import CsvSlice, JobFailed, read_csv, split_csv, splits_at_bytes

OPTIONS = {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}
TRICKY = (
    'id,text,flag,amount\n1,plain,true,1.5\n2,"two\nlines",false,\n3,"a ""quoted"" ""\n"" word",true,2\n'
    '4,"",false,3.25\r\n5,"ends with newline\n",true,4\n6,ünï,false,5'
)


def _slices(text: str, size: int, options: dict[str, str] = OPTIONS) -> list[CsvSlice]:
    return list(split_csv(io.BytesIO(text.encode(options["encoding"])), options, size, "s3 intake"))


def _whole(text: str, options: dict[str, str] = OPTIONS) -> pa.Table:
    parse = pacsv.ParseOptions(delimiter=options["delimiter"], quote_char=options["quotechar"], newlines_in_values=True)
    return pacsv.read_csv(io.BytesIO(text.encode(options["encoding"])), parse_options=parse)


@pytest.mark.parametrize("size", [1, 10, 25, 60, 1000])
def test_slices_are_whole_rows_in_order(size: int) -> None:
    slices = _slices(TRICKY, size)
    header = TRICKY.encode().index(b"\n") + 1
    assert b"".join(bytes(s.data) for s in slices) == TRICKY.encode()[header:]
    assert all(len(s.data) >= size for s in slices[:-1])
    batches = [s.parse() for s in slices]
    assert all(b.num_rows >= 1 for b in batches)
    assert pa.Table.from_batches(batches).to_pylist() == _whole(TRICKY).to_pylist()


def test_one_row_per_slice_when_size_is_one_byte() -> None:
    assert [s.parse().num_rows for s in _slices(TRICKY, 1)] == [1] * 6


def test_a_big_stream_keeps_the_first_block_types() -> None:
    rows = "".join(f'{i},"text {i}\nline",{i % 2 == 0},{i}.5\n' for i in range(60_000))
    text = "id,text,flag,amount\n" + rows
    slices = _slices(text, 200_000)
    assert len(slices) > 5 and {str(s.schema) for s in slices} == {str(_whole(text).schema)}
    assert pa.Table.from_batches([s.parse() for s in slices]).equals(_whole(text).combine_chunks())


def test_a_header_only_or_empty_stream_is_one_empty_slice() -> None:
    (only,) = _slices("id,text\n", 10)
    assert only.parse().num_rows == 0 and only.schema.names == ["id", "text"]
    (empty,) = _slices("", 10)
    assert empty.parse().num_rows == 0


def test_other_settings_and_encodings() -> None:
    options = {"delimiter": ";", "quotechar": "'", "encoding": "latin-1"}
    text = "a;b\n1;'x;\ny'\n2;'é'\n"
    slices = _slices(text, 1, options)
    assert [s.parse().to_pylist() for s in slices] == [[{"a": 1, "b": "x;\ny"}], [{"a": 2, "b": "é"}]]
    assert splits_at_bytes(options) and not splits_at_bytes({**OPTIONS, "encoding": "utf-16"})


def test_a_slice_that_does_not_parse_names_the_adapter() -> None:
    """Types come from the first MiB: a later slice with a value that does not fit them fails, naming the
    adapter, as the streaming reader would."""
    text = "id,n\n" + "".join(f"{i},{i}\n" for i in range(200_000)) + "x,y\n"
    slices = _slices(text, 500_000)
    assert slices[0].parse().num_rows > 0
    with pytest.raises(JobFailed, match=r"^s3 intake: the CSV cannot be read"):
        slices[-1].parse()


NOT_IN_ITS_ENCODING = {
    "cp1252 without 0x81": ("cp1252", b"id,name\n1,\x81\n"),
    "utf-16 of an odd length": ("utf-16", b"id,name\n1,2\n"),
    "utf-8 with a stray byte": ("utf-8", b"id,name\n1,\xff\n"),
}


@pytest.mark.parametrize(("encoding", "data"), NOT_IN_ITS_ENCODING.values(), ids=NOT_IN_ITS_ENCODING.keys())
def test_a_csv_not_in_its_encoding_fails_naming_the_setting(encoding: str, data: bytes) -> None:
    """Bytes the job's encoding cannot decode fail the job with the adapter and csvSettings.encoding named (not
    as an internal error), whether the streaming reader or the slicer meets them."""
    options = {**OPTIONS, "encoding": encoding}
    expected = rf"^localFile intake: the CSV is not valid {encoding} \(csvSettings\.encoding\)"
    with pytest.raises(JobFailed, match=expected):
        list(read_csv([io.BytesIO(data)], options, 100))
    if splits_at_bytes(options):
        with pytest.raises(JobFailed, match=expected):
            list(split_csv(io.BytesIO(data), options, 100, "localFile intake"))


def test_utf16_and_utf32_are_read() -> None:
    """UTF-16 and UTF-32 uploads (with their byte-order mark) are read by the streaming reader."""
    text = 'id,name\n1,é\n2,"a,\nb"\n'
    for encoding in ("utf-16", "utf-32", "utf-16-le"):
        batches = list(read_csv([io.BytesIO(text.encode(encoding))], {**OPTIONS, "encoding": encoding}, 100))
        assert pa.Table.from_batches(batches).to_pylist() == [{"id": 1, "name": "é"}, {"id": 2, "name": "a,\nb"}]


class _Endless:
    """A stream whose second row opens a quote that never closes, followed by `limit` bytes without a newline
    (a file far bigger than the splitter may hold); `given` counts the bytes read from it."""

    def __init__(self, limit: int) -> None:
        self.head, self.limit, self.given = b'id,text\n1,plain\n2,"never closed\n', limit, 0

    def read(self, size: int) -> bytes:
        piece = self.head or b"x" * min(size, self.limit - self.given)
        self.head = b""
        self.given += len(piece)
        return piece


def test_a_row_longer_than_the_bound_fails_naming_its_line_and_holds_no_more() -> None:
    """An unclosed quote makes the rest of the file one row: the splitter fails when that row passes its bound,
    naming the line where the row starts, having read no more than the slice size, the bound and one read
    (it used to read, and hold, the whole stream)."""
    stream = _Endless(64 << 20)
    size, bound = 1000, 100_000
    with pytest.raises(JobFailed) as failed:
        list(split_csv(stream, OPTIONS, size, "s3 intake", max_row=bound))
    assert stream.given <= size + bound + (1 << 20) + 64
    assert re.match(r"s3 intake: the CSV has a row longer than 100000 bytes at line 3 \(", failed.value.message)


def test_a_long_row_later_in_the_file_names_its_line() -> None:
    """Lines count from the file's start across slices (a quoted newline is a line too); rows up to the bound
    pass, the last row without a newline counts."""
    rows = '1,"a\nb"\n' + "".join(f"{i},x\n" for i in range(2, 50))
    text = "id,text\n" + rows + "50," + "y" * 300 + "\n51,z\n"
    assert len(_slices(text, 30)) > 5
    with pytest.raises(JobFailed, match=r"row longer than 200 bytes at line 52 "):
        list(split_csv(io.BytesIO(text.encode()), OPTIONS, 30, "s3 intake", max_row=200))
    with pytest.raises(JobFailed, match=r"row longer than 200 bytes at line 3 "):
        list(split_csv(io.BytesIO(b"id,text\n1,x\n2," + b"z" * 300), OPTIONS, 30, "s3 intake", max_row=200))
    assert [s.parse().num_rows for s in split_csv(io.BytesIO(text.encode()), OPTIONS, 30, "s3", max_row=400)]


class _CountingBuffer(bytearray):
    """A buffer that counts the bytes its searches examine."""

    examined = 0

    def find(self, sub: Any, start: Any = 0, end: Any = None) -> int:
        found = super().find(sub, start, end)
        stop = len(self) if end is None else end
        type(self).examined += (found + 1 if found >= 0 else stop) - start
        return found

    def count(self, sub: Any, start: Any = 0, end: Any = None) -> int:
        type(self).examined += (len(self) if end is None else end) - start
        return super().count(sub, start, end)


def test_looking_for_a_row_end_scans_each_byte_once() -> None:
    """A row end looked for again after every read (an unclosed quote, a long row) continues where the last
    search stopped: the bytes examined grow with the buffer, not with its square."""
    rows = batch._Rows(b'"', "s3 intake", 1 << 30)
    data = _CountingBuffer(b'1,"never closed\n')
    for _ in range(2000):
        data.extend(b"x" * 500 + b"\n" + b"y" * 500)
        assert rows.end(data, 0) == -1
    assert _CountingBuffer.examined <= 3 * len(data)


def test_the_streaming_reader_names_the_same_bound() -> None:
    """The streaming reader cannot read a row that spans more than a block (MAX_ROW_BYTES): the job's reason says
    so in the slicer's words, not as pyarrow's "straddling object"."""
    data = b'id,text\n1,"' + b"x" * (3 * batch.MAX_ROW_BYTES) + b'"\n'
    with pytest.raises(JobFailed, match=r"^localFile intake: the CSV has a row longer than 1 MiB \(an unclosed"):
        list(read_csv([io.BytesIO(data)], OPTIONS, 100))


CANARY = "canary-7f3a"
QUOTING = {
    "a row with more columns": f"id,n\n1,2\n3,4,{CANARY}\n",
    "a row with fewer columns": f"id,n\n1,2\n{CANARY}\n",
    "a value of another type": "id,n\n" + "".join(f"{i},{i}\n" for i in range(100_000)) + f"{CANARY},5\n",
}


@pytest.mark.parametrize("text", QUOTING.values(), ids=QUOTING.keys())
def test_a_row_that_does_not_parse_is_not_quoted(text: str) -> None:
    """pyarrow's refusal ends with the row (or the value) it could not read: the job's reason keeps the reason
    and drops the text, from the streaming reader, the slicer's sample and a slice's parse alike."""
    failures = []
    with pytest.raises(JobFailed) as failed:
        list(read_csv([io.BytesIO(text.encode())], OPTIONS, 100))
    failures.append(failed.value.message)
    with pytest.raises(JobFailed) as failed:
        for piece in split_csv(io.BytesIO(text.encode()), OPTIONS, 500_000, "s3 intake"):
            piece.parse()
    failures.append(failed.value.message)
    for message in failures:
        assert "the CSV cannot be read (" in message and CANARY not in message, message
    assert re.search(r"Expected 2 columns, got [13]\)$|CSV conversion error to int64: invalid value\)$", message)


def _wide(columns: int, rows: int = 1) -> bytes:
    return (",".join(f"c{i}" for i in range(columns)) + "\n" + (",".join("1" * columns) + "\n") * rows).encode()


def test_more_columns_than_a_job_reads_fail_before_pyarrow_reads_them() -> None:
    """A header of more than MAX_COLUMNS columns fails the job, naming the limit, before pyarrow builds its
    columns (100 000 columns held ~1 GiB of the server's memory after the job), from every source the reader
    takes: a file, a stream, and the slicer; MAX_COLUMNS columns are read."""
    over = _wide(batch.MAX_COLUMNS + 1)
    expected = rf"^localFile intake: the CSV has {batch.MAX_COLUMNS + 1} columns; a job reads at most"
    with pytest.raises(JobFailed, match=expected):
        list(read_csv([io.BytesIO(over)], OPTIONS, 100))
    with pytest.raises(JobFailed, match=expected):
        list(split_csv(io.BytesIO(over), OPTIONS, 100, "localFile intake"))
    (batch_,) = read_csv([io.BytesIO(_wide(batch.MAX_COLUMNS))], OPTIONS, 100)
    assert batch_.num_columns == batch.MAX_COLUMNS


def test_a_header_longer_than_a_row_may_be_fails(tmp_path: Any) -> None:
    """A header that does not end within MAX_ROW_BYTES (an unclosed quote in it) fails before the reader takes
    it, from a file as from a stream; one that ends within it is read, and the stream is read from its start."""
    path = tmp_path / "upload.csv"
    path.write_bytes(b'a,"b\n' + b"x" * (2 * batch.MAX_ROW_BYTES))
    with pytest.raises(JobFailed, match=r"^localFile intake: the CSV's header is longer than 1 MiB"):
        list(read_csv([path], OPTIONS, 100))
    long_names = ",".join(f"c{i}" for i in range(100)) + "\n1" + ",1" * 99 + "\n"
    (read,) = read_csv([io.BufferedReader(io.BytesIO(long_names.encode()), 7)], OPTIONS, 100)
    assert read.num_columns == 100 and read.num_rows == 1
