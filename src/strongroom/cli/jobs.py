"""`strongroom jobs …`: submit batch jobs and follow them with a progress bar (over HTTP, like `credentials`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from strongroom.cli.credentials import EndpointOpt, TokenOpt, session
from strongroom.cli.output import fail, out, plain, visible

if TYPE_CHECKING:
    from strongroom.client.jobs import BatchJob

app = typer.Typer(help="Run batch jobs that read and write through stored credentials.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the final job as JSON.")]


@app.callback()
def connection(ctx: typer.Context, endpoint: EndpointOpt = None, token: TokenOpt = None) -> None:
    """Remember the connection options for the subcommand."""
    ctx.ensure_object(dict).update(endpoint=endpoint, token=token)


def _json_object(text: str, *, not_json: str, not_object: str) -> dict[str, Any]:
    """The JSON object `text` holds; refused with `not_json` when it is not JSON, `not_object` when not an object."""
    try:
        found = json.loads(text)
    except ValueError:
        fail(not_json)
    if not isinstance(found, dict):
        fail(not_object)
    return found


def _adapter(value: str | None, option: str) -> dict[str, Any] | None:
    """An adapter's settings from `--intake`/`--output`: `localFile`, or a JSON object."""
    if value is None:
        return None
    if value == "localFile":
        return {"type": "localFile"}
    return _json_object(
        value,
        not_json=f'{option} must be localFile or a JSON object such as \'{{"type": "jdbc", ...}}\'',
        not_object=f"{option} must be a JSON object",
    )


def _spec(spec_file: str | None, deployment: str | None, intake: str | None, output: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if spec_file is not None:
        text = sys.stdin.read() if spec_file == "-" else Path(spec_file).read_text()
        spec = _json_object(
            text, not_json=f"--spec {spec_file}: not JSON", not_object=f"--spec {spec_file}: must be a JSON object"
        )
    if deployment is not None:
        spec["deploymentId"] = deployment
    for key, value, option in (("intakeSettings", intake, "--intake"), ("outputSettings", output, "--output")):
        found = _adapter(value, option)
        if found is not None:
            spec[key] = found
    spec.setdefault("deploymentId", "passthrough")
    return spec


def _follow(job: BatchJob, as_json: bool, quiet: bool) -> None:
    """Show a progress bar from percentageCompleted until the job ends; exit 1 unless it completed."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from strongroom.client.jobs import JobFailedError

    try:
        with Progress(
            TextColumn("{task.description}", markup=False),  # the server's words: no markup, controls escaped
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TimeElapsedColumn(),
            console=Console(stderr=True, markup=False, highlight=False, emoji=False),
            disable=quiet,
        ) as bar:
            task = bar.add_task(visible(f"job {job.id}"), total=100)
            job.wait(
                progress=lambda j: bar.update(task, completed=j.percentage_completed, description=visible(j.status))
            )
    except JobFailedError as exc:
        fail(exc.message)
    if as_json:
        print(json.dumps(job.data))
    else:
        out.print(f"Job {job.id} {job.status}: {job.status_details}")


@app.command("run")
def jobs_run(
    ctx: typer.Context,
    spec_file: Annotated[
        str | None, typer.Option("--spec", metavar="FILE|-", help="The job's JSON body (batchPredictions/).")
    ] = None,
    deployment: Annotated[str | None, typer.Option("--deployment", help="Deployment id or name.")] = None,
    intake: Annotated[str | None, typer.Option("--intake", help="localFile, or intakeSettings as JSON.")] = None,
    output: Annotated[str | None, typer.Option("--output", help="localFile, or outputSettings as JSON.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="The CSV to upload for a localFile intake.")] = None,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="Where to write a localFile output (default: stdout).")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Submit and print the job's id; do not wait.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a job (a JSON spec and/or flags), upload its CSV, show its progress and fetch its output."""
    from strongroom.client.jobs import BatchJob

    spec = _spec(spec_file, deployment, intake, output)
    with session(ctx, endpoint, token):
        job = BatchJob.create(spec, csv=csv)
        if detach:
            plain(job.id)
            return
        local_output = "download" in job.links or (spec.get("outputSettings") or {}).get("type", "localFile") == (
            "localFile"
        )
        if local_output:
            if out_file is None:
                job.download(sys.stdout.buffer)
            else:
                with out_file.open("wb") as sink:
                    job.download(sink)
        _follow(job, as_json, quiet)


@app.command("watch")
def jobs_watch(
    ctx: typer.Context,
    job_id: str,
    quiet: Annotated[bool, typer.Option("--quiet", help="No progress bar.")] = False,
    as_json: JsonOpt = False,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Follow a job until it ends, with a progress bar; exit 1 unless it completed."""
    from strongroom.client.jobs import BatchJob

    with session(ctx, endpoint, token):
        _follow(BatchJob.get(job_id), as_json, quiet)


@app.command("list")
def jobs_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only these statuses (comma-separated).")] = None,
    endpoint: EndpointOpt = None,
    token: TokenOpt = None,
) -> None:
    """Your jobs, newest first."""
    from strongroom.cli.output import print_table, table
    from strongroom.client.jobs import BatchJob

    with session(ctx, endpoint, token):
        jobs = BatchJob.list(status)
    rows = table("ID", "STATUS", "%", "DETAILS")
    for job in jobs:
        rows.add_row(job.id, job.status, f"{job.percentage_completed:.0f}", job.status_details)
    print_table(rows)
