"""User data at a local path: an .npz, a .zip of images or a folder of images.

- .npz: `images` (uint8, N x H x W x C with C = 1 or 3, or N x H x W for grayscale), optional `labels`
  (integers, N or N x K) and `captions` (strings, N). Stored without pickle; captions must be a string
  array, e.g. `np.array(list_of_str)`.
- .zip or folder: the pictures inside, with labels from sub-folders and captions from a sidecar file
  (`folders` says how each is read). A picture that is not a readable image (truncated, not an image,
  over GANTRY_MAX_INPUT_PIXELS) is skipped and named in `ImageData.warnings`, or refused with
  `bad_files="refuse"`; when none is left, the first one's reason is the error.

Images are RGB unless every image is grayscale (by its file's colour mode), then 1 channel. Anything
wrong raises InvalidInput("dataset", ...) naming the path.

Everything is read within `DataLimits` (see `limits`), checked before the memory is spent: files per
data set, bytes per file or .zip member and in all, pixels per image, an .npz's arrays from their headers.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.base import ImageData
from gantry.worker.data.folders import (
    IMAGE_EXTENSIONS,
    Pictures,
    ReadOptions,
    folder_image_paths,
    open_pictures,
    read_file,
    square,
    to_array,
)
from gantry.worker.data.limits import DataLimitExceeded, DataLimits, open_image

log = logging.getLogger(__name__)

__all__ = ["IMAGE_EXTENSIONS", "ReadOptions", "folder_image_paths", "load_files", "read_file"]

_NPZ_ARRAYS: Final = ("images", "labels", "captions")
_NAMED: Final = 20  # bad files named one by one in a warning; the rest are counted


def _bad(message: str) -> InvalidInput:
    return InvalidInput("dataset", message)


def load_files(
    path: Path, *, image_size: int, limits: DataLimits | None = None, options: ReadOptions | None = None
) -> ImageData:
    """Load user data from an existing local path (see the module docstring)."""
    limits = limits if limits is not None else DataLimits.from_settings()
    options = options if options is not None else ReadOptions()
    if path.is_dir() or path.suffix.lower() == ".zip":
        with open_pictures(path, limits, captions_file=options.captions_file) as pictures:
            data = load_pictures(pictures, image_size, options, limits)
    elif path.suffix.lower() == ".npz":
        if options.labels:
            raise _bad(f"{path}: labels=folder takes classes from sub-folders; an .npz has none")
        data = _load_npz(path, image_size, limits)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        raise _bad(f"{path}: a single image; give a folder or .zip of images, or an .npz")
    else:
        raise _bad(f"{path}: not a folder, .zip or .npz file")
    log.info("loaded %d images (%d channels) from %s", len(data), data.channels, path)
    return data


def load_pictures(pictures: Pictures, image_size: int, options: ReadOptions, limits: DataLimits) -> ImageData:
    """The pictures of a folder or .zip at image_size, with their classes and captions as asked."""
    where = pictures.where
    if not pictures.entries:
        raise _bad(f"{where}: no images inside (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    sidecar = pictures.captions
    if options.need_captions and sidecar is None:
        raise _bad(
            f"{where}: no captions: put captions.csv or captions.jsonl (file, caption) in it, or name "
            "the file with --set captions_file=NAME"
        )
    captions, unmatched = sidecar.lookup(pictures.entries) if sidecar else ({}, [])
    warnings = []
    if sidecar and unmatched:
        warnings.append(
            f"{where}: {sidecar.name} has captions for {len(unmatched)} files that are not pictures in it "
            f"({', '.join(unmatched[:5])}{', ...' if len(unmatched) > 5 else ''})"
        )
    arrays: list[np.ndarray] = []  # H x W (grayscale) or H x W x 3
    kept: list[tuple[str, str | None]] = []  # (name, sub-folder) of each picture kept
    problems: list[InvalidInput] = []
    for entry in pictures.entries:
        try:
            if options.labels and entry.folder is None:
                raise _bad(f"{entry.where}: not in a sub-folder, so it has no class (labels=folder)")
            if options.need_captions and entry.name not in captions:
                raise _bad(f"{entry.where}: no caption in {sidecar.name if sidecar else 'a captions file'}")
            with open_image(entry.read(), entry.where, max_pixels=limits.max_pixels) as image:
                image.load()  # decodes it all: a truncated file fails here
                arrays.append(to_array(image, image_size, options))
            kept.append((entry.name, entry.folder))
        except InvalidInput as exc:
            if isinstance(exc, DataLimitExceeded) and exc.setting != "GANTRY_MAX_INPUT_PIXELS":
                raise  # a limit of the whole data set, not a fault of one file
            if options.bad_files == "refuse":
                raise
            problems.append(exc)
    if not arrays:
        raise problems[0]  # every picture is bad: nothing to train on
    if problems:
        named = "; ".join(p.message for p in problems[:_NAMED])
        more = f"; and {len(problems) - _NAMED} more" if len(problems) > _NAMED else ""
        warnings.insert(0, f"skipped {len(problems)} bad files (bad_files=skip): {named}{more}")
    for warning in warnings:
        log.warning("%s", warning)

    if all(a.ndim == 2 for a in arrays):
        images = np.stack(arrays)[..., None]
    else:
        images = np.stack([np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in arrays])
    labels, attributes = None, None
    if options.labels:
        classes = sorted({folder for _, folder in kept if folder is not None})
        labels = np.array([[classes.index(folder or "")] for _, folder in kept], dtype=np.int64)
        attributes = {"folder": classes}
    texts = [captions.get(name) for name, _ in kept]
    return ImageData(
        images=images,
        labels=labels,
        captions=[t for t in texts if t is not None] if all(t is not None for t in texts) and texts else None,
        attributes=attributes,
        warnings=tuple(warnings),
    )


def _folder_images(root: Path, limits: DataLimits) -> Iterator[tuple[str, bytes]]:
    """(path for messages, file bytes) for each image under root, sorted by relative path (what
    super-resolution's full-size photos read)."""
    with open_pictures(root, limits) as pictures:
        for entry in pictures.entries:
            yield entry.where, entry.read()


_zip_images = _folder_images  # a .zip's members are read the same way


def _npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """(shape, dtype) of each array `_load_npz` reads, from the .npy headers inside the .npz: read
    without reading the arrays. Empty when `path` is not a zip (np.load then says what it is)."""
    if not zipfile.is_zipfile(path):
        return {}
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            for key in _NPZ_ARRAYS:
                member = f"{key}.npy" if f"{key}.npy" in names else key
                if member not in names:
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0
                        if version == (1, 0)
                        else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)
                headers[key] = (tuple(int(n) for n in shape), dtype)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise _bad(f"{path}: not a readable .npz file ({exc})") from None
    return headers


