"""/v1/jobs/{id}/artifacts: a job's files; /v1/datasets: uploads (docs/api.md, "Artifacts", "Uploads").

An upload is streamed to a temporary file (TMPDIR) and counted as it arrives: past
GANTRY_API_MAX_UPLOAD_BYTES it answers 413 at once and the file is removed; only a whole, checked
.zip or .npz reaches object storage. Two forms: the file as the raw body with `?name=` (curl
--data-binary, a browser's fetch), or multipart/form-data with one `file` part (curl -F, an HTML form).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, RedirectResponse
from starlette.datastructures import UploadFile
from starlette.types import Message

from gantry.api.files import MEDIA_TYPES, ArtifactFile, DatasetView, inline
from gantry.api.http.deps import BODY, ERRORS, INVALID, NOT_FOUND, Svc
from gantry.api.http.models import Problem
from gantry.jobs.errors import InvalidInput

SLOW_THREADS = 4  # uploads' checks and copies to storage, apart from the requests' threads
router = APIRouter(prefix="/v1", responses=ERRORS)

_BINARY = {"schema": {"type": "string", "format": "binary"}}
_ARTIFACT: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the file (from file storage)",
        "content": {media: _BINARY for media in (*MEDIA_TYPES, "application/octet-stream")},
    },
    307: {"description": "S3 storage: `Location` is a presigned URL, valid GANTRY_API_ARTIFACT_URL_SECONDS"},
}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/octet-stream": _BINARY,
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                    "additionalProperties": False,  # one part: more fields answer 400
                }
            },
        },
    }
}
_TOO_LARGE: dict[int | str, dict[str, Any]] = {
    413: {"model": Problem, "description": "over GANTRY_API_MAX_UPLOAD_BYTES; nothing is kept"}
}


@router.get(
    "/jobs/{job_id}/artifacts", response_model=list[ArtifactFile], tags=["artifacts"], responses=NOT_FOUND
)
def list_artifacts(svc: Svc, job_id: str) -> list[ArtifactFile]:
    """Every file of the job (what `gantry download` copies), with its kind and size, in key order."""
    return svc.artifacts(job_id)


@router.get(
    "/jobs/{job_id}/artifacts/{key:path}",
    tags=["artifacts"],
    response_class=Response,
    responses=NOT_FOUND | _ARTIFACT,
)
def get_artifact(svc: Svc, job_id: str, key: str) -> Response:
    """One file, `key` exactly as the listing gives it: streamed, or on S3 a redirect to a
    short-lived presigned URL. Any other key answers 404."""
    source = svc.open_artifact(job_id, key)
    if source.url is not None:
        return RedirectResponse(source.url, status_code=307, headers={"Cache-Control": "no-store"})
    assert source.path is not None
    return FileResponse(
        source.path,
        media_type=source.media_type,
        filename=PurePosixPath(source.key).name,
        content_disposition_type="inline" if inline(source.media_type) else "attachment",
        headers={"X-Content-Type-Options": "nosniff"},
    )


@router.post(
    "/datasets",
    status_code=201,
    response_model=DatasetView,
    tags=["datasets"],
    responses=INVALID | {400: BODY[400]} | _TOO_LARGE,
    openapi_extra=_UPLOAD_BODY,
)
async def upload(
    request: Request,
    svc: Svc,
    name: Annotated[
        str | None,
        Query(description="the upload's name, e.g. flowers.zip; a multipart upload defaults to its filename"),
    ] = None,
) -> DatasetView:
    """Upload a .zip of images or an .npz (`images` uint8 N x H x W x C) to train on: the answer's
    `dataset` is the URI `POST /v1/jobs` takes. Names are never reused."""
    limit: int = request.app.state.settings.api_max_upload_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, _too_large(limit))
    multipart = request.headers.get("content-type", "").startswith("multipart/form-data")
    if name is None and not multipart:
        raise InvalidInput(
            "name", "name the upload: ?name=flowers.zip (or send multipart/form-data with a `file` part)"
        )
    if name is not None:  # refused before a byte of the body is read
        await run_in_threadpool(svc.check_new_dataset, name)
    fd, spooled = tempfile.mkstemp(prefix="gantry-upload-")
    os.close(fd)
    path = Path(spooled)
    try:
        if multipart:
            name = await _receive_multipart(request, path, limit, name)
        else:
            await _receive_raw(request, path, limit)
        assert name is not None
        return await anyio.to_thread.run_sync(svc.add_dataset, name, path, limiter=_slow_threads(request))
    finally:
        path.unlink(missing_ok=True)


def _slow_threads(request: Request) -> anyio.CapacityLimiter:
    """The threads uploads take turns on (SLOW_THREADS), apart from the requests' own: a few large
    uploads never hold up the API's other requests."""
    state = request.app.state
    if getattr(state, "slow_threads", None) is None:
        state.slow_threads = anyio.CapacityLimiter(SLOW_THREADS)
    limiter: anyio.CapacityLimiter = state.slow_threads
    return limiter


@router.get("/datasets", response_model=list[DatasetView], tags=["datasets"])
def list_datasets(svc: Svc) -> list[DatasetView]:
    """Your uploads (every owner's for an admin), with the URI each trains as."""
    return svc.datasets()


@router.delete("/datasets/{name}", status_code=204, tags=["datasets"], responses=NOT_FOUND)
def delete_dataset(svc: Svc, name: str) -> Response:
    """Remove one of your uploads (a job that has not read it yet will fail to)."""
    svc.delete_dataset(name)
    return Response(status_code=204)


def _too_large(limit: int) -> str:
    return f"the upload is over {limit:,} bytes (GANTRY_API_MAX_UPLOAD_BYTES); nothing was kept"


async def _counted(request: Request, limit: int) -> AsyncIterator[bytes]:
    seen = 0
    async for chunk in request.stream():
        seen += len(chunk)
        if seen > limit:
            raise HTTPException(413, _too_large(limit))
        yield chunk


async def _receive_raw(request: Request, path: Path, limit: int) -> None:
    with path.open("wb") as out:
        async for chunk in _counted(request, limit):
            await run_in_threadpool(out.write, chunk)


async def _receive_multipart(request: Request, path: Path, limit: int, name: str | None) -> str:
    """The `file` part into `path`; returns the upload's name (`name`, else the part's filename).
    Starlette's parser spools the part to disk itself; the body is counted as it arrives."""
    seen = 0

    async def counted_receive() -> Message:
        nonlocal seen
        message = await request.receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise HTTPException(413, _too_large(limit))
        return message

    form = await Request(request.scope, counted_receive).form(max_files=1, max_fields=0)
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise InvalidInput("file", "a multipart upload needs one `file` part holding the .zip or .npz")
        with path.open("wb") as out:
            while chunk := await part.read(1 << 20):
                await run_in_threadpool(out.write, chunk)
        return name if name is not None else (part.filename or "")
    finally:
        await form.close()
