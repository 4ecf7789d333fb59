"""`strongroom worker`: run batch jobs' tasks from the PostgreSQL queue (any number of them, on any machine that
shares the data directory)."""

from __future__ import annotations

from typing import Annotated

import typer

from strongroom.cli.output import fail, out
from strongroom.cli.store import store


def worker(
    concurrency: Annotated[
        int,
        typer.Option(
            help="Chunks this worker runs at once (and, beside them, as many jobs' producers).", min=1, max=1024
        ),
    ] = 2,
) -> None:
    """Run batch jobs' chunks until SIGTERM or SIGINT (the running ones are finished first)."""
    from strongroom.cli.store import settings

    config = settings()
    if config.resolved_database_url.startswith("sqlite"):
        fail("strongroom worker needs a PostgreSQL store (STRONGROOM_DATABASE_URL); on SQLite the server runs jobs")
    from strongroom.services import queue

    with store(config) as services:
        out.print(f"strongroom worker {queue.worker_name()}: running batch jobs ({concurrency} at once)")
        queue.run_worker(services, config, concurrency)