def _check_npz(path: Path, limits: DataLimits) -> None:
    """The limits, from the arrays' headers: pixels per image, images, bytes in all."""
    headers = _npz_headers(path)
    total = 0
    for key, (shape, dtype) in headers.items():
        if dtype.hasobject:
            continue  # refused by np.load (no pickle), nothing to size
        total += math.prod(shape) * dtype.itemsize
        if total > limits.max_bytes:
            raise DataLimitExceeded(
                "dataset",
                f"{path}: {key!r}",
                f"{total:,} bytes of arrays",
                limits.max_bytes,
                "GANTRY_MAX_DATA_BYTES",
            )
    if "images" in headers:
        shape = headers["images"][0]
        if len(shape) in (3, 4):
            limits.check_files(shape[0], f"{path}: 'images' ({shape[0]:,} images)")
            limits.check_pixels(shape[2], shape[1], f"{path}: 'images'")


def _load_npz(path: Path, image_size: int, limits: DataLimits) -> ImageData:
    _check_npz(path, limits)
    try:
        # mmap: a bare .npy (refused below) is not read into memory to be refused.
        npz = np.load(path, allow_pickle=False, mmap_mode="r")
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _bad(f"{path}: not a readable .npz file ({exc})") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise _bad(f"{path}: holds a single array, not named arrays; save it with np.savez(path, images=...)")
    with npz:
        if "images" not in npz.files:
            found = ", ".join(sorted(npz.files)) or "nothing"
            raise _bad(f"{path}: no 'images' array (found {found}); expected uint8 N x H x W x C")
        arrays = {}
        for key in ("images", "labels", "captions"):
            if key in npz.files:
                try:
                    arrays[key] = npz[key]
                except (OSError, ValueError, zipfile.BadZipFile) as exc:
                    raise _bad(
                        f"{path}: cannot read {key!r} without pickle; store plain arrays ({exc})"
                    ) from None

    images = arrays["images"]
    if images.dtype != np.uint8:
        raise _bad(f"{path}: images are {images.dtype}; expected uint8 (0..255)")
    if images.ndim == 3:
        images = images[..., None]  # N x H x W grayscale
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise _bad(
            f"{path}: images have shape {arrays['images'].shape}; expected N x H x W x C with C = 1 or 3"
        )
    n = len(images)
    if n == 0 or images.shape[1] == 0 or images.shape[2] == 0:
        raise _bad(f"{path}: images have shape {images.shape}; there are no images inside")
    if images.shape[1:3] != (image_size, image_size):
        planes = images[..., 0] if images.shape[-1] == 1 else images  # Pillow wants H x W for one channel
        resized = [np.asarray(square(Image.fromarray(im), image_size)) for im in planes]
        images = np.stack(resized).reshape(n, image_size, image_size, -1)

    labels = arrays.get("labels")
    if labels is not None:
        if labels.dtype.kind not in "iub" or labels.ndim not in (1, 2) or len(labels) != n:
            raise _bad(
                f"{path}: labels are {labels.dtype} {labels.shape}; expected integers, N or N x K, N = {n}"
            )
        labels = labels.astype(np.int64)

    captions: list[str] | None = None
    if "captions" in arrays:
        texts = arrays["captions"]
        if texts.dtype.kind not in "US" or texts.shape != (n,):
            raise _bad(f"{path}: captions are {texts.dtype} {texts.shape}; expected {n} strings")
        captions = [t.decode("utf-8", "replace") if isinstance(t, bytes) else str(t) for t in texts.tolist()]
    return ImageData(images=np.ascontiguousarray(images), labels=labels, captions=captions)
