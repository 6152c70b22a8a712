"""The data sets that ship with gantry, and what the contract knows about each: one table.

Nothing is downloaded: the worker's loaders (`gantry.worker.data`) generate or read them locally,
with the same names, label columns and values (a unit test keeps the two in sync). Any other
`--dataset` is a path or URI of the user's images. Torch-free, like all of `gantry.jobs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# images: small pictures at the job's image_size; points: 2-D samples of a Gaussian mixture;
# photos: full-size photographs that super-resolution crops.
DatasetKind = Literal["images", "points", "photos"]


@dataclass(frozen=True)
class DatasetInfo:
    description: str
    kind: DatasetKind
    channels: int  # colour channels of an image; coordinates of a point
    # label attribute -> the names of its values, in the column order of the loader's labels
    # (what `--set labels=...` and label prompts may name).
    labels: dict[str, list[str]] = field(default_factory=dict)
    captions: bool = False  # has a caption per image (text to image)
    splits: tuple[str, ...] = ("train", "test")  # every built-in set has a held-out test split


_DIGITS = [str(d) for d in range(10)]

DATASETS: dict[str, DatasetInfo] = {
    "shapes": DatasetInfo(
        "procedural coloured shapes (circle, square, triangle, cross) with attribute labels and captions",
        kind="images",
        channels=3,
        labels={
            "shape": ["circle", "square", "triangle", "cross"],
            "colour": ["red", "green", "blue", "yellow", "magenta", "cyan", "white", "orange"],
            "size": ["small", "large"],
            "position": [
                "top left", "top", "top right", "left", "centre", "right", "bottom left", "bottom", "bottom right"
            ],
            "background": ["black", "grey", "navy"],
        },
        captions=True,
    ),
    "digits": DatasetInfo(
        "scikit-learn's 8x8 handwritten digits, upscaled, 1 channel",
        kind="images",
        channels=1,
        labels={"digit": _DIGITS},
    ),
    "ring8": DatasetInfo(
        "2-D points: 8 Gaussians on the unit circle, variance 1e-4 (PacGAN's ring; model gan)",
        kind="points",
        channels=2,
    ),
    "grid25": DatasetInfo(
        "2-D points: 25 Gaussians at (-4+2i, -4+2j), variance 0.0025 (PacGAN's grid; model gan)",
        kind="points",
        channels=2,
    ),
    "stacked-digits": DatasetInfo(
        "three independent digits as the R, G, B channels: 1000 modes, labels = the 3 digits",
        kind="images",
        channels=3,
        labels={"red": _DIGITS, "green": _DIGITS, "blue": _DIGITS},
    ),
    "photos": DatasetInfo(
        "scikit-image's and scikit-learn's sample photographs at full size, RGB, for super-resolution "
        "(14 train, 4 validation)",
        kind="photos",
        channels=3,
    ),
}  # fmt: skip

# Views of the table that older call sites read.
BUILTIN_DATASETS: dict[str, str] = {name: info.description for name, info in DATASETS.items()}
BUILTIN_LABELS: dict[str, dict[str, list[str]]] = {
    name: info.labels for name, info in DATASETS.items() if info.labels
}
POINT_DATASETS: tuple[str, ...] = tuple(name for name, info in DATASETS.items() if info.kind == "points")
CAPTIONED_DATASETS: tuple[str, ...] = tuple(name for name, info in DATASETS.items() if info.captions)


def dataset_kind(dataset: str) -> DatasetKind | None:
    """The kind of a built-in data set; None for the user's data (a path or URI: images)."""
    info = DATASETS.get(dataset)
    return info.kind if info else None
