"""The data path of a batch job: intake adapters that yield chunks as `pyarrow.RecordBatch`es, the scoring call,
and output adapters that write each chunk under its number, so that a chunk run twice replaces its first attempt.

- localFile intake: the uploaded CSV (one file, or the parts of a multipart upload, each with its header) read
  by pyarrow's streaming CSV reader; column types are inferred from the first block and kept for the rest.
- jdbc intake: on PostgreSQL `COPY (…) TO STDOUT` in CSV (booleans `true`/`false`), parsed by the same CSV
  reader, or, for a passthrough into a CSV output, passed on as COPY's own bytes (`CsvChunk`); elsewhere one
  server-side cursor (`stream_results`, `fetchSize` rows per round trip).
- localFile output: one spool file per chunk (`out/<number>.csv`, written aside then renamed), streamed in
  chunk order by the download route.
- s3 intake: the object streamed through a 1 MiB buffer into the same CSV reader, or cut into slices of whole
  rows (`CsvSlice`): a queued job's chunk tasks parse their own, and a passthrough into a PostgreSQL table hands
  each slice to COPY as it was read (what PostgreSQL's own COPY of the file would store).
- s3 output: chunks spooled as for localFile, the contiguous run of written chunks cut into 8 MiB parts of one
  multipart upload as they fill, completed by `finish` (see `S3Output`).
- jdbc output: the rows go to a staging table per job (`sr_stage_<job id>`; a chunk run again first deletes its
  earlier rows: on MySQL each row is tagged with its chunk and position, on PostgreSQL the transaction that wrote
  each chunk is recorded beside it, see `_replace_on_postgres`), and `finish` moves them
  into the target table in one transaction (create_table on PostgreSQL: renamed into place), then drops the
  staging table.

A chunk is `ChunkSize` rows: given, or derived from DataRobot's chunkSize in bytes. Memory stays bounded by the
chunk size times the chunks in flight (see `heap.return_big_buffers` for what the allocator keeps). No secret passes
through this module's messages: failures name the adapter and the cause (`connections.explain` for drivers).
"""

from __future__ import annotations

import codecs
import csv
import functools
import importlib
import io
import json
import logging
import os
import queue
import re
import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc
import sqlalchemy as sa
from psycopg import pq
from psycopg import sql as psycopg_sql
from psycopg.errors import DataError, error_from_result
from sqlalchemy.engine import Connection

from strongroom.errors import InvalidInput, StrongroomError, clipped
from strongroom.services import s3
from strongroom.services.connections import Connector, Target, connected, explain, missing_table

Scorer = Callable[["pa.RecordBatch | CsvSlice"], "pa.RecordBatch | CsvSlice"]
STAGE_CHUNK = "_sr_chunk"
STAGE_ROW = "_sr_row"
_ENTRY_POINT = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
_log = logging.getLogger("strongroom.jobs")


class JobFailed(StrongroomError):
    """A job could not go on; the message names the adapter (or the deployment) and the cause, never a secret."""

    status_code = 409


# what pyarrow's refusals quote of the data: the row after a column count, the value after "invalid value"
_QUOTED_ROW = re.compile(r"(Expected \d+ columns?, got \d+): .*", re.DOTALL)
_QUOTED_VALUE = re.compile(r"invalid value .*", re.DOTALL)


def _unreadable(adapter: str, exc: Exception) -> JobFailed:
    """pyarrow's refusal of a CSV as the job's reason: the adapter and its reason (with the row number when it
    gives one), never the row or the value it quotes; a row longer than its block in the slicer's words."""
    text = str(exc)
    if "straddling object straddles two block boundaries" in text:
        return _too_long(adapter, MAX_ROW_BYTES)
    text = _QUOTED_VALUE.sub("invalid value", _QUOTED_ROW.sub(r"\1", text))
    return JobFailed(f"{adapter}: the CSV cannot be read ({text[:300]})")


def _undecodable(adapter: str, options: Mapping[str, str], exc: UnicodeError) -> JobFailed:
    """A CSV that is not in the job's encoding as the job's reason: the codec's complaint (a byte and its
    offset, never the text)."""
    return JobFailed(f"{adapter}: the CSV is not valid {options['encoding']} (csvSettings.encoding): {str(exc)[:300]}")


def _check_text(schema: pa.Schema, adapter: str, options: Mapping[str, str]) -> None:
    """Fail the job when the reader took a column for bytes: its values are not valid UTF-8 (the reader's text
    after decoding), so the CSV is not in the job's encoding and no output could write them."""
    for number, column in enumerate(schema):
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            reason = f"column {number + 1} is not valid text"
            raise JobFailed(f"{adapter}: the CSV is not valid {options['encoding']} (csvSettings.encoding): {reason}")


def warm_up() -> None:
    """Load now what a worker's first job would otherwise load inside its first steps: pyarrow imports pandas the
    first time it converts a Python value, its CSV reader initialises, and botocore loads its S3 model for the
    first client."""
    pa.array([0], pa.int32())
    pacsv.read_csv(pa.BufferReader(b"a\n1\n"))
    s3.warm_up()


def check_entry_point(entry_point: str) -> None:
    """422 unless `entry_point` looks like `package.module:function`."""
    if not isinstance(entry_point, str) or not _ENTRY_POINT.fullmatch(entry_point):
        msg = "must be package.module:function"
        raise InvalidInput(f"entryPoint: {msg}", {"entryPoint": msg})


def load_function(entry_point: str) -> Callable[[pa.RecordBatch], Any]:
    """The function an entry point names (JobFailed saying why it cannot be loaded)."""
    check_entry_point(entry_point)
    module_name, _, name = entry_point.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise JobFailed(f"deployment: cannot load {entry_point} ({type(exc).__name__}: {exc})") from None
    if not callable(fn):
        raise JobFailed(f"deployment: {entry_point} is not callable")
    return fn  # type: ignore[no-any-return]


def scorer(entry_point: str | None, passthrough_columns: Sequence[str] | None) -> Scorer:
    """The scoring step: the deployment's added columns (None: the built-in passthrough adds none) after the
    passthrough columns (all of them unless `passthrough_columns` lists some)."""
    fn = load_function(entry_point) if entry_point else None

    def score(batch: pa.RecordBatch | CsvSlice) -> pa.RecordBatch | CsvSlice:
        if isinstance(batch, CsvSlice):
            if batch.copy and fn is None and passthrough_columns is None:
                return batch  # every column unchanged, into PostgreSQL's COPY: never parsed here
            batch = batch.parse()
        kept = batch
        if passthrough_columns is not None:
            missing = [c for c in passthrough_columns if c not in batch.schema.names]
            if missing:
                raise JobFailed(f"passthroughColumns: the intake has no column {missing[0]!r}")
            kept = batch.select(list(passthrough_columns))
        if fn is None:
            return kept
        try:
            added = fn(batch)
        except Exception as exc:
            raise JobFailed(f"deployment: {entry_point} raised {type(exc).__name__}: {str(exc)[:300]}") from None
        columns = added
        if isinstance(added, pa.RecordBatch):
            columns = dict(zip(added.schema.names, added.columns, strict=True))
        if not isinstance(columns, Mapping):
            raise JobFailed(f"deployment: {entry_point} must return a mapping or a RecordBatch of columns")
        for name, values in columns.items():
            array = values if isinstance(values, pa.Array) else pa.array(values)
            if len(array) != batch.num_rows:
                raise JobFailed(
                    f"deployment: {entry_point} returned {len(array)} values for {name!r}, expected {batch.num_rows}"
                )
            if name in kept.schema.names:
                kept = kept.drop_columns([name])
            kept = kept.append_column(str(name), array)
        return kept

    return score


SAMPLE_ROWS = 1000


