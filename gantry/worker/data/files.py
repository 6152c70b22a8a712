"""User data at a local path: an .npz, a .zip of images or a folder of images.

- .npz: `images` (uint8, N x H x W x C with C = 1 or 3, or N x H x W for grayscale), optional `labels`
  (integers, N or N x K) and `captions` (strings, N). Stored without pickle; captions must be a string
  array, e.g. `np.array(list_of_str)`.
- .zip or folder: every .png/.jpg/.jpeg/.bmp/.webp inside, searched recursively, in sorted path order;
  hidden files and folders (and macOS's `__MACOSX`) are skipped, other files are ignored.

Images are centre-cropped to a square and resized with Lanczos to the requested size. They are RGB
unless every image is grayscale (by its file's colour mode), then 1 channel. Transparent pixels are
composited over black. Anything wrong raises InvalidInput("dataset", ...) naming the path.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.base import ImageData

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: Final = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
_GRAY_MODES: Final = frozenset({"1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})
# What Pillow raises for a file it cannot decode (UnidentifiedImageError is an OSError).
_DECODE_ERRORS: Final = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def _bad(message: str) -> InvalidInput:
    return InvalidInput("dataset", message)


def load_files(path: Path, *, image_size: int) -> ImageData:
    """Load user data from an existing local path (see the module docstring)."""
    if path.is_dir():
        data = _load_images(_folder_images(path), image_size, where=path)
    elif path.suffix.lower() == ".npz":
        data = _load_npz(path, image_size)
    elif path.suffix.lower() == ".zip":
        data = _load_images(_zip_images(path), image_size, where=path)
    elif path.suffix.lower() in IMAGE_EXTENSIONS:
        raise _bad(f"{path}: a single image; give a folder or .zip of images, or an .npz")
    else:
        raise _bad(f"{path}: not a folder, .zip or .npz file")
    log.info("loaded %d images (%d channels) from %s", len(data), data.channels, path)
    return data


def _is_image_name(relative: PurePosixPath) -> bool:
    hidden = any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)
    return not hidden and relative.suffix.lower() in IMAGE_EXTENSIONS


def _folder_images(root: Path) -> Iterator[tuple[str, bytes]]:
    """(path for messages, file bytes) for each image under root, sorted by relative path."""
    found = sorted(
        rel
        for p in root.rglob("*")
        if p.is_file() and _is_image_name(rel := PurePosixPath(p.relative_to(root)))
    )
    for rel in found:
        yield str(root / rel), (root / rel).read_bytes()


def _zip_images(path: Path) -> Iterator[tuple[str, bytes]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise _bad(f"{path}: not a readable .zip file ({exc})") from None
    with archive:
        names = sorted(
            info.filename
            for info in archive.infolist()
            if not info.is_dir() and _is_image_name(PurePosixPath(info.filename))
        )
        for name in names:
            try:
                content = archive.read(name)
            except (zipfile.BadZipFile, OSError, ValueError) as exc:
                raise _bad(f"{path}: cannot extract {name} ({exc})") from None
            yield f"{path}: {name}", content


def _load_images(items: Iterator[tuple[str, bytes]], image_size: int, *, where: Path) -> ImageData:
    arrays: list[np.ndarray] = []  # H x W (grayscale) or H x W x 3
    for name, content in items:
        try:
            with Image.open(io.BytesIO(content)) as image:
                image.load()
                arrays.append(_to_array(image, image_size))
        except _DECODE_ERRORS as exc:
            raise _bad(f"{name}: not a readable image ({exc})") from None
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


def _load_npz(path: Path, image_size: int) -> ImageData:
    try:
        npz = np.load(path, allow_pickle=False)
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
