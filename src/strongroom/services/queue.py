"""The PostgreSQL job queue (procrastinate): what a server defers and what a `strongroom worker` runs.

procrastinate keeps its jobs in the store's own PostgreSQL database, so workers need nothing beside it; its
schema is applied by Strongroom when a server or worker starts and finds it missing (under an advisory lock).
A worker sends a heartbeat every `worker_heartbeat` seconds; a periodic task of every worker retries the tasks
of workers silent for `worker_stalled_after` seconds, so a chunk whose worker vanished runs again (a task put back
on the queue is announced by no notification: workers find it when they next look, every `worker_poll_interval`
seconds). On SIGTERM
(or SIGINT) a worker takes no new task, finishes the chunks it is running, and gives a job's producer back to
the queue (another worker starts it again, in a new generation) rather than reading the rest of the intake.
Producers have a queue and slots of their own beside the chunks' (a producer waits for its chunks), and every
slot has a thread.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from strongroom.config import Settings

QUEUE = "strongroom-jobs"
# Producers wait on their jobs' chunks (at most numConcurrent in flight): in the chunks' slots, two jobs' producers
# would hold a two-slot worker's both slots while their chunks waited for a free one, and neither job would move.
PRODUCE_QUEUE = "strongroom-produce"
_QUEUES = {"strongroom.produce": PRODUCE_QUEUE}
_log = logging.getLogger("strongroom.worker")


def conninfo(database_url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def ensure_schema(services: Any) -> None:
    """Apply procrastinate's schema to the store's database unless it is there."""
    from procrastinate.schema import SchemaManager

    if services.jobs.jobs.ensure_queue_schema(SchemaManager.get_schema()):
        _log.info("applied procrastinate's schema")


def deferrer(settings: Settings) -> Any:
    """A function `defer(task name, arguments, lock)` that queues a task from synchronous code (its own pool),
    and the app to close with it. A lock both keeps a second copy from being queued and runs one at a time."""
    import procrastinate
    from procrastinate import exceptions

    connector = procrastinate.SyncPsycopgConnector(
        conninfo=conninfo(settings.resolved_database_url), min_size=1, max_size=2
    )
    app = procrastinate.App(connector=connector)
    app.open()

    def defer(task: str, arguments: dict[str, Any], lock: str | None) -> None:
        options: dict[str, Any] = {"queue": _QUEUES.get(task, QUEUE)}
        if lock is not None:
            options.update(lock=lock, queueing_lock=lock)
        try:
            app.configure_task(name=task, **options).defer(**arguments)
        except exceptions.AlreadyEnqueued:
            return

    return defer, app


def worker_name() -> str:
    """This process as the chunk table names it."""
    return f"{socket.gethostname()}:{os.getpid()}"


def run_worker(services: Any, settings: Settings, concurrency: int) -> None:
    """Run up to `concurrency` chunk (and finish) tasks at once, and beside them up to `concurrency` jobs'
    producers, until SIGTERM or SIGINT (then finish the running chunks and give the producers back)."""
    import procrastinate

    from strongroom.services import heap
    from strongroom.services.batch import warm_up
    from strongroom.services.runners import KEEP_OUTPUT_SECONDS, QueuedJobs

    ensure_schema(services)
    services.jobs.sweep_spools()  # what ended jobs left while no worker ran
    warm_up()
    heap.settle()
    defer, sync_app = deferrer(settings)
    steps = QueuedJobs(services.jobs, defer, worker_name())
    services.jobs.queued = steps
    connector = procrastinate.PsycopgConnector(
        conninfo=conninfo(settings.resolved_database_url), min_size=1, max_size=2 * concurrency + 2
    )
    app = procrastinate.App(connector=connector)

    @app.task(name="strongroom.produce", queue=PRODUCE_QUEUE)
    def produce(job_id: str) -> None:
        steps.produce(job_id)

    @app.task(name="strongroom.chunk", queue=QUEUE)
    def chunk(job_id: str, number: int, generation: int) -> None:
        steps.chunk(job_id, number, generation)

    @app.task(name="strongroom.finish", queue=QUEUE)
    def finish(job_id: str) -> None:
        steps.finish(job_id)

    stalled = settings.worker_stalled_after

    @app.periodic(cron="* * * * * */2")
    @app.task(name="strongroom.retry_stalled", queue=QUEUE, pass_context=True)
    async def retry_stalled(context: Any, timestamp: int) -> None:
        """Run again the tasks of workers that stopped sending heartbeats."""
        manager = context.app.job_manager
        for job in await manager.get_stalled_jobs(seconds_since_heartbeat=stalled):
            _log.warning("running task %s (%s) again: its worker stopped", job.id, job.task_name)
            await manager.retry_job(job)

    del produce, chunk, finish, retry_stalled

    async def run() -> None:
        # procrastinate runs a synchronous task in the loop's default executor: one thread for every chunk slot
        # and every producer slot, or waiting producers could hold every thread (the default is cores + 4).
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(2 * concurrency + 2, thread_name_prefix="strongroom-task"))
        async with app.open_async():
            workers = [
                app._worker(  # procrastinate's own run_worker_async, with our signal handling
                    queues=[queue],
                    concurrency=concurrency,
                    name=worker_name(),
                    update_heartbeat_interval=settings.worker_heartbeat,
                    fetch_job_polling_interval=settings.worker_poll_interval,
                    stalled_worker_timeout=stalled,
                    install_signal_handlers=False,
                )
                for queue in (QUEUE, PRODUCE_QUEUE)
            ]

            def stop() -> None:
                steps.stopping.set()
                for worker in workers:
                    worker.stop()

            async def close_idle() -> None:
                while True:
                    await asyncio.sleep(KEEP_OUTPUT_SECONDS / 3)
                    await loop.run_in_executor(None, steps.close_idle)

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop)
            sweeper = asyncio.ensure_future(close_idle())
            try:
                await asyncio.gather(*(worker.run() for worker in workers))
            finally:
                sweeper.cancel()

    try:
        asyncio.run(run())
    finally:
        steps.close()
        sync_app.close()
