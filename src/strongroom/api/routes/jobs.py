"""`/deployments/` and `/batchPredictions/`: batch jobs in DataRobot's shapes, their CSV upload and download.

A FAILED job answers `GET batchPredictions/{id}/` with **409**, its message the failure and its `job` the job
itself: the DataRobot client's waiter (`job.wait_for_completion()`) stops only on a status of `COMPLETED` or
one starting with `error`/`abort`, so a 200 with `FAILED` would keep it polling until `max_wait`; a 4xx makes
it raise `ClientError` carrying the message on its next poll. The job list (`?status=FAILED`) still shows it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.responses import Response, StreamingResponse

from strongroom.api import http
from strongroom.api.errors import JSONResponse
from strongroom.api.openapi import answers, json_body
from strongroom.api.paging import paged, window
from strongroom.api.pipeline import Call, Endpoint
from strongroom.errors import Conflict, InvalidInput
from strongroom.services.jobs import STATUSES

_BUFFER = 1 << 20


def _root(call: Call) -> str:
    """The API root as an absolute URL, for a job's links."""
    request = call.request
    return f"{http.base_url(request, call.pipeline.settings.public_url)}{request.scope.get('root_path', '')}/api/v2"


async def list_deployments(call: Call) -> Response:
    offset, limit = window(call)
    jobs, who = call.services.jobs, call.principal
    found = await call.read(lambda: jobs.deployments(who))
    data = found[offset : offset + limit]
    return paged(call, data, len(data), len(found), offset, limit)


async def get_deployment(call: Call) -> Response:
    deployment_id, jobs, who = call.path("deploymentId"), call.services.jobs, call.principal
    return JSONResponse(await call.read(lambda: jobs.deployment(who, deployment_id)))


async def create_job(call: Call) -> Response:
    body = await call.body()
    jobs, who, root = call.services.jobs, call.principal, _root(call)
    job = await call.write(lambda: jobs.create(who, body, root))
    return JSONResponse(job, status_code=202, headers={"Location": job["links"]["self"]})


async def list_jobs(call: Call) -> Response:
    offset, limit = window(call)
    statuses = [s for v in call.request.query_params.getlist("status") for s in v.split(",")]
    jobs, who, root = call.services.jobs, call.principal, _root(call)
    data, total = await call.read(lambda: jobs.page(who, statuses, offset, limit, root))
    return paged(call, data, len(data), total, offset, limit)


async def get_job(call: Call) -> Response:
    job_id, jobs, who, root = call.path("jobId"), call.services.jobs, call.principal, _root(call)
    job = jobs.wire(await call.read(lambda: jobs.get(who, job_id)), root)
    if job["status"] == "FAILED":
        message = f"batch job failed: {job['statusDetails']}"
        return JSONResponse({"message": message, "errors": {"status": "FAILED"}, "job": job}, status_code=409)
    return JSONResponse(job)


async def abort_job(call: Call) -> Response:
    job_id, jobs, who, root = call.path("jobId"), call.services.jobs, call.principal, _root(call)
    row = await call.write(lambda: jobs.abort(who, job_id))
    return JSONResponse(jobs.wire(row, root), status_code=202)


def _over(limit: int, used: int, part: int | None) -> InvalidInput:
    """The 422 of an upload that would take the job's intake past `limit` (`used`: bytes its other parts hold)."""
    if not used:
        msg = f"the upload exceeds the server's limit of {limit} bytes"
    else:
        what = "the upload" if part is None else f"part {part}"
        msg = f"{what} takes the job's upload past the server's limit of {limit} bytes ({used} received before)"
    return InvalidInput(f"csvUpload: {msg}", {"csvUpload": msg})


