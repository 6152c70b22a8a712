"""User data at a local path: an .npz, a .zip of images or a folder of images.

- .npz: `images` (uint8, N x H x W x C with C = 1 or 3, or N x H x W for grayscale), optional `labels`
  (integers, N or N x K) and `captions` (strings, N). Stored without pickle; captions must be a string
  array, e.g. `np.array(list_of_str)`.
- .zip or folder: every .png/.jpg/.jpeg/.bmp/.webp inside, searched recursively, in sorted path order;
  hidden files and folders (and macOS's `__MACOSX`) are skipped, other files are ignored.

Images are centre-cropped to a square and resized with Lanczos to the requested size. They are RGB
unless every image is grayscale (by its file's colour mode), then 1 channel. Transparent pixels are
composited over black. Anything wrong raises InvalidInput("dataset", ...) naming the path.

Everything is read within `DataLimits` (see `limits`), checked before the memory is spent: files per
data set, bytes per file or .zip member and in all, pixels per image, an .npz's arrays from their headers.
"""

from __future__ import annotations

import logging
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.base import ImageData
from gantry.worker.data.limits import ByteBudget, DataLimitExceeded, DataLimits, open_image, read_capped

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: Final = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
_NPZ_ARRAYS: Final = ("images", "labels", "captions")


def _bad(message: str) -> InvalidInput:
    return InvalidInput("dataset", message)


def load_files(path: Path, *, image_size: int, limits: DataLimits | None = None) -> ImageData:
    """Load user data from an existing local path (see the module docstring)."""
    limits = limits if limits is not None else DataLimits.from_settings()
    if path.is_dir():
        data = _load_images(_folder_images(path, limits), image_size, where=path, limits=limits)
    elif path.suffix.lower() == ".npz":
        data = _load_npz(path, image_size, limits)
    elif path.suffix.lower() == ".zip":
        data = _load_images(_zip_images(path, limits), image_size, where=path, limits=limits)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        raise _bad(f"{path}: a single image; give a folder or .zip of images, or an .npz")
    else:
        raise _bad(f"{path}: not a folder, .zip or .npz file")
    log.info("loaded %d images (%d channels) from %s", len(data), data.channels, path)
    return data


def _is_image_name(relative: PurePosixPath) -> bool:
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
    return not hidden and relative.suffix.lower() in IMAGE_EXTENSIONS


def folder_image_paths(root: Path, limits: DataLimits, *, field: str = "dataset") -> list[PurePosixPath]:
    """The relative path of each image under root, sorted; refused once there are more than
    `limits.max_files` (counted while the folder is walked, before any is read)."""
    found: list[PurePosixPath] = []
    for p in root.rglob("*"):
        if p.is_file() and _is_image_name(rel := PurePosixPath(p.relative_to(root))):
            found.append(rel)
            limits.check_files(len(found), root, field=field)
    return sorted(found)


def read_file(path: Path, limits: DataLimits, budget: ByteBudget, *, field: str = "dataset") -> bytes:
    """A file's bytes: its size checked before it is read, and again while it is read."""
    name = str(path)
    size = path.stat().st_size
    limits.check_file_bytes(size, name, field=field)
    if size > budget.left:
        budget.take(size, name)
    with path.open("rb") as f:
        return read_capped(f, name, limits, budget, field=field)


def _folder_images(root: Path, limits: DataLimits) -> Iterator[tuple[str, bytes]]:
    """(path for messages, file bytes) for each image under root, sorted by relative path."""
    budget = ByteBudget(limits)
    for rel in folder_image_paths(root, limits):
        yield str(root / rel), read_file(root / rel, limits, budget)


def _zip_images(path: Path, limits: DataLimits) -> Iterator[tuple[str, bytes]]:
    """(path: member for messages, member bytes) for each image in the .zip, sorted by name. The
    count and every member's declared size are checked before anything is extracted; each member
    is then read with a cap, since a .zip's headers can lie."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(f"{path}: not a readable .zip file ({exc})") from None
    with archive:
        members = sorted(
            (
                info
                for info in archive.infolist()
                if not info.is_dir() and _is_image_name(PurePosixPath(info.filename))
            ),
            key=lambda info: info.filename,
        )
        limits.check_files(len(members), path)
        declared = 0
        for info in members:
            limits.check_file_bytes(info.file_size, f"{path}: {info.filename}")
            declared += info.file_size
            if declared > limits.max_bytes:
                raise DataLimitExceeded(
                    "dataset",
                    f"{path}: {info.filename}",
                    f"the .zip's {declared:,} bytes (decompressed) so far",
                    limits.max_bytes,
                    "GANTRY_MAX_DATA_BYTES",
                )
        budget = ByteBudget(limits, what="bytes decompressed")
        for info in members:
            name = f"{path}: {info.filename}"
            try:
                with archive.open(info) as member:
                    content = read_capped(member, name, limits, budget)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise _bad(f"{path}: cannot extract {info.filename} ({exc})") from None
            yield name, content


def _load_images(
    items: Iterator[tuple[str, bytes]], image_size: int, *, where: Path, limits: DataLimits
) -> ImageData:
    arrays: list[np.ndarray] = []  # H x W (grayscale) or H x W x 3
    for name, content in items:
        with open_image(content, name, max_pixels=limits.max_pixels) as image:
            image.load()
            arrays.append(_to_array(image, image_size))
    if not arrays:
        raise _bad(f"{where}: no images inside (looked for {', '.join(IMAGE_EXTENSIONS)} files)")
    if all(a.ndim == 2 for a in arrays):
        images = np.stack(arrays)[..., None]
    else:
        images = np.stack([np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in arrays])
    return ImageData(images=images)


def _to_array(image: Image.Image, image_size: int) -> np.ndarray:
    """A decoded image as uint8 H x W (grayscale) or H x W x 3, centre-cropped and resized."""
    image = ImageOps.exif_transpose(image)  # phone photos store their rotation in EXIF
    gray = image.mode in _GRAY_MODES
    if image.mode.startswith("I") or image.mode == "F":
        # 16-bit or float grayscale: scale to 0..255 (Pillow's own conversion clips instead).
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if values.max() <= 1.0 else 255.0 if values.max() <= 255 else 65535.0
        image = Image.fromarray(np.rint(np.clip(values / top, 0, 1) * 255).astype(np.uint8))
    elif "A" in image.getbands() or "transparency" in image.info:
        # Composite over black: transparent pixels often hold arbitrary colours.
        rgba = np.asarray(image.convert("LA" if gray else "RGBA"), dtype=np.float32)
        flat = rgba[..., :-1] * (rgba[..., -1:] / 255.0)
        image = Image.fromarray(np.rint(flat[..., 0] if gray else flat).astype(np.uint8))
    image = image.convert("L" if gray else "RGB")
    return np.asarray(_square(image, image_size))


def _square(image: Image.Image, image_size: int) -> Image.Image:
    """Centre-crop to a square and resize to image_size x image_size."""
    w, h = image.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    if side == image_size and (w, h) == (side, side):
        return image
    # Crop first: resizing with `box=` would let the filter bleed in pixels from outside the square.
    square = image.crop((left, top, left + side, top + side)) if (w, h) != (side, side) else image
    return square.resize((image_size, image_size), Image.Resampling.LANCZOS)


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
        resized = [np.asarray(_square(Image.fromarray(im), image_size)) for im in planes]
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
