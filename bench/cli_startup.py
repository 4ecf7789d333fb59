"""`python -m bench.cli_startup`: how long a CLI call takes, as a ratio to `python -c pass`.

Times `strongroom --help`, `strongroom credentials list` (against a server it starts on a temporary SQLite
store) and `strongroom users list` (a local administration command on that store) N times each, and prints
the median wall time of each and its ratio to the bare interpreter's median.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.server import free_port


def median_seconds(argv: Sequence[str], env: dict[str, str], runs: int) -> float:
    """The median wall time of `runs` runs of argv (each must exit 0)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


@contextmanager
def server(data_dir: Path) -> Iterator[dict[str, str]]:
    """A `strongroom serve` on a fresh store; yields the environment a CLI user of it would have."""
    port = free_port()
    env = {**os.environ, "STRONGROOM_DATA_DIR": str(data_dir), "STRONGROOM_PORT": str(port)}
    env["STRONGROOM_LOG_LEVEL"] = "warning"
    proc = subprocess.Popen(
        [sys.executable, "-m", "strongroom", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        api = f"http://127.0.0.1:{port}/api/v2"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the server did not start")
            time.sleep(0.1)
        cli = [sys.executable, "-m", "strongroom"]
        subprocess.run([*cli, "users", "create", "bench"], env=env, check=True, capture_output=True)
        made = subprocess.run([*cli, "tokens", "create", "bench", "--json"], env=env, check=True, capture_output=True)
        yield {**env, "STRONGROOM_ENDPOINT": api, "STRONGROOM_API_TOKEN": json.loads(made.stdout)["token"]}
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print one line per command: median seconds and ratio to `python -c pass`."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=15, help="Runs per command (the median is reported).")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp) / "store") as env:
        floor = median_seconds([sys.executable, "-c", "pass"], env, args.runs)
        rows = [("python -c pass", floor)]
        local = {k: v for k, v in env.items() if k not in ("STRONGROOM_ENDPOINT", "STRONGROOM_API_TOKEN")}
        for label, command, command_env in (
            ("strongroom --help", ["--help"], env),
            ("strongroom credentials list", ["credentials", "list"], env),
            ("strongroom users list (local)", ["users", "list"], local),
        ):
            argv = [sys.executable, "-m", "strongroom", *command]
            rows.append((label, median_seconds(argv, command_env, args.runs)))
    print(f"CLI start-up, median of {args.runs} runs (ratio to `python -c pass`):")
    for label, seconds in rows:
        print(f"  {label:<30} {seconds * 1000:7.1f} ms  {seconds / floor:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
