"""The process's heap once it has started (a server, or a worker warmed up for its first job)."""

from __future__ import annotations

import gc


def settle() -> None:
    """Exempt everything alive now from the cyclic garbage collector: the app, schemas, SQLAlchemy metadata and
    botocore's S3 model live as long as the process, and a full collection would walk them all, holding the GIL
    in the middle of a request or a job's step."""
    gc.collect()
    gc.freeze()
