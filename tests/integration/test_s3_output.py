"""The s3 output of batch jobs against the signature-checking S3 server: parts uploaded on their own thread
still make the object the chunks in order, and a part that fails to upload fails the job, naming the adapter
(issue 16)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from strongroom.config import Settings
from strongroom.services import s3
from strongroom.services.batch import JobFailed, S3Output
from strongroom.services.connections import Connector
from tests.support import S3Peer, s3_server

PART = 5 * 1024 * 1024  # S3's smallest part but the last


@pytest.fixture(scope="module")
def peer() -> Iterator[S3Peer]:
    with s3_server() as found:
        yield found


def _output(peer: S3Peer, tmp_path: Path, key: str) -> S3Output:
    where = s3.Location(peer.bucket, key, peer.endpoint_url, peer.region)
    keys = s3.Keys(peer.access_key_id, peer.secret_access_key, None)
    options = {"delimiter": ",", "quotechar": '"', "encoding": "utf-8"}
    return S3Output(Connector(Settings(data_dir=tmp_path)), where, keys, tmp_path, options, PART)


def _chunk(start: int, rows: int = 200_000) -> pa.RecordBatch:
    """About 6 MiB of CSV: more than one part."""
    ids = pa.array(range(start, start + rows), pa.int64())
    return pa.RecordBatch.from_arrays(
        [ids, pa.array([f"row {i:024d}" for i in range(start, start + rows)])], ["id", "text"]
    )


def test_the_object_is_the_chunks_in_order(peer: S3Peer, tmp_path: Path) -> None:
    out = _output(peer, tmp_path, "ordered.csv")
    out.write(1, _chunk(200_000))  # written out of order: nothing is cut until chunk 0 is there
    out.write(0, _chunk(0))
    out.write(2, _chunk(400_000))
    out.finish(3)
    body = peer.client().get_object(Bucket=peer.bucket, Key="ordered.csv")["Body"].read().decode()
    lines = body.splitlines()
    assert lines[0] == '"id","text"'
    assert [int(line.split(",")[0]) for line in lines[1:]] == list(range(600_000))
    assert peer.client().head_object(Bucket=peer.bucket, Key="ordered.csv", PartNumber=1)["PartsCount"] >= 3
    # every part went up with its CRC32, which S3 checked and combined, as boto3's own transfer manager does
    found = peer.client().get_object_attributes(Bucket=peer.bucket, Key="ordered.csv", ObjectAttributes=["Checksum"])
    assert found["Checksum"]["ChecksumType"] == "COMPOSITE" and found["Checksum"]["ChecksumCRC32"]


def test_a_part_goes_to_the_socket_in_one_send(peer: S3Peer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A part's body is handed to the socket whole: sent in blocks (128 KiB), each block had to win the GIL back
    from the intake's reader, and a table-to-S3 job's parts went up only once the table was read."""
    sizes: list[int] = []
    lock = threading.Lock()
    sendall = socket.socket.sendall

    def recorded(self: socket.socket, data: Any, *args: Any) -> Any:
        with lock:
            sizes.append(len(data))
        return sendall(self, data, *args)

    monkeypatch.setattr(socket.socket, "sendall", recorded)
    out = _output(peer, tmp_path, "whole.csv")
    out.write(0, _chunk(0))
    out.finish(1)
    monkeypatch.undo()
    assert max(sizes) >= PART
    body = peer.client().get_object(Bucket=peer.bucket, Key="whole.csv")["Body"].read()
    assert body.count(b"\n") == 200_001


def test_a_part_that_fails_to_upload_fails_the_job(peer: S3Peer, tmp_path: Path) -> None:
    """Part 2 fails (S3 would still complete an upload of parts 1 and 3): finish raises, naming the adapter and
    the cause, and discard leaves no object."""
    out = _output(peer, tmp_path, "failing.csv")
    upload_part = out.client.upload_part

    def refuse_part_two(**kwargs: Any) -> Any:
        if kwargs["PartNumber"] == 2:
            raise ConnectionResetError("connection reset by peer")
        return upload_part(**kwargs)

    out.client.upload_part = refuse_part_two
    with pytest.raises(JobFailed, match=r"^s3 output: "):
        for number in range(3):
            out.write(number, _chunk(number * 200_000))
        out.finish(3)
    out.discard()
    missing = peer.client().list_objects_v2(Bucket=peer.bucket, Prefix="failing.csv")
    assert missing.get("KeyCount", 0) == 0
