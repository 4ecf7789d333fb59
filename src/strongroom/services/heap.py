"""The process's heap once it has started (a server, or a worker warmed up for its first job)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Exempt everything alive now from the cyclic garbage collector: the app, schemas, SQLAlchemy metadata and
    botocore's S3 model live as long as the process, and a full collection walking them held the process's GIL
    for 0.2-0.3 s at a time (a worker: in the middle of a job's steps)."""
    gc.collect()
    gc.freeze()
