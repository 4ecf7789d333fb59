"""The benchmark itself runs: a short `python -m bench` on SQLite writes its table, data and plot, and every
scenario it drives is answered without a single non-2xx (the suite never asserts a time: only shape)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (make test installs it from Debian)")
def test_bench_runs_every_scenario_and_writes_its_report(tmp_path: Path) -> None:
    args = ["--backend", "sqlite", "--duration", "1", "--scale-duration", "1", "--warm-up", "0", "--sizes", "200,400"]
    args += ["--pace", "10"]  # every scenario answers, without loading both cores for half a minute
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--connections", "4", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (table,) = tmp_path.glob("*-sqlite.md")
    results = json.loads(table.with_suffix(".json").read_text())
    floors = ("floor-get", "floor-page", "floor-post")
    assert [r["scenario"] for r in results] == [
        *floors,
        *("healthz", "get", "list", "get-shared", "list-shared", "create", "update"),
        *(f"{floor}-again" for floor in floors),
        *(f"{kind}@{size}" for size in (200, 400) for kind in ("get", "list", "name", "search", "search-prefix")),
    ]
    # Each scenario against its own floor route of the bare app, the faster of that floor's two measurements.
    baseline = {f: max(r["rps"] for r in results if r["scenario"].startswith(f)) for f in floors}
    against = {"healthz": "floor-get", "get": "floor-get", "list": "floor-page", "create": "floor-post"}
    against |= {"get-shared": "floor-get", "list-shared": "floor-page"}
    against |= {"update": "floor-post", "get@200": "floor-get", "get@400": "floor-get"}
    against |= {"list@200": "floor-page", "list@400": "floor-page"}
    against |= {f"name@{size}": "floor-get" for size in (200, 400)} | {f"search@{s}": "floor-page" for s in (200, 400)}
    against |= {f"search-prefix@{size}": "floor-page" for size in (200, 400)}
    for r in results:
        assert r["errors"] == 0, r
        assert r["rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] and r["cpu_us"] > 0, r
        floor = against.get(r["scenario"], r["scenario"].removesuffix("-again"))
        assert r["ratio"] == pytest.approx(r["rps"] / baseline[floor])
    text = table.read_text()
    for r in results:
        assert f"| {r['scenario']} | {r['store_size']} | {r['rps']:.0f} |" in text
    assert "Audit: each write also appends one hash-chained record" in text
    assert "get: p50 at 400 is" in text and "list: p50 at 400 is" in text and "name: p50 at 400 is" in text
    assert "search: p50 at 400 is" in text and "search-prefix: p50 at 400 is" in text
    assert table.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
