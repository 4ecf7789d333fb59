"""A job's big transient buffers (chunks' CSV, S3 parts) go back to the system when freed (issue 16: peak RSS
must not grow with the data a job moves): `return_big_buffers` stops glibc from keeping them in its heap."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import sys
    from strongroom.services.heap import return_big_buffers

    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024

    if sys.argv[1] == "bounded" and not return_big_buffers():
        print("unsupported")
        sys.exit(0)
    size = 8 << 20
    first = b"x" * size
    del first  # glibc raises its mmap threshold to the largest block freed so far
    before = rss()
    second = b"x" * size
    small = [bytearray(64) for _ in range(2000)]  # allocated after it, above it in the heap
    del second
    print(round(rss() - before, 1))
    """
)


def _kept(mode: str) -> str:
    found = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, timeout=60)
    return found.stdout.strip()


def test_a_freed_big_buffer_leaves_the_process() -> None:
    bounded = _kept("bounded")
    if bounded == "unsupported":
        pytest.skip("not glibc: mallopt is not there")
    assert float(bounded) < 2, f"{bounded} MiB stayed after freeing an 8 MiB buffer"
    assert float(_kept("default")) > 6, "glibc's default no longer keeps it: this test proves nothing here"
