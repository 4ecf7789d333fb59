"""The process's heap: settled once it has started (a server, or a worker warmed up for its first job), and big
buffers given back to the system when freed."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
MMAP_THRESHOLD = 4 << 20


def return_big_buffers() -> bool:
    """Make glibc's malloc serve every allocation of `MMAP_THRESHOLD` bytes or more (a chunk's CSV, an S3 part)
    with its own mapping, given back to the system when freed; whether it could (glibc only). Left alone,
    glibc raises that threshold to the largest block freed so far, after which such buffers come from its
    per-thread arenas and stay there: a job's peak RSS then grows with the data it moves."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False


def settle() -> None:
    """Exempt everything alive now from the cyclic garbage collector: the app, schemas, SQLAlchemy metadata and
    botocore's S3 model live as long as the process, and a full collection would walk them all, holding the GIL
    in the middle of a request or a job's step."""
    gc.collect()
    gc.freeze()