async def _spool(call: Call, path: Path, part: int | None = None) -> int:
    """Stream the request body to `path` (aside, then renamed), never holding more than a buffer of it; the
    number of newlines in it. 422 naming the limit when the job's whole upload (every part) would pass
    `job_upload_max_bytes`; 408 (the connection closed, the partial file deleted) when `body_timeout` seconds
    pass without a byte of it: an upload may take as long as it keeps coming. 409 if the job ended meanwhile."""
    settings, jobs = call.pipeline.settings, call.services.jobs
    limit, idle = settings.job_upload_max_bytes, settings.body_timeout
    loop = asyncio.get_running_loop()
    aside = path.with_name(path.name + ".partial")
    try:
        used = await call.write(lambda: jobs.upload_used(path))
        handle = await loop.run_in_executor(call.pipeline.executor, lambda: open(aside, "wb", opener=_private))  # noqa: SIM115
    except FileNotFoundError:  # its spool was removed: the job ended (aborted, or its upload expired)
        raise await _ended(call) from None
    size = lines = 0
    buffer = bytearray()
    try:
        async with asyncio.timeout(idle) as deadline:
            async for piece in call.request.stream():
                size += len(piece)
                if used + size > limit:
                    raise _over(limit, used, part)
                lines += piece.count(b"\n")
                buffer += piece
                if len(buffer) >= _BUFFER:
                    data, buffer = bytes(buffer), bytearray()
                    deadline.reschedule(None)  # the server's own write is not the client's wait
                    await loop.run_in_executor(call.pipeline.executor, handle.write, data)
                deadline.reschedule(loop.time() + idle)
        if buffer:
            await loop.run_in_executor(call.pipeline.executor, handle.write, bytes(buffer))
    except BaseException as exc:
        handle.close()
        aside.unlink(missing_ok=True)
        if isinstance(exc, TimeoutError):
            msg = f"no part of the upload arrived for {idle:g} s"
            raise http.RequestTimeout(f"csvUpload: {msg}", {"csvUpload": msg}) from None
        raise
    await loop.run_in_executor(call.pipeline.executor, handle.close)
    try:
        os.replace(aside, path)
        used = await call.write(lambda: jobs.upload_used(path))  # again: parts sent side by side
    except FileNotFoundError:
        raise await _ended(call) from None
    if used + size > limit:
        path.unlink(missing_ok=True)
        raise _over(limit, used, part)
    if size and not buffer.endswith(b"\n") and lines == 0:
        lines = 1
    return lines


async def _ended(call: Call) -> Exception:
    """What an upload into a spool that was removed answers: the job's own refusal (409: it has ended)."""
    jobs, who, job_id = call.services.jobs, call.principal, call.path("jobId")
    try:
        await call.read(lambda: jobs.upload_target(who, job_id, None))
    except Exception as exc:  # the refusal to answer with
        return exc
    msg = "the job's upload was removed meanwhile; send it again"
    return Conflict(f"csvUpload: {msg}", {"csvUpload": msg})


def _private(path: str, flags: int) -> int:
    return os.open(path, flags, 0o600)


async def upload(call: Call) -> Response:
    job_id, jobs, who = call.path("jobId"), call.services.jobs, call.principal
    target = await call.write(lambda: jobs.upload_target(who, job_id, None))
    lines = await _spool(call, target)
    size = target.stat().st_size
    await call.write(lambda: jobs.upload_complete(who, job_id, lines, size=size))
    return JSONResponse({"message": "upload complete"}, status_code=202)


async def upload_part(call: Call) -> Response:
    job_id, jobs, who = call.path("jobId"), call.services.jobs, call.principal
    number = http.int_param({"part": call.path("part")}, "part", 0)
    target = await call.write(lambda: jobs.upload_target(who, job_id, number))
    lines = await _spool(call, target, number)
    target.with_name(target.name + ".lines").write_text(str(lines))
    size = target.stat().st_size
    await call.write(lambda: jobs.uploaded(who, job_id, size, number))
    return JSONResponse({"message": f"part {number} received"}, status_code=202)


async def finalize(call: Call) -> Response:
    job_id, jobs, who = call.path("jobId"), call.services.jobs, call.principal
    await call.write(lambda: jobs.upload_target(who, job_id, 0))

    def complete() -> None:
        lines = sum(int(p.with_name(p.name + ".lines").read_text()) for p in jobs.intake_files(job_id))
        jobs.upload_complete(who, job_id, lines, finalize=True)

    await call.write(complete)
    return JSONResponse({"message": "upload complete"}, status_code=202)


async def download(call: Call) -> Response:
    job_id, jobs, who = call.path("jobId"), call.services.jobs, call.principal
    await call.read(lambda: jobs.download_ready(who, job_id))
    loop = asyncio.get_running_loop()

    async def chunks() -> AsyncIterator[bytes]:
        """Each chunk's output in order as it is written, until the job has ended."""
        number = 0
        while True:
            path = jobs.output_file(job_id, number)
            if path.exists():
                with open(path, "rb") as handle:
                    while piece := await loop.run_in_executor(call.pipeline.executor, handle.read, _BUFFER):
                        yield piece
                number += 1
                continue
            status, total = await loop.run_in_executor(call.pipeline.executor, jobs.download_state, who, job_id)
            if path.exists():
                continue
            if status != "RUNNING" or (total is not None and number >= total):
                return
            await asyncio.sleep(0.2)

    return StreamingResponse(chunks(), media_type="text/csv")


def _ok(title: str) -> dict[str, Any]:
    return {"description": title, "content": {"application/json": {"schema": {"type": "object", "title": title}}}}


