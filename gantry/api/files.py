"""A job's artifacts and the users' uploaded data sets, for the service layer (docs/api.md,
"Artifacts" and "Uploads"). Torch-free and numpy-free: the API image has neither.

Artifacts: a job's listing is every object under `jobs/<id>/`, exactly what `gantry download`
copies. Most have an artifact row (the worker records each checkpoint, grid, image, metrics file); the
few written without one (`spec.json`) are listed too, their kind taken from where the key lies. Keys
are the full object keys, as `status --json` gives them, so one key names one artifact everywhere.

Uploads: a .zip of images or an .npz, checked here before it is stored under `uploads/<owner>/<name>`
(central directory readable, member names that cannot leave a folder, the data limits the worker
would apply, counted from the headers). Decoding the images is left to the worker, which has Pillow.
"""

from __future__ import annotations

import ast
import hashlib
import logging
import math
import mimetypes
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from pydantic import BaseModel

from gantry.jobs.errors import GantryError, InvalidInput, JobNotFound
from gantry.jobs.keys import job_prefix, upload_prefix
from gantry.jobs.settings import Settings
from gantry.jobs.storage import (
    FileStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    UnsafeKey,
    check_key,
    safe_join,
    safe_relative_key,
)

log = logging.getLogger(__name__)


class ArtifactFile(BaseModel):
    """One object of a job: its key (pass it back as it is), what it is, its size."""

    key: str
    kind: str
    bytes: int


class DatasetView(BaseModel):
    """An uploaded data set; `dataset` is the URI a train job takes."""

    name: str
    owner: str
    dataset: str
    bytes: int
    sha256: str | None = None  # in the upload's answer only: the listing does not read the objects


@dataclass(frozen=True)
class ArtifactSource:
    """Where an artifact's bytes are: a local file to stream (file storage) or a short-lived URL to
    redirect to (S3)."""

    key: str
    media_type: str
    bytes: int
    path: Path | None = None
    url: str | None = None


class ArtifactNotFound(JobNotFound):
    """A key that is not in the job's listing: 404, as a missing job is."""

    def __init__(self, job_id: str, key: str) -> None:
        GantryError.__init__(self, f"job {job_id} has no artifact {key!r}")
        self.job_id = job_id


class DatasetNotFound(JobNotFound):
    def __init__(self, name: str) -> None:
        GantryError.__init__(self, f"no such upload: {name!r}")
        self.job_id = name


# -- artifacts ---------------------------------------------------------------------------------

_KINDS = {  # the kind of an object without an artifact row, by its folder under jobs/<id>/
    "checkpoints": "checkpoint",
    "samples": "samples",
    "images": "image",
    "eval": "evaluation",
    "metrics": "metrics",
}
# The content types artifacts are served with (the OpenAPI schema lists them); anything else is
# application/octet-stream, saved rather than shown.
MEDIA_TYPES = ("image/png", "image/jpeg", "application/json", "application/x-ndjson", "text/plain")
_INLINE = MEDIA_TYPES


def _kind_of(relative: str) -> str:
    if relative == "spec.json":
        return "spec"
    if relative.endswith("latest.json"):
        return "manifest"
    if relative.startswith("metrics"):
        return "metrics"
    return _KINDS.get(relative.split("/", 1)[0], "other")


def media_type(key: str) -> str:
    guessed = "application/x-ndjson" if key.endswith(".jsonl") else mimetypes.guess_type(key)[0]
    return guessed if guessed in MEDIA_TYPES else "application/octet-stream"


def inline(media: str) -> bool:
    """Whether a browser may show it in place (images, text, JSON) rather than save it."""
    return media in _INLINE


def job_files(objects: ObjectStore, job_id: str, recorded: dict[str, tuple[str, int]]) -> list[ArtifactFile]:
    """Every object under `jobs/<job_id>/`, in key order; `recorded` is the artifact rows (key ->
    kind, bytes). A key that would leave the job's folder (`..`, absolute, backslash, encoded) is
    left out and logged: it is never offered, so never served."""
    prefix = job_prefix(job_id) + "/"
    found = []
    for key in objects.list(prefix):
        try:
            relative = safe_relative_key(key, prefix)
        except UnsafeKey:
            log.warning("job %s: object %r is not listed (its key leaves the job's folder)", job_id, key)
            continue
        if key in recorded:
            kind, size = recorded[key]
        else:
            try:
                kind, size = _kind_of(relative), objects.size(key)
            except ObjectNotFound:  # removed since the listing (retention)
                continue
        found.append(ArtifactFile(key=key, kind=kind, bytes=size))
    return found


def open_file(objects: ObjectStore, job_id: str, file: ArtifactFile, *, url_seconds: int) -> ArtifactSource:
    """Where to read `file` (one of `job_files`' answers) from."""
    media = media_type(file.key)
    if isinstance(objects, S3Store):
        url = objects.presigned_get(file.key, seconds=url_seconds, content_type=media)
        return ArtifactSource(key=file.key, media_type=media, bytes=file.bytes, url=url)
    if isinstance(objects, FileStore):
        prefix = job_prefix(job_id) + "/"
        # Resolved inside the job's own folder: a symbolic link out of it is refused.
        path = safe_join(objects.local_path(job_prefix(job_id)), safe_relative_key(file.key, prefix))
        if not path.is_file():
            raise ArtifactNotFound(job_id, file.key)
        return ArtifactSource(key=file.key, media_type=media, bytes=path.stat().st_size, path=path)
    raise TypeError(f"cannot serve objects from {type(objects).__name__}")


