"""Full-size photographs for super-resolution: the built-in `photos` set and users' folders or .zip.

Super-resolution trains on random crops of whole images (Ledig et al. 2016, arXiv 1609.04802, §3.2:
96x96 HR sub-images), so these loaders keep every image at its own size (`PhotoData`) instead of
resizing them to squares as the GAN data sets do.

The built-in `photos` set is scikit-image's sample photographs that ship inside the package (nothing
is downloaded; `eagle`, `lily`, `skin` and others need a download and are left out), plus the two
colour photographs that ship inside scikit-learn (`china`, `flower`). Grayscale photos are repeated
to RGB, so every image has 3 channels. The split is fixed:

- validation (split "test"): astronaut, camera, chelsea, coffee (the classic test pictures: a
  portrait, a scene, an animal and an object);
- train: rocket, motorcycle (the left view of `stereo_motorcycle`), hubble_deep_field,
  immunohistochemistry, retina, brick, grass, gravel, coins, clock, moon, text (scikit-image), china,
  flower (scikit-learn's `load_sample_image`: two more natural colour scenes, where most of
  scikit-image's training photos are grayscale, textures or micrographs).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image, ImageOps

from gantry.jobs.errors import InvalidInput
from gantry.worker.data.base import ImageData
from gantry.worker.data.limits import ByteBudget, DataLimits, open_image

log = logging.getLogger(__name__)

VALIDATION: Final = ("astronaut", "camera", "chelsea", "coffee")
TRAIN: Final = (
    "rocket", "motorcycle", "hubble_deep_field", "immunohistochemistry", "retina", "brick",
    "grass", "gravel", "coins", "clock", "moon", "text", "china", "flower",
)  # fmt: skip
_SKLEARN: Final = ("china", "flower")  # scikit-learn's sample images, the rest are scikit-image's


@dataclass
class PhotoData:
    """Images at their own sizes: uint8 H x W x C each, the same C (1 or 3) for all."""

    images: list[np.ndarray]
    names: list[str]  # one per image, e.g. "astronaut" or the file's path in its folder

    def __post_init__(self) -> None:
        if not self.images or len(self.images) != len(self.names):
            raise ValueError(f"{len(self.images)} images for {len(self.names)} names")
        channels = {im.shape[-1] if im.ndim == 3 else 0 for im in self.images}
        if any(im.dtype != np.uint8 for im in self.images) or len(channels) != 1 or channels - {1, 3}:
            raise ValueError("images must be uint8 H x W x C, with the same C (1 or 3) for all")

    @property
    def channels(self) -> int:
        return int(self.images[0].shape[-1])

    def __len__(self) -> int:
        return len(self.images)

    def squares(self, image_size: int) -> ImageData:
        """Centre-cropped squares resized to image_size, for models that train on whole images."""
        out = []
        for im in self.images:
            h, w = im.shape[:2]
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            square = Image.fromarray(
                np.squeeze(im[top : top + side, left : left + side], axis=-1)
                if im.shape[-1] == 1
                else im[top : top + side, left : left + side]
            )
            out.append(np.asarray(square.resize((image_size, image_size), Image.Resampling.LANCZOS)))
        images = np.stack(out)
        return ImageData(images=images[..., None] if images.ndim == 3 else images)


def _builtin_photo(name: str) -> np.ndarray:
    if name in _SKLEARN:
        from sklearn.datasets import load_sample_image  # imported here: only SR jobs need it

        return np.ascontiguousarray(load_sample_image(f"{name}.jpg").astype(np.uint8))
    from skimage import data

    image = data.stereo_motorcycle()[0] if name == "motorcycle" else getattr(data, name)()
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    return np.ascontiguousarray(image.astype(np.uint8))


def load_builtin(*, split: str = "train") -> PhotoData:
    """The built-in `photos` of `split` ("train" or "test", the validation photos), RGB at full size."""
    names = {"train": TRAIN, "test": VALIDATION}.get(split)
    if names is None:
        raise ValueError(f"split must be train or test, not {split!r}")
    return PhotoData(images=[_builtin_photo(n) for n in names], names=list(names))


def decode_rgb(content: bytes, name: str, *, field: str, max_pixels: int | None = None) -> np.ndarray:
    """Image file bytes -> uint8 H x W x 3 (EXIF rotation applied, transparency over black).

    Raises InvalidInput(field, ...) naming `name` when the bytes are not an image, or
    DataLimitExceeded (an InvalidInput) when the image has more than `max_pixels` pixels (checked
    from the header, before decoding; default: GANTRY_MAX_INPUT_PIXELS).
    """
    if max_pixels is None:
        max_pixels = DataLimits.from_settings().max_pixels
    with open_image(content, name, max_pixels=max_pixels, field=field) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if "A" in image.getbands() or "transparency" in image.info:
            rgba = np.asarray(image.convert("RGBA"), dtype=np.float32)
            return np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
        return np.array(image.convert("RGB"))


def load_full_size(path: Path, *, limits: DataLimits | None = None) -> PhotoData:
    """A folder or .zip of images at `path`, each at its own size, RGB (see `files` for what is read).
    The decoded images count against GANTRY_MAX_DATA_BYTES too: they are all held at once."""
    from gantry.worker.data import files

    limits = limits if limits is not None else DataLimits.from_settings()
    items: Iterable[tuple[str, bytes]]
    if path.is_dir():
        items = files._folder_images(path, limits)
    elif path.suffix.lower() == ".zip":
        items = files._zip_images(path, limits)
    else:
        raise InvalidInput("dataset", f"{path}: super-resolution trains on a folder or .zip of images")
    names, images = [], []
    decoded = ByteBudget(limits, what="decoded images")
    for name, content in items:
        with open_image(content, name, max_pixels=limits.max_pixels) as header:
            decoded.take(header.width * header.height * 3, name)  # before it is decoded
        names.append(name)
        images.append(decode_rgb(content, name, field="dataset", max_pixels=limits.max_pixels))
    if not images:
        raise InvalidInput(
            "dataset", f"{path}: no images inside (looked for {', '.join(files.IMAGE_EXTENSIONS)})"
        )
    log.info("loaded %d full-size images from %s", len(images), path)
    return PhotoData(images=images, names=names)