def _path(name: str, doc: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": doc, "schema": {"type": "string"}}


_JOB = "/batchPredictions/{jobId}/"
_JOB_ID = _path("jobId", "The batch job's id")
_ADAPTER = {"type": "object", "title": "Adapter settings", "properties": {"type": {"type": "string"}}}
_JOB_BODY = {
    "type": "object",
    "title": "New batch job",
    "required": ["deploymentId"],
    "properties": {
        "deploymentId": {"type": "string"},
        "intakeSettings": _ADAPTER,
        "outputSettings": _ADAPTER,
        "csvSettings": {"type": "object", "title": "CSV settings"},
        "numConcurrent": {"type": "integer", "minimum": 1},
        "chunkSize": {"type": ["integer", "string"]},
        "passthroughColumns": {"type": "array", "items": {"type": "string"}},
        "passthroughColumnsSet": {"type": "string", "enum": ["all"]},
    },
}
_CSV = {"required": True, "content": {"text/csv": {"schema": {"type": "string", "format": "binary"}}}}
ENDPOINTS = [
    Endpoint(
        "GET",
        "/deployments/",
        "read",
        list_deployments,
        doc={
            "summary": "Deployments: the built-in passthrough and the registered scoring functions",
            "responses": {"200": _ok("Deployments"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/deployments/{deploymentId}/",
        "read",
        get_deployment,
        doc={
            "summary": "One deployment",
            "parameters": [_path("deploymentId", "The deployment's id")],
            "responses": {"200": _ok("Deployment"), **answers(401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        "/batchPredictions/",
        "use",
        create_job,
        action="batchJob.create",
        doc={
            "summary": "Create a batch job (202; Location: the job); it may use only what the caller may use",
            "requestBody": json_body(_JOB_BODY),
            "responses": {"202": _ok("Batch job"), **answers(400, 401, 403, 404, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        "/batchPredictions/",
        "read",
        list_jobs,
        doc={
            "summary": "The caller's batch jobs, newest first (status= filters, repeated or comma-separated)",
            "parameters": [
                {"name": "status", "in": "query", "schema": {"type": "string", "enum": list(STATUSES)}},
                {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}},
                {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
            ],
            "responses": {"200": _ok("Batch jobs"), **answers(401, 403, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        _JOB,
        "read",
        get_job,
        doc={
            "summary": "One batch job; a FAILED job answers 409 with the failure and the job",
            "parameters": [_JOB_ID],
            "responses": {"200": _ok("Batch job"), **answers(401, 403, 404, 409, 429)},
        },
    ),
    Endpoint(
        "DELETE",
        _JOB,
        "use",
        abort_job,
        action="batchJob.abort",
        doc={
            "summary": "Abort a batch job that has not finished (202 with the job)",
            "parameters": [_JOB_ID],
            "responses": {"202": _ok("Batch job"), **answers(401, 403, 404, 429)},
        },
    ),
    Endpoint(
        "PUT",
        _JOB + "csvUpload/",
        "use",
        upload,
        action="batchJob.upload",
        doc={
            "summary": "Upload a localFile job's whole CSV intake (streamed to the server's disk)",
            "parameters": [_JOB_ID],
            "requestBody": _CSV,
            "responses": {"202": _ok("Received"), **answers(401, 403, 404, 409, 422, 429)},
        },
    ),
    Endpoint(
        "PUT",
        _JOB + "csvUpload/part/{part}/",
        "use",
        upload_part,
        action="batchJob.upload",
        doc={
            "summary": "Upload one part of a localFile job's CSV intake (each part with its header)",
            "parameters": [_JOB_ID, _path("part", "The part's number, from 0")],
            "requestBody": _CSV,
            "responses": {"202": _ok("Received"), **answers(401, 403, 404, 409, 422, 429)},
        },
    ),
    Endpoint(
        "POST",
        _JOB + "csvUpload/finalizeMultipart/",
        "use",
        finalize,
        action="batchJob.upload",
        doc={
            "summary": "Mark a multipart upload complete: the job starts",
            "parameters": [_JOB_ID],
            "responses": {"202": _ok("Complete"), **answers(401, 403, 404, 409, 422, 429)},
        },
    ),
    Endpoint(
        "GET",
        _JOB + "download/",
        "read",
        download,
        action="batchJob.download",
        doc={
            "summary": "A localFile job's output CSV, streamed in chunk order as the chunks are written; 409 before "
            "the job runs (its upload or its turn awaited) or once it has failed or been aborted",
            "parameters": [_JOB_ID],
            "responses": {
                "200": {"description": "CSV", "content": {"text/csv": {"schema": {"type": "string"}}}},
                **answers(401, 403, 404, 409, 429),
            },
        },
    ),
]