# -- uploads -----------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\.(zip|npz)", re.IGNORECASE)
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")  # what the worker reads from a .zip
_NPY_HEADER_MAX = 1 << 16


def check_dataset_name(name: str) -> str:
    if not _NAME.fullmatch(name) or ".." in name:
        raise InvalidInput(
            "name",
            f"{name!r}: 1-104 letters, digits and ._- (starting with a letter or digit), ending in .zip or .npz",
        )
    return name


def dataset_key(owner: str, name: str) -> str:
    return f"{upload_prefix(owner)}/{check_dataset_name(name)}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_archive(path: Path, name: str, settings: Settings) -> None:
    """Refuse (InvalidInput "file") what the worker could not train on: not a zip (an .npz is one),
    an unreadable central directory, a member name that would leave a folder, more members or
    bytes (as the headers declare them, decompressed) than GANTRY_MAX_DATA_* allow, a .zip without
    images, an .npz without a uint8 `images` array."""
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            raise InvalidInput("file", f"{name}: not a .zip or .npz file (an .npz is a zip of .npy arrays)")
    try:
        with zipfile.ZipFile(path) as archive:
            members = [info for info in archive.infolist() if not info.is_dir()]
            for info in archive.infolist():
                check_key(info.filename, field="file", folder=info.is_dir())
            if len(members) > settings.max_data_files:
                raise InvalidInput(
                    "file",
                    f"{name}: {len(members):,} files is over the limit of {settings.max_data_files:,} "
                    "(GANTRY_MAX_DATA_FILES)",
                )
            total = 0
            for info in members:
                total += info.file_size
                if info.file_size > settings.max_data_file_bytes:
                    raise InvalidInput(
                        "file",
                        f"{name}: {info.filename} is {info.file_size:,} bytes decompressed, over the limit "
                        f"of {settings.max_data_file_bytes:,} (GANTRY_MAX_DATA_FILE_BYTES)",
                    )
            if total > settings.max_data_bytes:
                raise InvalidInput(
                    "file",
                    f"{name}: {total:,} bytes decompressed is over the limit of {settings.max_data_bytes:,} "
                    "(GANTRY_MAX_DATA_BYTES)",
                )
            if name.lower().endswith(".npz"):
                _check_npz(archive, name, settings)
            elif not any(_is_image(info.filename) for info in members):
                raise InvalidInput("file", f"{name}: holds no images ({', '.join(_IMAGE_SUFFIXES)})")
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidInput("file", f"{name}: not a readable zip ({exc})") from None


def _is_image(member: str) -> bool:
    parts = PurePosixPath(member).parts
    hidden = any(p.startswith(".") or p == "__MACOSX" for p in parts)
    return not hidden and member.lower().endswith(_IMAGE_SUFFIXES)


def _check_npz(archive: zipfile.ZipFile, name: str, settings: Settings) -> None:
    """`images` is uint8 N x H x W [x C] (C = 1 or 3), within the limits, from its .npy header."""
    names = set(archive.namelist())
    member = "images.npy" if "images.npy" in names else "images"
    if member not in names:
        found = ", ".join(sorted(n.removesuffix(".npy") for n in names)) or "nothing"
        raise InvalidInput("file", f"{name}: no 'images' array (found {found}); expected uint8 N x H x W x C")
    with archive.open(member) as f:
        header = _npy_header(f, name)
    shape, descr = header.get("shape"), header.get("descr")
    if descr not in ("|u1", "u1", "<u1", ">u1"):
        raise InvalidInput("file", f"{name}: images are {descr}; expected uint8 (0..255)")
    if (
        not isinstance(shape, tuple)
        or len(shape) not in (3, 4)
        or not all(isinstance(n, int) and n > 0 for n in shape)
        or (len(shape) == 4 and shape[3] not in (1, 3))
    ):
        raise InvalidInput("file", f"{name}: images have shape {shape}; expected N x H x W x C (C 1 or 3)")
    if shape[0] > settings.max_data_files:
        raise InvalidInput(
            "file",
            f"{name}: {shape[0]:,} images is over the limit of {settings.max_data_files:,} (GANTRY_MAX_DATA_FILES)",
        )
    if shape[1] * shape[2] > settings.max_input_pixels:
        raise InvalidInput(
            "file",
            f"{name}: {shape[2]}x{shape[1]} images are over the limit of {settings.max_input_pixels:,} pixels "
            "(GANTRY_MAX_INPUT_PIXELS)",
        )
    if math.prod(shape) > settings.max_data_bytes:
        raise InvalidInput(
            "file",
            f"{name}: {math.prod(shape):,} bytes of images is over the limit of {settings.max_data_bytes:,} "
            "(GANTRY_MAX_DATA_BYTES)",
        )


def _npy_header(f: IO[bytes], name: str) -> dict[str, Any]:
    """The header dict of an .npy stream (numpy's format: magic, version, length, a Python literal),
    read with `ast.literal_eval`, which evaluates no code."""
    magic = f.read(8)
    if len(magic) != 8 or magic[:6] != b"\x93NUMPY" or magic[6] not in (1, 2, 3):
        raise InvalidInput("file", f"{name}: 'images' is not an .npy array")
    size = int.from_bytes(f.read(2 if magic[6] == 1 else 4), "little")
    try:
        if size > _NPY_HEADER_MAX:
            raise ValueError("header too long")
        header = ast.literal_eval(f.read(size).decode("latin-1"))
        if not isinstance(header, dict):
            raise ValueError("not a dict")
    except (ValueError, SyntaxError, MemoryError, RecursionError) as exc:
        raise InvalidInput("file", f"{name}: 'images' has an unreadable .npy header ({exc})") from None
    return header
