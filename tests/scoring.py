"""Scoring functions the batch-job tests register as deployments (`tests.scoring:…`); the server imports them."""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc


def add_total(batch: pa.RecordBatch) -> dict[str, Any]:
    """A `total` column: price times quantity."""
    return {"total": pc.multiply(batch.column("price"), batch.column("quantity"))}


def slow(batch: pa.RecordBatch) -> dict[str, Any]:
    """Adds nothing, slowly (a chunk takes 0.2 s), so a test can stop the server mid-job."""
    time.sleep(0.2)
    return {}


def explode(batch: pa.RecordBatch) -> dict[str, Any]:
    """Fails on every chunk, naming why."""
    raise ValueError("this deployment always fails")
