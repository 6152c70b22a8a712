"""What a trainer gets from a data set: `ImageData`, and `load_dataset` to get it by name or path."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gantry.jobs.datasets import BUILTIN_LABELS
from gantry.jobs.errors import InvalidInput

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass
class ImageData:
    """Images at the requested size, with whatever labels and captions the data set has."""

    images: np.ndarray  # uint8, N x H x W x C (C = 1 or 3)
    labels: np.ndarray | None = None  # int64, N (one class) or N x K (K attributes)
    captions: list[str] | None = None  # one per image
    attributes: dict[str, list[str]] | None = None  # attribute name -> value names, for labels N x K

    def __post_init__(self) -> None:
        # Loaders turn bad user data into InvalidInput before this; a failure here is a bug in gantry.
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] not in (1, 3):
            raise ValueError(
                f"images must be uint8 N x H x W x (1|3), got {self.images.dtype} {self.images.shape}"
            )
        n = len(self.images)
        if self.labels is not None and (self.labels.dtype != np.int64 or len(self.labels) != n):
            raise ValueError(
                f"labels must be int64 with {n} rows, got {self.labels.dtype} {self.labels.shape}"
            )
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"{len(self.captions)} captions for {n} images")
        if self.attributes is not None and (self.labels is None or self.labels.ndim != 2):
            raise ValueError("attributes name the columns of N x K labels")
        if (
            self.attributes is not None
            and self.labels is not None
            and len(self.attributes) != self.labels.shape[1]
        ):
            raise ValueError(f"{len(self.attributes)} attributes for {self.labels.shape[1]} label columns")

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(
    source: str, *, image_size: int, seed: int = 0, split: str = "train", full_size: bool = False
) -> ImageData | PhotoData | PointData:
    """A built-in data set by name (see `BUILTIN`), or user data at a local path: an .npz, a .zip of
    images or a folder of images. User data has no held-out split: `split="test"` gives the same images.

    `full_size`: super-resolution crops whole images, so a folder or .zip (and `photos`) comes back as
    `PhotoData`, each image at its own size; otherwise `photos` are resized squares like the rest.

    Raises InvalidInput("dataset", ...) for anything wrong with the user's data.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be positive, not {image_size}")
    builtin = BUILTIN.get(source)
    if builtin is not None:
        data = builtin(image_size, seed, split)
        return data.squares(image_size) if isinstance(data, PhotoData) and not full_size else data
    path = Path(source).expanduser()
    if not path.exists():
        raise InvalidInput(
            "dataset", f"{source}: no such file or folder (built-in data sets: {', '.join(sorted(BUILTIN))})"
        )
    if split != "train":
        log.info("%s has no test split; using all of it", path)
    if full_size:
        return photos.load_full_size(path)
    return files.load_files(path, image_size=image_size)


# The loaders import ImageData from this module, so they are imported once it is defined.
from gantry.worker.data import digits, files, photos, points, shapes, stacked  # noqa: E402
from gantry.worker.data.photos import PhotoData  # noqa: E402
from gantry.worker.data.points import PointData  # noqa: E402

# Built-in data set name -> loader(image_size, seed, split). Same names as
# gantry.jobs.datasets.DATASETS (the API accepts exactly these); a unit test keeps them in sync.
BUILTIN: dict[str, Callable[[int, int, str], ImageData | PhotoData | PointData]] = {
    "shapes": lambda image_size, seed, split: shapes.generate(image_size, seed=seed, split=split),
    "digits": lambda image_size, seed, split: digits.load(image_size, seed=seed, split=split),
    "photos": lambda image_size, seed, split: photos.load_builtin(split=split),  # full size, for SR
    # 2-D points (PointData, not images: image_size does not apply), for the MLP gan.
    "ring8": lambda image_size, seed, split: points.generate("ring8", seed=seed, split=split),
    "grid25": lambda image_size, seed, split: points.generate("grid25", seed=seed, split=split),
    "stacked-digits": lambda image_size, seed, split: stacked.generate(image_size, seed=seed, split=split),
}


def label_space(dataset: str, names: Sequence[str]) -> np.ndarray:
    """The combinations of label attributes `names` that a built-in data set's train split has,
    (M, len(names)) int64 rows of value indices: what AC-GAN's label codes are drawn from."""
    if dataset == "shapes":  # the one built-in set whose train split lacks some combinations
        return shapes.label_space(names)
    sizes = BUILTIN_LABELS.get(dataset)
    if sizes is None or any(name not in sizes for name in names):
        raise ValueError(f"no label attributes {', '.join(names)} in built-in data set {dataset!r}")
    return np.array(list(itertools.product(*(range(len(sizes[n])) for n in names))), dtype=np.int64)