@dataclass(frozen=True)
class ChunkSize:
    """How many rows a chunk holds: `rows`, or, given `bytes` (DataRobot's chunkSize is bytes), as many rows as
    make that many bytes of CSV at the average size of a row among the intake's first `SAMPLE_ROWS` (at least
    one row)."""

    rows: int | None = None
    bytes: int | None = None

    @staticmethod
    def of(size: ChunkSize | int) -> ChunkSize:
        """`size` as a ChunkSize (an int is rows)."""
        return ChunkSize(rows=size) if isinstance(size, int) else size

    def rows_at(self, row_bytes: float) -> int:
        """Rows per chunk when a row's CSV takes `row_bytes` on average."""
        if self.rows is not None:
            return self.rows
        return max(1, int((self.bytes or 1) // max(row_bytes, 1.0)))

    def rows_for(self, sample: pa.RecordBatch) -> int:
        """Rows per chunk, measured on the first rows of `sample` rendered as CSV."""
        if self.rows is not None or sample.num_rows == 0:
            return self.rows or 1
        head = sample.slice(0, SAMPLE_ROWS)
        sink = pa.BufferOutputStream()
        pacsv.write_csv(head, sink, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        return self.rows_at(sink.tell() / head.num_rows)


def chunk_size(spec: Mapping[str, Any], default_rows: int) -> ChunkSize:
    """A job's chunk size: its chunkSize in bytes, or rows (`chunkRows`, else `default_rows`) when it named a
    strategy (auto, fixed, dynamic) or gave none."""
    given = spec.get("chunkSize")
    if isinstance(given, int) and not isinstance(given, bool):
        return ChunkSize(bytes=given)
    return ChunkSize(rows=int(spec.get("chunkRows") or default_rows))


def rechunk(
    batches: Iterator[pa.RecordBatch], size: ChunkSize | int, schema: pa.Schema | None = None
) -> Iterator[pa.RecordBatch]:
    """Batches of exactly `size` rows (the last may be shorter); at least one, empty when there is nothing."""
    size = ChunkSize.of(size)
    rows = size.rows
    buffered: list[pa.RecordBatch] = []
    count, produced = 0, False
    for batch in batches:
        schema = batch.schema
        if batch.num_rows == 0:
            continue
        if rows is None:
            rows = size.rows_for(batch)
        buffered.append(batch)
        count += batch.num_rows
        while count >= rows:
            table = pa.Table.from_batches(buffered)
            yield _one_batch(table.slice(0, rows))
            produced = True
            rest = table.slice(rows)
            buffered, count = rest.to_batches(), rest.num_rows
    if count or not produced:
        if buffered:
            yield _one_batch(pa.Table.from_batches(buffered))
        else:
            yield pa.RecordBatch.from_pylist([], schema=schema or pa.schema([]))


def _one_batch(table: pa.Table) -> pa.RecordBatch:
    combined = table.combine_chunks()
    found = combined.to_batches()
    return found[0] if found else pa.RecordBatch.from_pylist([], schema=table.schema)


# ---- CSV ------------------------------------------------------------------------------------------------------


def csv_options(settings: Mapping[str, Any] | None) -> dict[str, str]:
    """The job's csvSettings as delimiter, quotechar and encoding."""
    settings = settings or {}
    delimiter = settings.get("delimiter") or ","
    return {
        "delimiter": "\t" if delimiter == "tab" else delimiter,
        "quotechar": settings.get("quotechar") or '"',
        "encoding": settings.get("encoding") or "utf-8",
    }


@functools.lru_cache(maxsize=64)
def reads_csv_in(delimiter: str, quotechar: str, encoding: str) -> bool:
    """Whether the streaming CSV reader reads CSV written in these settings back as written: a header, and a row
    whose quoted value holds the delimiter, a quote and a newline (a codec it cannot stream, or one that changes
    such text, fails here rather than in a job)."""
    written = [["a", "b"], [f"Xy.{delimiter}{quotechar}\n-1", "Z z"]]
    sink = io.StringIO()
    csv.writer(sink, delimiter=delimiter, quotechar=quotechar, lineterminator="\n").writerows(written)
    options = {"delimiter": delimiter, "quotechar": quotechar, "encoding": encoding}
    try:
        data = sink.getvalue().encode(encoding)
        table = pacsv.read_csv(
            pa.BufferReader(data),
            read_options=pacsv.ReadOptions(encoding=encoding),
            parse_options=_parse_options(options),
            convert_options=pacsv.ConvertOptions(column_types={"a": pa.string(), "b": pa.string()}),
        )
    except Exception:  # any codec's failure, in any form, means this server cannot read it
        return False
    return [table.column_names, *map(list, zip(*table.to_pydict().values(), strict=True))] == written


def read_csv(
    files: Sequence[Any],
    options: Mapping[str, str],
    size: ChunkSize | int,
    adapter: str = "localFile intake",
    parsed: Callable[[int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The CSV files or binary streams (each with its header), streamed in chunks of `size`; `parsed` gets the
    row count of each block as the reader parses it (ahead of the chunks it yields)."""

    def batches() -> Iterator[pa.RecordBatch]:
        types: dict[str, pa.DataType] | None = None
        for source in files:
            source = _checked(source, options, adapter)
            try:
                reader = pacsv.open_csv(
                    source,
                    read_options=pacsv.ReadOptions(block_size=1 << 20, encoding=options["encoding"]),
                    parse_options=_parse_options(options),
                    convert_options=pacsv.ConvertOptions(column_types=types or {}),
                )
            except pa.ArrowInvalid as exc:
                if "Empty CSV file" in str(exc):
                    continue
                raise _unreadable(adapter, exc) from None
            except UnicodeError as exc:
                raise _undecodable(adapter, options, exc) from None
            if types is None:
                _check_text(reader.schema, adapter, options)
                types = {f.name: f.type for f in reader.schema}
            try:
                for block in reader:
                    if parsed is not None:
                        parsed(block.num_rows)
                    yield block
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise _unreadable(adapter, exc) from None
            except UnicodeError as exc:
                raise _undecodable(adapter, options, exc) from None
            except OSError as exc:
                raise JobFailed(f"{adapter}: reading failed ({type(exc).__name__})") from None

    yield from rechunk(batches(), size)


_SPOOLED_CSV = b"strongroom.csv_rows"
_SPOOLED_SLICE = b"strongroom.csv_slice"


def spool_batch(batch: pa.RecordBatch | CsvChunk | CsvSlice, path: Path) -> None:
    """Write a chunk as an Arrow IPC stream (aside, then renamed), for another process to score; a CsvChunk or a
    CsvSlice as one binary value, what it needs beside its bytes in the schema's metadata."""
    if isinstance(batch, CsvChunk | CsvSlice):
        if isinstance(batch, CsvChunk):
            metadata = {_SPOOLED_CSV: str(batch.num_rows).encode()}
        else:
            described = {"options": dict(batch.options), "adapter": batch.adapter, "copy": batch.copy}
            metadata = {
                _SPOOLED_SLICE: json.dumps(described).encode(),
                b"schema": batch.schema.serialize().to_pybytes(),
            }
        value = pa.py_buffer(batch.data)  # the bytes as they are, not copied into the array
        offsets = pa.array([0, value.size], pa.int64()).buffers()[1]
        data = pa.LargeBinaryArray.from_buffers(pa.large_binary(), 1, [None, offsets, value])
        batch = pa.RecordBatch.from_arrays([data], ["csv"]).replace_schema_metadata(metadata)
    aside = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with pa.OSFile(str(aside), "wb") as sink, pa.ipc.new_stream(sink, batch.schema) as writer:
        writer.write_batch(batch)
    os.replace(aside, path)


def read_spooled(path: Path) -> pa.RecordBatch | CsvChunk | CsvSlice:
    """A chunk spooled by `spool_batch` (a CsvSlice as it was, its bytes not parsed; mapped from the file, not
    read into memory)."""
    with pa.memory_map(str(path), "r") as source:
        batch = pa.ipc.open_stream(source).read_next_batch()
    metadata = batch.schema.metadata or {}
    if _SPOOLED_CSV in metadata:
        return CsvChunk(batch.column(0)[0].as_py(), int(metadata[_SPOOLED_CSV]))
    if _SPOOLED_SLICE in metadata:
        described = json.loads(metadata[_SPOOLED_SLICE])
        schema = pa.ipc.read_schema(pa.py_buffer(metadata[b"schema"]))
        data = batch.column(0)[0].as_buffer()
        return CsvSlice(data, schema, described["options"], described["adapter"], described.get("copy", False))
    return batch


def csv_bytes(batch: pa.RecordBatch | CsvChunk, header: bool, options: Mapping[str, str]) -> Any:
    """One chunk's CSV as a bytes-like object: a CsvChunk's bytes as they are, a batch rendered by pyarrow."""
    if isinstance(batch, CsvChunk):
        return batch.data
    sink = pa.BufferOutputStream()
    write = pacsv.WriteOptions(include_header=header, delimiter=options["delimiter"], quoting_style="needed")
    pacsv.write_csv(batch, sink, write)
    return sink.getvalue()


def write_csv(batch: pa.RecordBatch | CsvChunk, path: Path, header: bool, options: Mapping[str, str]) -> Any:
    """Write one chunk's CSV to `path` atomically (aside, then renamed over any earlier attempt); what was
    written, as a bytes-like object."""
    data = csv_bytes(batch, header, options)
    aside = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    with open(aside, "wb") as file:
        file.write(data)
    os.replace(aside, path)
    return data


class CsvSlice:
    """Whole rows of an intake's CSV as they were read (no header), not parsed yet: a queued job's producer cuts an
    S3 object at row ends and each chunk task parses its own slice, so the parsing runs on every worker instead
    of only on the producer's. `schema` holds the column names and the types inferred from the object's first
    MiB (so every slice parses alike, as one streaming reader would), `options` the job's csvSettings.

    `copy`: the slice goes to PostgreSQL's `COPY … FROM STDIN (FORMAT csv)` as it is (a passthrough into a
    PostgreSQL table), so it is read by COPY's rules throughout: types are inferred with only an unquoted empty
    field as NULL (a quoted one is the empty string, and `NA`, `null` or `NaN` are values), and `parse` reads it
    the same way."""

    __slots__ = ("adapter", "copy", "data", "options", "schema")

    def __init__(
        self, data: Any, schema: pa.Schema, options: Mapping[str, str], adapter: str, copy: bool = False
    ) -> None:
        self.data, self.schema, self.options, self.adapter, self.copy = data, schema, options, adapter, copy

    def parse(self) -> pa.RecordBatch:
        """The slice's rows as one batch of `schema` (JobFailed naming the adapter when they do not parse)."""
        if not self.schema.names or not len(self.data):
            return pa.RecordBatch.from_pylist([], schema=self.schema)
        try:
            table = pacsv.read_csv(
                pa.BufferReader(self.data),
                read_options=pacsv.ReadOptions(column_names=self.schema.names, encoding=self.options["encoding"]),
                parse_options=_parse_options(self.options),
                convert_options=_convert_options(self.copy, {f.name: f.type for f in self.schema}),
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise _unreadable(self.adapter, exc) from None
        except UnicodeError as exc:
            raise _undecodable(self.adapter, self.options, exc) from None
        return _one_batch(table) if table.num_rows else pa.RecordBatch.from_pylist([], schema=self.schema)

    def copies_as_is(self) -> bool:
        """Whether COPY may be given these bytes as they are: no `\\.` (COPY's end-of-data line), and in a
        single column no blank line (COPY reads it as a NULL row where `parse` skips it; with more columns COPY
        refuses it, and the writer then falls back to `parse`, as for a mix of line ends)."""
        unsafe = _COPY_UNSAFE_ONE if len(self.schema) == 1 else _COPY_UNSAFE
        return unsafe.search(memoryview(self.data)) is None


_COPY_UNSAFE = re.compile(rb"\\\.")
_COPY_UNSAFE_ONE = re.compile(rb"\\\.|\n\r?\n|\A\r?\n")


def _parse_options(options: Mapping[str, str]) -> pacsv.ParseOptions:
    return pacsv.ParseOptions(delimiter=options["delimiter"], quote_char=options["quotechar"], newlines_in_values=True)


def _check_header(head: bytes, options: Mapping[str, str], adapter: str) -> None:
    """Fail the job, before pyarrow builds anything for its columns, when the CSV whose first bytes are `head`
    (up to `MAX_ROW_BYTES` and one more byte) has a header longer than `MAX_ROW_BYTES` or more than
    `MAX_COLUMNS` columns (100 000 columns held ~1 GiB of the server's memory after the job)."""
    try:
        text = codecs.getincrementaldecoder(options["encoding"])(errors="replace").decode(head)
    except UnicodeError:
        return  # the reader meets it too, and names the encoding
    columns, ended = 1, False
    for number, part in enumerate(text.split(options["quotechar"])):
        if number % 2:
            continue  # inside quotes (a doubled quote is an empty part outside)
        newline = part.find("\n")
        columns += part.count(options["delimiter"], 0, newline if newline >= 0 else len(part))
        if newline >= 0:
            ended = True
            break
    if not ended and len(head) > MAX_ROW_BYTES:
        raise JobFailed(f"{adapter}: the CSV's header is longer than {_size(MAX_ROW_BYTES)} (an unclosed quote?)")
    if columns > MAX_COLUMNS:
        raise JobFailed(f"{adapter}: the CSV has {columns} columns; a job reads at most {MAX_COLUMNS}")


class _Prefixed(io.RawIOBase):
    """A binary stream whose first bytes (`head`) were read already, read from its start again."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self.head, self.at, self.rest = memoryview(head), 0, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.at < len(self.head):
            taken = self.head[self.at : self.at + len(buffer)]
            buffer[: len(taken)] = taken
            self.at += len(taken)
            return len(taken)
        data = self.rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _head(stream: Any) -> bytes:
    """The first `MAX_ROW_BYTES` and one more bytes of a stream (fewer at its end)."""
    head = bytearray()
    while len(head) <= MAX_ROW_BYTES and (piece := stream.read(MAX_ROW_BYTES + 1 - len(head))):
        head += piece
    return bytes(head)


def _checked(source: Any, options: Mapping[str, str], adapter: str) -> Any:
    """A file path or binary stream for the CSV reader, its header checked first (`_check_header`)."""
    if isinstance(source, str | Path):
        with open(source, "rb") as file:
            _check_header(_head(file), options, adapter)
        return source
    head = _head(source)
    _check_header(head, options, adapter)
    return io.BufferedReader(_Prefixed(head, source), 1 << 20)


def _convert_options(copy: bool, types: Mapping[str, pa.DataType] | None = None) -> pacsv.ConvertOptions:
    """pyarrow's defaults (empty, `NA`, `null`, `NaN` … are NULL except in text), or, for `copy`, COPY's: only an
    unquoted empty field is NULL, in every column."""
    if copy:
        return pacsv.ConvertOptions(
            column_types=types or {}, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
        )
    return pacsv.ConvertOptions(column_types=types or {})


def splits_at_bytes(options: Mapping[str, str]) -> bool:
    """Whether CSV in these settings can be cut at row ends by bytes: newline and quote are one byte each, as in
    UTF-8 and the other ASCII-compatible encodings."""
    try:
        encode = codecs.lookup(options["encoding"]).encode
        return encode("\n")[0] == b"\n" and len(encode(options["quotechar"])[0]) == 1
    except LookupError:
        return False


MAX_ROW_BYTES = 1 << 20  # the CSV reader's block size: it cannot read a longer row either
MAX_COLUMNS = 10_000  # pyarrow's reader holds ~10 KB per column: 10 000 columns peak at ~100 MiB more per job


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit % (1 << 20) == 0 else f"{limit} bytes"


def _too_long(adapter: str, limit: int, line: int | None = None) -> JobFailed:
    """A row longer than the limit as the job's reason: mostly a quote that never closes, which makes the rest of
    the file one value."""
    where = f" at line {line}" if line is not None else ""
    return JobFailed(f"{adapter}: the CSV has a row longer than {_size(limit)}{where} (an unclosed quote?)")


class _Rows:
    """Row ends in a buffer that starts at a row's start and grows at its end, each byte scanned once however
    often it is asked (a rescan from the same start for every MiB read made an unclosed quote quadratic), and no
    row longer than `limit` bytes (JobFailed naming its line: the buffer would otherwise grow with the file).
    `line` is the line number of the buffer's first byte."""

    __slots__ = ("adapter", "inside", "limit", "line", "lines", "quote", "row", "row_lines", "scanned", "searched")

    def __init__(self, quote: bytes, adapter: str, limit: int) -> None:
        self.quote, self.adapter, self.limit, self.line = quote, adapter, limit, 1
        self.restart()

    def restart(self) -> None:
        """Scan the buffer from its start again."""
        self.scanned = self.searched = self.row = self.lines = self.row_lines = 0
        self.inside = 0

    def moved(self) -> None:
        """The buffer was cut at the row end `end` returned last: it now starts there."""
        self.line += self.lines
        self.restart()

    def end(self, data: bytearray, at: int) -> int:
        """The index just past the first line end at or after `at` that is outside quotes (a quote inside a quoted
        value is doubled, so an even count of quotes before a newline means it ends a row); -1 when `data` has
        none yet."""
        if self.row > at:  # a row end at or after `at` was passed: from the start again
            self.restart()
        while (newline := data.find(b"\n", max(self.scanned, self.searched))) >= 0:
            self.inside = (self.inside + data.count(self.quote, self.scanned, newline)) % 2
            self.scanned = newline + 1
            self.lines += 1
            if not self.inside:
                if self.scanned - self.row > self.limit:
                    raise _too_long(self.adapter, self.limit, self.line + self.row_lines)
                self.row, self.row_lines = self.scanned, self.lines
                if newline >= at:
                    return self.scanned
        self.searched = len(data)
        if len(data) - self.row > self.limit:
            raise _too_long(self.adapter, self.limit, self.line + self.row_lines)
        return -1


def split_csv(
    stream: Any,
    options: Mapping[str, str],
    size: ChunkSize | int,
    adapter: str,
    progress: Callable[[int], None] | None = None,
    copy: bool = False,
    schema: pa.Schema | None = None,
    max_row: int = MAX_ROW_BYTES,
) -> Iterator[CsvSlice]:
    """A CSV stream (`read(n)`, with its header) cut into slices of whole rows, each the first row end at or past
    `size` bytes (a ChunkSize of rows: that many rows' bytes at the first MiB's average; at least one slice,
    empty when there are no rows). Types are inferred from the first 1 MiB of rows, as the streaming reader
    infers them from its first block (by COPY's rules for `copy` slices), unless `schema` gives them (the header
    must then name its columns). `progress` gets the stream's estimated row count from that first MiB (`total`
    bytes, if the caller knows it, is read from `stream.total`). A row longer than `max_row` bytes fails the job
    (naming its line): the buffer holds at most `size` plus `max_row` plus one read, whatever the stream holds."""
    rows = _Rows(options["quotechar"].encode(options["encoding"]), adapter, max_row)
    data = bytearray()
    ended = False

    def fill(wanted: int) -> None:
        nonlocal ended
        while len(data) < wanted and not ended:
            piece = stream.read(1 << 20)
            if piece:
                data.extend(piece)
            else:
                ended = True

    def cut(at: int) -> int:
        while (end := rows.end(data, min(at, len(data)))) < 0 and not ended:
            fill(len(data) + (1 << 20))
        return end if end >= 0 else len(data)

    fill(1 << 20)
    header = bytes(data[: cut(0)])
    del data[: len(header)]
    rows.moved()
    if not header.strip():
        yield CsvSlice(b"", schema or pa.schema([]), options, adapter, copy)
        return
    _check_header(header, options, adapter)
    fill(1 << 20)
    first = bytes(data[: cut(1 << 20)]) if len(data) > 1 << 20 else bytes(data)
    try:
        sample = pacsv.read_csv(
            pa.BufferReader(header + first),
            read_options=pacsv.ReadOptions(block_size=1 << 20, encoding=options["encoding"]),
            parse_options=_parse_options(options),
            convert_options=_convert_options(copy),
        )
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise _unreadable(adapter, exc) from None
    except UnicodeError as exc:
        raise _undecodable(adapter, options, exc) from None
    _check_text(sample.schema, adapter, options)
    if schema is not None and sample.column_names != schema.names:
        raise JobFailed(f"{adapter}: a part's header names other columns than the first part's")
    types = schema or sample.schema
    if isinstance(size, ChunkSize):
        size = size.bytes or size.rows_at(len(first) / max(sample.num_rows, 1))
    total = getattr(stream, "total", 0)
    if progress is not None and total and first:
        progress(round(sample.num_rows * (total - len(header)) / len(first)))
    produced = False
    while True:
        fill(size)
        if not data:
            break
        end = cut(max(size - 1, 0))
        produced = True
        piece, data = data, data[end:]  # the slice is the buffer itself, cut short; only the rest is copied
        del piece[end:]
        rows.moved()
        yield CsvSlice(piece, types, options, adapter, copy)
    if not produced:
        yield CsvSlice(b"", types, options, adapter, copy)


def split_files(
    paths: Sequence[Path], options: Mapping[str, str], size: ChunkSize | int, copy: bool = False
) -> Iterator[CsvSlice]:
    """An uploaded CSV (one file, or the parts of a multipart upload, each with its header) cut into slices of
    whole rows as `split_csv` cuts one stream, every part read with the first part's columns and types; at least
    one slice, empty when there are no rows."""
    schema: pa.Schema | None = None
    produced = False
    for path in paths:
        with open(path, "rb") as stream:
            for piece in split_csv(stream, options, size, "localFile intake", copy=copy, schema=schema):
                schema = piece.schema if schema is None and piece.schema.names else schema
                if len(piece.data):
                    produced = True
                    yield piece
    if not produced:
        yield CsvSlice(b"", schema or pa.schema([]), options, "localFile intake", copy)


# ---- databases ------------------------------------------------------------------------------------------------


def _relation(table: str, schema: str | None) -> Any:
    return sa.table(table, schema=schema)


def count_rows(conn: Connection, settings: Mapping[str, Any]) -> int | None:
    """How many rows the intake will read (for percentageCompleted), or None when the store cannot say cheaply."""
    if settings.get("query"):
        source: Any = sa.text(settings["query"]).columns().subquery("q")
    else:
        source = _relation(settings["table"], settings.get("schema"))
    try:
        return int(conn.execute(sa.select(sa.func.count()).select_from(source)).scalar_one())
    except sa.exc.DBAPIError:
        conn.rollback()
        return None


def _intake_statement(settings: Mapping[str, Any]) -> Any:
    if settings.get("query"):
        return sa.text(settings["query"])
    return sa.select(sa.text("*")).select_from(_relation(settings["table"], settings.get("schema")))


def _names_missing_table(read: Callable[..., Iterator[Any]]) -> Callable[..., Iterator[Any]]:
    """An intake reader whose store's "no such table" fails the job naming the intake's table (a client's
    mistake, not a failed connection)."""

    @functools.wraps(read)
    def reading(conn: Connection, settings: Mapping[str, Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        try:
            yield from read(conn, settings, *args, **kwargs)
        except Exception as exc:
            if not missing_table(exc):
                raise
            if settings.get("query"):
                raise JobFailed("jdbc intake: a table the query names does not exist") from None
            where = f" in schema {clipped(settings['schema'])!r}" if settings.get("schema") else ""
            raise JobFailed(f"jdbc intake: the table {clipped(settings['table'])!r}{where} does not exist") from None

    return reading


@_names_missing_table
def read_table(
    conn: Connection, settings: Mapping[str, Any], size: ChunkSize | int, stop: ReadStop | None = None
) -> Iterator[pa.RecordBatch]:
    """The intake's rows through one server-side cursor, `fetchSize` rows per round trip, in chunks of `size`
    (on PostgreSQL a COPY that `stop` ends)."""
    size = ChunkSize.of(size)
    fetch = int(settings.get("fetchSize") or min(size.rows or 10_000, 10_000))
    statement = _intake_statement(settings)
    if conn.dialect.name == "postgresql":
        yield from _copy_out(conn, statement, size, stop)
        return
    result = conn.execution_options(stream_results=True, max_row_buffer=fetch).execute(statement)
    names = list(result.keys())
    pending: list[Any] = []
    rows = size.rows
    if rows is None:
        pending = list(result.fetchmany(SAMPLE_ROWS))
        rows = size.rows_for(_batch(pending, names))
    produced = False
    while True:
        while len(pending) < rows and (more := result.fetchmany(min(fetch, rows - len(pending)))):
            pending.extend(more)
        if not pending:
            break
        produced = True
        yield _batch(pending[:rows], names)
        pending = pending[rows:]
    if not produced:
        yield pa.RecordBatch.from_arrays([pa.array([], pa.string()) for _ in names], names=names)


def _batch(rows: Sequence[Any], names: Sequence[str]) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
    return pa.RecordBatch.from_arrays([_array(c) for c in columns], names=list(names))


class ReadStop:
    """Ends a PostgreSQL COPY read that is abandoned (its job stopped, or left the read before its end): a
    reader waiting on the server gives up within `STOP_POLL_MS` with a JobFailed, never a truncated intake.
    pyarrow's CSV reader reads ahead on a thread of its own, which may be inside the driver when the job
    leaves: `settle` waits for it, so that closing the COPY and the connection never races a reader."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.busy = threading.Lock()  # held by a reader while it is inside the driver

    def set(self) -> None:
        """Tell readers to stop (safe from any thread)."""
        self.event.set()

    def settle(self) -> None:
        """Tell readers to stop, and wait until none is inside the driver."""
        self.event.set()
        with self.busy:
            pass


STOP_POLL_MS = 200  # how long a COPY reader waits on the server before it looks at its ReadStop again
WATCH_SECONDS = 0.25  # how often a jdbc read or write in progress looks whether its job stopped


class StatementWatch:
    """A jdbc statement in progress on the driver connection `raw`: while open, a thread looks every
    `WATCH_SECONDS` whether `stopped()` and then calls `on_stop` and cancels the statement (again until closed:
    a cancel sent before the statement started is lost). `fired`: it did."""

    def __init__(
        self,
        connector: Connector,
        login: tuple[Target, str, str],
        raw: Any,
        stopped: Callable[[], bool] | None,
        on_stop: Callable[[], None] | None = None,
    ) -> None:
        self.connector, self.login, self.raw, self.on_stop = connector, login, raw, on_stop
        self.done = threading.Event()
        self.fired = False
        self.thread: threading.Thread | None = None
        if stopped is not None:
            self.thread = threading.Thread(target=self._watch, args=(stopped,), name="strongroom-watch", daemon=True)
            self.thread.start()

    def _watch(self, stopped: Callable[[], bool]) -> None:
        while not self.done.wait(WATCH_SECONDS):
            if _stopped_now(stopped):
                self.fired = True
                if self.on_stop is not None:
                    self.on_stop()
                self.cancel()

    def cancel(self) -> None:
        """Ask the store to end the statement now (PostgreSQL's cancel request, MySQL's KILL QUERY)."""
        self.connector.cancel(*self.login, self.raw)

    def close(self) -> None:
        """Stop watching (the statement ended, or the caller cancels it itself from here)."""
        self.done.set()
        if self.thread is not None:
            self.thread.join()


def _stopped_now(stopped: Callable[[], bool]) -> bool:
    """`stopped()`, False when it cannot tell (its job could not be looked up: the store is away); asked again."""
    try:
        return stopped()
    except Exception as exc:  # any failure of the look-up: the statement goes on
        _log.info("job state not read (%s)", type(exc).__name__)
        return False


class _CopyRows:
    """The rows of a PostgreSQL `COPY … TO STDOUT` in progress (one CopyData message each), appended straight
    from libpq's receive queue; at the end, COPY's result is taken and its error (a statement timeout, say)
    raised. psycopg's `Copy.read` hands out the same rows through a wait-generator round each: about three times
    the CPU per row, which bounded a table-to-S3 job."""

    def __init__(self, raw: Any, stop: ReadStop | None = None) -> None:
        self.pgconn = raw.pgconn
        self.ready = select.poll()
        self.ready.register(self.pgconn.socket, select.POLLIN)
        self.ended = False
        self.stop = stop or ReadStop()

    def take(self, data: bytearray, rows: int) -> int:
        """Append up to `rows` rows to `data`; how many were appended (fewer only at the end)."""
        get, taken, stopped = self.pgconn.get_copy_data, 0, self.stop.event.is_set
        with self.stop.busy:
            while taken < rows and not self.ended:
                if stopped():
                    raise JobFailed("jdbc intake: the read was stopped")
                nbytes, piece = get(1)
                if nbytes > 0:
                    data += piece
                    taken += 1
                elif nbytes == 0:  # no whole message received yet
                    self.ready.poll(STOP_POLL_MS)
                    self.pgconn.consume_input()
                else:
                    self._end()
        return taken

    def _end(self) -> None:
        """Take every result of the finished COPY (leaving the connection ready), then raise the first error."""
        self.ended = True
        results = []
        while True:
            while self.pgconn.is_busy():
                self.ready.poll()
                self.pgconn.consume_input()
            if (result := self.pgconn.get_result()) is None:
                break
            results.append(result)
        for result in results:
            if result.status != pq.ExecStatus.COMMAND_OK:
                raise error_from_result(result)


class _CopyOut(io.RawIOBase):
    """A PostgreSQL `COPY … TO STDOUT` as a raw binary stream: each read fills the reader's whole buffer."""

    def __init__(self, copied: _CopyRows) -> None:
        self.copied = copied
        self.rest = bytearray()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while len(self.rest) < len(view) and self.copied.take(self.rest, 1024):
            pass
        n = min(len(view), len(self.rest))
        with memoryview(self.rest) as rest:
            view[:n] = rest[:n]
        del self.rest[:n]
        return n


_PG_BOOL = 16  # the boolean type's oid


def _select_sql(conn: Connection, statement: Any) -> str:
    """The intake's SELECT as PostgreSQL text, its booleans rendered `true`/`false` (COPY writes `t`/`f`; the
    CSV outputs write what pyarrow's CSV writer writes for a boolean column)."""
    if isinstance(statement, sa.TextClause):
        sql = statement.text
    else:
        sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor:
        cursor.execute(f"SELECT * FROM ({sql}) AS q LIMIT 0")
        described = list(cursor.description or ())
    if not any(d.type_code == _PG_BOOL for d in described):
        return sql
    aliases = [f"c{i}" for i in range(len(described))]
    columns = []
    for alias, d in zip(aliases, described, strict=True):
        name = psycopg_sql.Identifier(d.name).as_string(raw)
        if d.type_code == _PG_BOOL:
            columns.append(f"q.{alias}::text AS {name}")  # PostgreSQL's boolean-to-text cast: true, false
        else:
            columns.append(f"q.{alias} AS {name}")
    return f"SELECT {', '.join(columns)} FROM ({sql}) AS q({', '.join(aliases)})"


def _copy_statement(conn: Connection, statement: Any, options: Mapping[str, str]) -> str:
    delimiter, quote = (options[k].replace("'", "''") for k in ("delimiter", "quotechar"))
    return (
        f"COPY ({_select_sql(conn, statement)}) TO STDOUT "
        f"WITH (FORMAT csv, HEADER true, DELIMITER '{delimiter}', QUOTE '{quote}', ENCODING 'UTF8')"
    )


def _copy_out(conn: Connection, statement: Any, size: ChunkSize, stop: ReadStop | None) -> Iterator[pa.RecordBatch]:
    """PostgreSQL intake as `COPY (…) TO STDOUT` in CSV, parsed by the streaming CSV reader: the rows never
    become Python objects (types as CSV inference sees them)."""
    options = {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(_copy_statement(conn, statement, options)):
        copied = _CopyRows(raw, stop)
        try:
            yield from read_csv([io.BufferedReader(_CopyOut(copied), 1 << 20)], options, size, "jdbc intake")
        finally:
            if not copied.ended:  # left early: pyarrow's read-ahead thread leaves the driver before COPY is ended
                copied.stop.settle()


class CsvChunk:
    """A chunk as CSV bytes ready to write (chunk 0 starting with the header) and its row count: what a
    passthrough job moves from a PostgreSQL intake to a CSV output, never parsed or rendered again."""

    __slots__ = ("data", "num_rows")

    def __init__(self, data: bytes | bytearray, num_rows: int) -> None:
        self.data, self.num_rows = data, num_rows


def passes_csv_through(options: Mapping[str, str]) -> bool:
    """Whether a passthrough job's PostgreSQL intake can be written as COPY's own CSV (UTF-8 output only)."""
    return codecs.lookup(options["encoding"]).name == "utf-8"


@_names_missing_table
def read_table_csv(
    conn: Connection,
    settings: Mapping[str, Any],
    size: ChunkSize | int,
    options: Mapping[str, str],
    stop: ReadStop | None = None,
) -> Iterator[CsvChunk]:
    """A PostgreSQL intake as COPY's CSV (`csvSettings`' delimiter and quote, booleans `true`/`false`), in
    chunks of `size` cut at COPY's own row boundaries (one CopyData message per row, so a quoted newline never
    splits a row); the header once, at the start of chunk 0. Rows are never parsed; `stop` ends the COPY."""
    size = ChunkSize.of(size)
    statement = _intake_statement(settings)
    raw = conn.connection.driver_connection
    with raw.cursor() as cursor, cursor.copy(_copy_statement(conn, statement, options)):
        copied = _CopyRows(raw, stop)
        data = bytearray()
        copied.take(data, 1)  # the header
        sample: deque[bytearray] = deque()
        rows = size.rows
        if rows is None:
            while len(sample) < SAMPLE_ROWS and copied.take(row := bytearray(), 1):
                sample.append(row)
            rows = size.rows_at(sum(map(len, sample)) / max(len(sample), 1))
        number = 0
        while True:
            taken = 0
            while sample and taken < rows:
                data += sample.popleft()
                taken += 1
            taken += copied.take(data, rows - taken)
            if taken or number == 0:
                yield CsvChunk(data, taken)
            if taken < rows:
                return
            data, number = bytearray(), number + 1


def _array(values: Sequence[Any]) -> pa.Array:
    """An Arrow array of one column's values (text when the values mix types Arrow cannot unify)."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], pa.string())


_ARROW_TO_SQL: tuple[tuple[Callable[[pa.DataType], bool], Callable[[], Any]], ...] = (
    (pa.types.is_boolean, sa.Boolean),
    (pa.types.is_integer, sa.BigInteger),
    (pa.types.is_floating, sa.Float),
    (pa.types.is_decimal, sa.Numeric),
    (pa.types.is_timestamp, sa.DateTime),
    (pa.types.is_date, sa.Date),
)


def sql_type(arrow: pa.DataType) -> Any:
    """The SQL column type for an Arrow type (text for anything else)."""
    for test, make in _ARROW_TO_SQL:
        if test(arrow):
            return make()
    return sa.Text()


_RETRIES = 5


def _transient(exc: sa.exc.DBAPIError) -> bool:
    """A deadlock or serialisation failure, which the same transaction may simply try again."""
    orig = exc.orig
    code = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    return code in (1205, 1213) or getattr(orig, "sqlstate", None) in ("40001", "40P01")


_COPY_ROWS = 8192  # rows rendered per write of a chunk's COPY (about 1 MB of CSV here)


def _writes(stage: sa.Table) -> sa.Table:
    """A PostgreSQL staging table's companion: which transaction wrote each chunk (`<stage>_tx`)."""
    return sa.Table(
        f"{stage.name}_tx",
        sa.MetaData(),
        sa.Column("chunk", sa.Integer, nullable=False),
        sa.Column("tx", sa.types.NullType(), nullable=False),  # xid: created by `_create_writes`
        schema=stage.schema,
    )


def _drop_staged(conn: Connection, stage: sa.Table) -> None:
    """Drop a staging table and, on PostgreSQL, its record of writers (either may be gone already)."""
    conn.execute(sa.schema.DropTable(stage, if_exists=True))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.schema.DropTable(_writes(stage), if_exists=True))


def _create_writes(conn: Connection, stage: sa.Table) -> None:
    name = conn.dialect.identifier_preparer.format_table(_writes(stage))
    conn.exec_driver_sql(f"CREATE TABLE IF NOT EXISTS {name} (chunk integer NOT NULL, tx xid NOT NULL)")


def _replace_on_postgres(conn: Connection, stage: sa.Table, number: int, again: bool) -> None:
    """In the transaction writing chunk `number` to a PostgreSQL staging table: record this transaction as its
    writer and, `again`, first delete the rows of its earlier writers (by their `xmin`). The staging rows carry
    no chunk number: COPY then stores the intake's columns and nothing else, as PostgreSQL's own COPY of the
    file would, with no per-row default to compute; an attempt that died before its commit left neither rows
    nor a record."""
    writes = _writes(stage)
    if again:
        earlier = sa.select(writes.c.tx).where(writes.c.chunk == number)
        conn.execute(stage.delete().where(sa.literal_column("xmin").in_(earlier)))
        conn.execute(writes.delete().where(writes.c.chunk == number))
    this = sa.text("(txid_current() % 4294967296)::text::xid")  # the 32-bit id `xmin` holds, on every version
    conn.execute(writes.insert().from_select(["chunk", "tx"], sa.select(sa.literal(number), this)))


_REFUSED_AT = re.compile(r"line (\d+)(?:, column ([^:]+))?")


def _refused(exc: Exception, table: str, number: int) -> str:
    """Why PostgreSQL refused a chunk's CSV: the kind of error, the line of the chunk and the column, never the
    value (the driver's message quotes it)."""
    kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__).lower()
    context = getattr(getattr(exc, "diag", None), "context", None) or ""
    found = _REFUSED_AT.search(context)
    where = ""
    if found:
        where = f" at line {found[1]} of chunk {number}" + (f", column {found[2]}" if found[2] else "")
    return f"PostgreSQL refused the CSV for {table!r}{where} ({kind})"


def _exists(conn: Connection, table: str, schema: str | None) -> bool:
    """Whether the table exists: on PostgreSQL one `to_regclass`, a fraction of the inspector's query."""
    if conn.dialect.name != "postgresql":
        return bool(sa.inspect(conn).has_table(table, schema=schema))
    name = conn.dialect.identifier_preparer.format_table(sa.table(table, schema=schema))
    return conn.execute(sa.text("SELECT to_regclass(:name) IS NOT NULL"), {"name": name}).scalar_one() is True


def _check_columns(names: Sequence[str], mysql: bool) -> None:
    """Fail the job, naming the column, when the intake's columns cannot be a table's: more than the store's
    limit, a column without a name, or one named as an earlier one (case apart on MySQL, where names ignore it)."""
    store, limit = ("MySQL", 4096) if mysql else ("PostgreSQL", 1600)
    if len(names) > limit:
        raise JobFailed(f"jdbc output: the intake has {len(names)} columns; a {store} table holds at most {limit}")
    seen: dict[str, int] = {}
    for number, name in enumerate(names, 1):
        if not name.strip():
            raise JobFailed(f"jdbc output: column {number} of the intake has no name (its header field is empty)")
        key = name.casefold() if mysql else name
        if key in seen:
            raise JobFailed(
                f"jdbc output: column {number} of the intake has the name of column {seen[key]} ({clipped(name)!r})"
            )
        seen[key] = number


class TableOutput:
    """jdbc output through a per-job staging table, moved into the target in one final transaction."""

    def __init__(
        self,
        connector: Connector,
        where: Target,
        user: str,
        password: str,
        settings: Mapping[str, Any],
        job_id: str,
        statement_timeout: float,
        generation: int = 0,
        pooled: bool = False,
        stopped: Callable[[], bool] | None = None,
    ) -> None:
        self.connector, self.where, self.user, self.password = connector, where, user, password
        self.stopped = stopped  # the job was aborted (or its runner stops): a write in progress is cancelled
        # `pooled`: kept from chunk to chunk (a worker's), so its connections stay open for the next chunk
        self.engine = connector.pool(where, user, password, statement_timeout=statement_timeout) if pooled else None
        self.settings = settings
        self.table, self.schema = str(settings["table"]), settings.get("schema")
        # One staging table per generation of a queued job: a chunk of an earlier run that was still writing
        # when the job started again fills its own generation's table, never the one `finish` moves.
        names = [f"sr_stage_{job_id}" + (f"_{g}" if g else "") for g in range(generation + 1)]
        self.stage_name, self.older_stages = names[-1], names[:-1]
        self.timeout = statement_timeout
        self.lock = threading.Lock()
        self.stage: sa.Table | None = None
        self.target_columns: dict[str, Any] | None = None

    def connect(self) -> Any:
        """A connection to the output store under the job's timeouts."""
        if self.engine is not None:
            return connected(self.engine, self.where)
        return self.connector.connect(self.where, self.user, self.password, statement_timeout=self.timeout)

    def close(self) -> None:
        """Close the connections it keeps (a pooled output)."""
        if self.engine is not None:
            self.engine.dispose()

    @contextmanager
    def _watched(self, conn: Connection) -> Iterator[None]:
        """Cancel the statement `conn` runs once `stopped()` (a COPY or INSERT waiting on a lock, or long): its
        transaction rolls back, and the write ends as a JobFailed saying it was stopped."""
        raw = conn.connection.driver_connection
        watch = StatementWatch(self.connector, (self.where, self.user, self.password), raw, self.stopped)
        try:
            yield
        except (sa.exc.DBAPIError, StrongroomError):
            if watch.fired:
                raise JobFailed("jdbc output: the write was stopped") from None
            raise
        finally:
            watch.close()

    def _prepare(self, conn: Connection, batch: pa.RecordBatch) -> sa.Table:
        """The staging table (created on the first chunk, reused by a resumed job) with the target's column
        types where the target exists, else the chunk's."""
        with self.lock:
            if self.stage is not None:
                return self.stage
            self.target_columns = self._target_columns(conn)
            if self.target_columns is None and (
                self.settings["statementType"] in ("update", "insert_update")
                or (self.settings["statementType"] == "insert" and not self.settings.get("createTableIfNotExists"))
            ):
                raise JobFailed(f"jdbc output: the table {self.table!r} does not exist")
            mysql = conn.dialect.name != "postgresql"
            _check_columns(batch.schema.names, mysql)
            columns = []
            for field in batch.schema:
                if self.target_columns is not None and field.name not in self.target_columns:
                    raise JobFailed(f"jdbc output: the table {self.table!r} has no column {field.name!r}")
                kind = self.target_columns[field.name] if self.target_columns is not None else sql_type(field.type)
                columns.append(sa.Column(field.name, kind, nullable=True))
            tags = []
            if mysql:  # InnoDB clusters rows on a primary key: the chunk and the row's place in it
                tags = [
                    sa.Column(STAGE_CHUNK, sa.Integer, primary_key=True, nullable=False),
                    sa.Column(STAGE_ROW, sa.Integer, primary_key=True, nullable=False),
                ]
            stage = sa.Table(self.stage_name, sa.MetaData(), *columns, *tags, schema=self.schema)
            try:
                conn.execute(sa.schema.CreateTable(stage, if_not_exists=True))
                if not mysql:
                    _create_writes(conn, stage)
                conn.commit()
            except sa.exc.DBAPIError:  # another process created it meanwhile
                conn.rollback()
                if not _exists(conn, self.stage_name, self.schema):
                    raise
            self.stage = stage
            return stage

    def _target_columns(self, conn: Connection) -> dict[str, Any] | None:
        """The target table's column types by name, or None when it does not exist yet."""
        if not _exists(conn, self.table, self.schema):
            return None
        return {c["name"]: c["type"] for c in sa.inspect(conn).get_columns(self.table, self.schema)}

    @property
    def postgres(self) -> bool:
        """Whether the output store is PostgreSQL (where a `CsvSlice` is written by COPY as it is)."""
        return self.where.driver.dialect.startswith("postgresql")

    def write(self, number: int, batch: pa.RecordBatch | CsvSlice, attempt: int = 2) -> int:
        """Replace chunk `number`'s rows in the staging table, in one transaction; how many rows it holds.
        PostgreSQL: `COPY … FROM STDIN` of the chunk as CSV (a `copy` slice's bytes as they came, unless COPY
        would read them otherwise than `parse`); MySQL/MariaDB: a multi-row INSERT. A first attempt has nothing to
        replace: an attempt that died before its commit left nothing."""
        with self.connect() as conn, self._watched(conn):
            stage = self._prepare(conn, batch)
            postgres = conn.dialect.name == "postgresql"
            if isinstance(batch, CsvSlice) and not (postgres and batch.copy and batch.copies_as_is()):
                batch = batch.parse()
            return self._replace(conn, stage, number, batch, attempt)

    def _replace(self, conn: Connection, stage: sa.Table, number: int, batch: Any, attempt: int) -> int:
        """`write`'s transaction, tried again on a deadlock or serialisation failure; a slice COPY refuses as it
        is goes again parsed (a blank line, mixed line ends), so that `parse` names what it cannot read."""
        postgres = conn.dialect.name == "postgresql"
        if isinstance(batch, pa.RecordBatch) and not postgres:  # MySQL: the chunk and row tags of the key
            ones = pa.repeat(pa.scalar(1, pa.int32()), batch.num_rows)
            batch = batch.append_column(STAGE_CHUNK, pa.repeat(pa.scalar(number, pa.int32()), batch.num_rows))
            batch = batch.append_column(STAGE_ROW, pc.subtract(pc.cumulative_sum(ones), 1))
        if conn.in_transaction():
            conn.commit()
        for tries in range(_RETRIES):
            try:
                with conn.begin():  # COPY goes through the driver: the transaction must be SQLAlchemy's
                    if postgres:
                        _replace_on_postgres(conn, stage, number, attempt > 1 or tries > 0)
                    elif attempt > 1 or tries > 0:
                        conn.execute(stage.delete().where(stage.c[STAGE_CHUNK] == number))
                    if isinstance(batch, CsvSlice):
                        return self._copy_slice(conn, stage, batch)
                    if batch.num_rows and postgres:
                        self._copy_in(conn, stage, batch)
                    elif batch.num_rows:
                        conn.execute(stage.insert(), batch.to_pylist())
                return int(batch.num_rows)
            except DataError as exc:
                if not isinstance(batch, CsvSlice):
                    raise JobFailed(f"jdbc output: {_refused(exc, self.table, number)}") from None
                batch = batch.parse()
            except sa.exc.OperationalError as exc:
                if tries == _RETRIES - 1 or not _transient(exc):
                    raise
                time.sleep(0.05 * (tries + 1))
        raise AssertionError("unreachable: the last try returns or raises")

    @staticmethod
    def _copy_slice(conn: Connection, stage: sa.Table, piece: CsvSlice) -> int:
        """`COPY stage FROM STDIN` of a slice's bytes as they are, in the connection's transaction; the rows
        COPY stored."""
        if not len(piece.data):
            return 0
        preparer = conn.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(name) for name in piece.schema.names)
        delimiter, quote = (piece.options[k].replace("'", "''") for k in ("delimiter", "quotechar"))
        statement = (
            f"COPY {preparer.format_table(stage)} ({columns}) FROM STDIN "
            f"WITH (FORMAT csv, DELIMITER '{delimiter}', QUOTE '{quote}')"
        )
        with conn.connection.driver_connection.cursor() as cursor:
            with cursor.copy(statement) as copy:
                copy.write(piece.data)
            return int(cursor.rowcount)

    @staticmethod
    def _copy_in(conn: Connection, stage: sa.Table, batch: pa.RecordBatch) -> None:
        """`COPY stage FROM STDIN` of a chunk as CSV (an unquoted empty field is NULL, a quoted one the empty
        string), in the connection's transaction; rendered `_COPY_ROWS` rows at a time, so the chunk's CSV is
        never held whole."""
        preparer = conn.dialect.identifier_preparer
        columns = ", ".join(preparer.quote(name) for name in batch.schema.names)
        target = preparer.format_table(stage)
        raw = conn.connection.driver_connection
        options = pacsv.WriteOptions(include_header=False, quoting_style="needed")
        with raw.cursor() as cursor, cursor.copy(f"COPY {target} ({columns}) FROM STDIN WITH (FORMAT csv)") as copy:
            for start in range(0, batch.num_rows, _COPY_ROWS):
                sink = pa.BufferOutputStream()
                pacsv.write_csv(batch.slice(start, _COPY_ROWS), sink, options)
                copy.write(memoryview(sink.getvalue()))

    def finish(self, total: int) -> None:
        """Move every staged row into the target in one transaction (creating it for create_table), then drop
        the staging table."""
        if self.stage is None and not self._reflect():
            return
        stage = self.stage
        assert stage is not None
        names = [c.name for c in stage.columns if c.name not in (STAGE_CHUNK, STAGE_ROW)]
        kind = self.settings["statementType"]
        try:
            with self.connect() as conn, self._watched(conn):
                if self.target_columns is None and conn.dialect.name == "postgresql":
                    preparer = conn.dialect.identifier_preparer
                    staged = preparer.format_table(stage)
                    conn.exec_driver_sql(f"ALTER TABLE {staged} RENAME TO {preparer.quote(self.table)}")
                    _drop_staged(conn, stage)  # renamed away: its record of writers is what is left
                    conn.commit()
                    self._drop(self.older_stages)
                    return
                if self.target_columns is None:
                    target = sa.Table(
                        self.table,
                        sa.MetaData(),
                        *(sa.Column(c.name, c.type, nullable=True) for c in stage.columns if c.name in names),
                        schema=self.schema,
                    )
                    target.create(conn)
                else:
                    target = sa.Table(
                        self.table, sa.MetaData(), *(sa.Column(n, stage.c[n].type) for n in names), schema=self.schema
                    )
                where_columns = list(self.settings.get("whereColumns") or [])
                others = [n for n in names if n not in where_columns]
                update_columns = list(self.settings.get("updateColumns") or others)
                for name in [*where_columns, *update_columns]:
                    if name not in names:
                        raise JobFailed(f"jdbc output: the output has no column {name!r}")
                if kind in ("update", "insert_update"):
                    match = sa.and_(*(target.c[w] == stage.c[w] for w in where_columns))
                    values = {u: sa.select(stage.c[u]).where(match).limit(1).scalar_subquery() for u in update_columns}
                    conn.execute(target.update().where(sa.exists().where(match)).values(**values))
                if kind in ("insert", "create_table", "insert_update"):
                    # No ORDER BY: a table's rows have no order to keep, and sorting the staged rows costs more
                    # than moving them (exactly once comes from the chunk keys, not from the order).
                    source = sa.select(*(stage.c[n] for n in names))
                    if kind == "insert_update":
                        match = sa.and_(*(target.c[w] == stage.c[w] for w in where_columns))
                        source = source.where(~sa.exists().where(match))
                    conn.execute(target.insert().from_select(names, source))
                conn.commit()
                _drop_staged(conn, stage)
                conn.commit()
        except sa.exc.DBAPIError as exc:
            raise JobFailed(f"jdbc output: {explain(exc, self.where).message}") from None
        self._drop(self.older_stages)

    def _reflect(self) -> bool:
        """Find the staging table another process filled (a queued job's chunks run elsewhere); False if none."""
        with self.connect() as conn:
            if not _exists(conn, self.stage_name, self.schema):
                return False
            self.target_columns = self._target_columns(conn)
            if self.target_columns is None and conn.dialect.name == "postgresql":
                # renamed into place by `finish`, which needs no more than its name
                self.stage = sa.Table(self.stage_name, sa.MetaData(), schema=self.schema)
            else:
                self.stage = sa.Table(self.stage_name, sa.MetaData(), autoload_with=conn, schema=self.schema)
        return True

    def discard(self) -> None:
        """Drop the staging tables of this and earlier generations (a failed or aborted job leaves nothing)."""
        self._drop([*self.older_stages, self.stage_name])

    def _drop(self, names: Sequence[str]) -> None:
        try:
            with self.connect() as conn:
                for name in names:
                    _drop_staged(conn, sa.Table(name, sa.MetaData(), schema=self.schema))
                conn.commit()
        except (StrongroomError, sa.exc.DBAPIError):
            return


# ---- S3 -------------------------------------------------------------------------------------------------------


class _Body(io.RawIOBase):
    """A botocore streaming body as a raw binary stream, for a buffered reader (and pyarrow) to pull from;
    `consumed` counts the bytes read so far."""

    def __init__(self, body: Any) -> None:
        self.body = body
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.body.read(len(buffer))
        buffer[: len(data)] = data
        self.consumed += len(data)
        return len(data)


def read_s3(
    connector: Connector,
    where: s3.Location,
    keys: s3.Keys,
    options: Mapping[str, str],
    size: ChunkSize | int,
    progress: Callable[[int], None] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The object's CSV, streamed (a 1 MiB buffer, never the whole object) in chunks of `size`. Before each
    chunk, `progress` gets the object's estimated row count (the rows read so far scaled by the share of its
    bytes parsed; at the end, the rows read)."""
    with _s3_object(connector, where, keys) as found:
        body = _Body(found["Body"])
        total = int(found.get("ContentLength") or 0)
        parsed = 0

        def count(block: int) -> None:
            nonlocal parsed
            parsed += block

        rows, told = 0, None
        for chunk in read_csv([io.BufferedReader(body, 1 << 20)], options, size, "s3 intake", count):
            rows += chunk.num_rows
            estimate = max(parsed, round(parsed * total / body.consumed)) if total and body.consumed else None
            if progress is not None and estimate is not None and estimate != told:
                progress(estimate)
                told = estimate
            yield chunk
        if progress is not None and rows != told:
            progress(rows)


@contextmanager
def _s3_object(connector: Connector, where: s3.Location, keys: s3.Keys) -> Iterator[dict[str, Any]]:
    """The object's GET response (its body still to be read), on a client closed on exit; any failure to get it
    is a JobFailed naming the reason, never the library's text (it may quote the request)."""
    client = s3.client(connector, where, keys)
    try:
        try:
            found = client.get_object(Bucket=where.bucket, Key=where.prefix)
        except Exception as exc:
            raise JobFailed(f"s3 intake: {s3.explain(exc, where).message}") from None
        yield found
    finally:
        client.close()


class _Counted:
    """A botocore streaming body with its object's size (`total`), for `split_csv`."""

    def __init__(self, body: Any, total: int) -> None:
        self.body, self.total = body, total

    def read(self, size: int) -> bytes:
        try:
            return bytes(self.body.read(size))
        except Exception as exc:  # a broken stream, whatever the library calls it: its text may quote the request
            raise JobFailed(f"s3 intake: reading failed ({type(exc).__name__})") from None


def split_s3(
    connector: Connector,
    where: s3.Location,
    keys: s3.Keys,
    options: Mapping[str, str],
    size: ChunkSize | int,
    progress: Callable[[int], None] | None = None,
    copy: bool = False,
) -> Iterator[CsvSlice]:
    """The object's CSV cut into slices of whole rows of about `size` bytes, unparsed (see `split_csv`)."""
    with _s3_object(connector, where, keys) as found:
        body = _Counted(found["Body"], int(found.get("ContentLength") or 0))
        yield from split_csv(body, options, size, "s3 intake", progress, copy)


class _WholeReads(io.BytesIO):
    """A part's bytes for botocore, handing over all that is left on every read: the HTTP body then goes to the
    socket in one `sendall` and is hashed in one call, each releasing the GIL once. Read in blocks (128 KiB here),
    every block had to win the GIL back from the intake's reader, and the parts of a table-to-S3 job went up only
    after the table had been read."""

    def read(self, size: int | None = -1) -> bytes:
        return super().read()


class S3Output:
    """s3 output: each chunk's CSV is spooled under its number; the contiguous run of written chunks is cut into
    parts of `part_bytes` (part k+1 is the k-th such slice, so the mapping from chunks to parts depends only on
    the output), uploaded as they fill, and `finish` uploads the rest and completes the multipart upload. A
    resumed job starts a new upload from the spooled chunks and aborts the one it left. Parts go up on
    `UPLOADERS` threads of their own, at most `QUEUED_PARTS` waiting: chunk writers (and the intake behind them)
    do not wait for S3 unless it falls that far behind. Each part carries its CRC32, which S3 checks and combines into
    the object's checksum (as boto3's transfer manager uploads)."""

    QUEUED_PARTS = 1
    UPLOADERS = 2

    def __init__(
        self,
        connector: Connector,
        where: s3.Location,
        keys: s3.Keys,
        spool: Path,
        options: Mapping[str, str],
        part_bytes: int,
        keep_chunks: bool = True,
    ) -> None:
        self.where, self.spool, self.options, self.part_bytes = where, spool, options, part_bytes
        self.keep_chunks = keep_chunks  # False: chunks written here are not spooled (nothing would read them again)
        self.client = s3.client(connector, where, keys)
        self.lock = threading.Lock()
        self.next_chunk = 0
        self.total: int | None = None
        self.written: dict[int, memoryview] = {}  # chunks written here, not yet taken: no need to read them back
        self.pending: list[memoryview] = []  # the written chunks' CSV not yet cut into parts, in order
        self.pending_bytes = 0
        self.parts: list[dict[str, Any]] = []
        self.upload_id: str | None = None
        self.sent = 0
        self.queue: queue.Queue[tuple[int, bytes] | None] = queue.Queue(self.QUEUED_PARTS)
        self.uploaders: list[threading.Thread] = []
        self.failure: JobFailed | None = None
        self.closed = False
        self.marker = spool / "s3-upload-id"
        if self.marker.exists():
            self._call(
                self.client.abort_multipart_upload,
                Bucket=where.bucket,
                Key=where.prefix,
                UploadId=self.marker.read_text(),
                tolerate=True,
            )
            self.marker.unlink()

    def _call(self, method: Callable[..., Any], *, tolerate: bool = False, **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except Exception as exc:  # every failure becomes a reason; the library's text may quote the request
            if tolerate:
                return None
            raise JobFailed(f"s3 output: {s3.explain(exc, self.where).message}") from None

    def write(self, number: int, batch: pa.RecordBatch | CsvChunk, attempt: int = 2) -> int:
        """Spool chunk `number`, then upload whatever whole parts the written chunks now fill; its rows."""
        if self.keep_chunks:
            data = write_csv(batch, self.spool / f"{number:08d}.csv", number == 0, self.options)
        else:
            data = csv_bytes(batch, number == 0, self.options)
        with self.lock:
            if number >= self.next_chunk:
                self.written[number] = memoryview(data)
        self._advance()
        return batch.num_rows

    def _advance(self) -> None:
        """Take the written chunks in order (from memory, or the spool when another process wrote them) and cut
        every whole part they fill."""
        with self.lock:
            while self.total is None or self.next_chunk < self.total:
                data = self.written.pop(self.next_chunk, None)
                if data is None:
                    path = self.spool / f"{self.next_chunk:08d}.csv"
                    if not path.exists():
                        break
                    data = memoryview(path.read_bytes())
                self.pending.append(data)
                self.pending_bytes += len(data)
                self.next_chunk += 1
                while self.pending_bytes >= self.part_bytes:
                    self._send(self._take(self.part_bytes))

    def _take(self, size: int) -> bytes:
        """The next `size` pending bytes, copied once (slices of the chunks' bytes are views)."""
        pieces: list[memoryview] = []
        needed = size
        while needed:
            head = self.pending[0]
            if len(head) <= needed:
                pieces.append(self.pending.pop(0))
                needed -= len(head)
            else:
                pieces.append(head[:needed])
                self.pending[0] = head[needed:]
                needed = 0
        self.pending_bytes -= size
        return b"".join(pieces)

    def _send(self, data: bytes) -> None:
        """Queue the next part for the uploader thread (started with the multipart upload, on the first part);
        waits while `QUEUED_PARTS` are queued. A failed upload is raised here, at the next part."""
        if self.failure is not None:
            raise self.failure
        where = self.where
        if self.upload_id is None:
            started = self._call(
                self.client.create_multipart_upload, Bucket=where.bucket, Key=where.prefix, ChecksumAlgorithm="CRC32"
            )
            self.upload_id = str(started["UploadId"])
            self.marker.write_text(self.upload_id)
            self.uploaders = [
                threading.Thread(target=self._upload_parts, name="strongroom-s3-parts", daemon=True)
                for _ in range(self.UPLOADERS)
            ]
            for uploader in self.uploaders:
                uploader.start()
        self.sent += 1
        while True:
            try:
                self.queue.put((self.sent, data), timeout=0.5)
                return
            except queue.Full:
                if self.closed:
                    raise JobFailed("s3 output: the upload was abandoned") from None

    def _upload_parts(self) -> None:
        """The uploader thread: each queued part in turn, until the end marker; after a failure, only drain."""
        while (item := self.queue.get()) is not None:
            number, data = item
            if self.failure is not None:
                continue
            try:
                done = self._call(
                    self.client.upload_part,
                    Bucket=self.where.bucket,
                    Key=self.where.prefix,
                    UploadId=self.upload_id,
                    PartNumber=number,
                    ChecksumAlgorithm="CRC32",
                    Body=_WholeReads(data),
                )
                part = {"ETag": done["ETag"], "PartNumber": number}
                if "ChecksumCRC32" in done:  # a server that keeps part checksums wants them back at completion
                    part["ChecksumCRC32"] = done["ChecksumCRC32"]
                self.parts.append(part)
            except JobFailed as exc:
                self.failure = exc

    def _drain(self) -> None:
        """Wait until every queued part is uploaded and stop the uploader threads."""
        for _ in self.uploaders:
            self.queue.put(None)
        for uploader in self.uploaders:
            uploader.join()
        self.uploaders = []

    def finish(self, total: int) -> None:
        """Upload what is left as the last part and complete the upload: the object appears whole, or not at all."""
        self.total = total
        self._advance()
        with self.lock:
            if self.next_chunk < total:
                raise JobFailed(f"s3 output: chunk {self.next_chunk} was never written")
            if self.pending_bytes or not self.sent:
                self._send(self._take(self.pending_bytes))
            self._drain()
            if self.failure is not None:
                raise self.failure
            self._call(
                self.client.complete_multipart_upload,
                Bucket=self.where.bucket,
                Key=self.where.prefix,
                UploadId=self.upload_id,
                MultipartUpload={"Parts": sorted(self.parts, key=lambda part: part["PartNumber"])},
            )
            self.marker.unlink(missing_ok=True)
        self.client.close()

    def discard(self) -> None:
        """Abort the multipart upload (a failed or aborted job leaves no object)."""
        self.closed = True
        self.failure = self.failure or JobFailed("s3 output: the upload was abandoned")  # queued parts: dropped
        self._drain()
        if self.upload_id is not None:
            self._call(
                self.client.abort_multipart_upload,
                Bucket=self.where.bucket,
                Key=self.where.prefix,
                UploadId=self.upload_id,
                tolerate=True,
            )
            self.marker.unlink(missing_ok=True)
        self.client.close()
