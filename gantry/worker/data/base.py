"""What a trainer gets from a data set: `ImageData`, and `load_dataset` to get it by name or path."""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gantry.jobs.datasets import BUILTIN_LABELS
from gantry.jobs.errors import InvalidInput

log = logging.getLogger(__name__)

SPLITS = ("train", "test")


@dataclass(frozen=True)
class CaptionGrammar:
    """How a data set's captions mention its label attributes: what a model that reads captions
    beside labels needs (text2img's classifier, `free_label_codes` and `code_words`).

    `naming_words`: attribute -> the caption words that name one of its values ("disc" names a shape).
    `phrases`: each attribute a caption may leave free ("a red circle" names no size) -> value name ->
    the words the plain phrasing uses for it ("top left" -> "in the top left").
    Plain strings only, so a checkpoint can carry it (`state`, `from_state`).
    """

    naming_words: Mapping[str, frozenset[str]]
    phrases: Mapping[str, Mapping[str, str]]

    @property
    def left_free(self) -> tuple[str, ...]:
        """The attributes a caption may leave free, in declaration order."""
        return tuple(self.phrases)

    def named(self, captions: Sequence[str], names: Sequence[str]) -> np.ndarray:
        """bool (N, K): whether each caption names a value of each attribute in `names`."""
        for name in names:
            if name not in self.naming_words:
                raise ValueError(f"unknown attribute {name!r}; choose one of {', '.join(self.naming_words)}")
        words = [set(re.findall(r"[a-z]+", text.lower())) for text in captions]
        named = [[bool(w & self.naming_words[name]) for name in names] for w in words]
        return np.array(named, dtype=bool).reshape(len(words), len(names))

    def state(self) -> dict[str, Any]:
        """Plain data (lists and dicts of strings) that `weights_only` checkpoints can hold."""
        return {
            "naming_words": {name: sorted(words) for name, words in self.naming_words.items()},
            "phrases": {name: dict(values) for name, values in self.phrases.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> CaptionGrammar:
        return cls(
            naming_words={name: frozenset(words) for name, words in state["naming_words"].items()},
            phrases={name: dict(values) for name, values in state["phrases"].items()},
        )


@dataclass
class ImageData:
    """Images at the requested size, with whatever labels and captions the data set has."""

    images: np.ndarray  # uint8, N x H x W x C (C = 1 or 3)
    labels: np.ndarray | None = None  # int64, N (one class) or N x K (K attributes)
    captions: list[str] | None = None  # one per image
    attributes: dict[str, list[str]] | None = None  # attribute name -> value names, for labels N x K
    caption_grammar: CaptionGrammar | None = None  # how the captions name the attributes, if declared
    warnings: tuple[str, ...] = ()  # what the job should be told: bad files skipped, captions unmatched

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
        if self.caption_grammar is not None and self.captions is None:
            raise ValueError("a caption grammar describes captions; these images have none")

    @property
    def channels(self) -> int:
        return int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.images)


def load_dataset(
    source: str,
    *,
    image_size: int,
    seed: int = 0,
    split: str = "train",
    full_size: bool = False,
    limits: DataLimits | None = None,
    options: ReadOptions | None = None,
) -> ImageData | PhotoData | PointData:
    """A built-in data set by name (see `BUILTIN`), or user data at a local path: an .npz, a .zip of
    images or a folder of images. User data has no held-out split: `split="test"` gives the same images.

    `full_size`: super-resolution crops whole images, so a folder or .zip (and `photos`) comes back as
    `PhotoData`, each image at its own size; otherwise `photos` are resized squares like the rest.

    User data is read within `limits` (default: from the settings, GANTRY_MAX_INPUT_PIXELS and
    GANTRY_MAX_DATA_*), checked before memory is spent; a breach raises DataLimitExceeded.
    A folder or .zip is read as `options` say (`folders.ReadOptions`: background, fit, bad files,
    labels from sub-folders, captions).

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
        return photos.load_full_size(path, limits=limits)
    return files.load_files(path, image_size=image_size, limits=limits, options=options)


# The loaders import ImageData from this module, so they are imported once it is defined.
from gantry.worker.data import digits, files, photos, points, shapes, stacked  # noqa: E402
from gantry.worker.data.folders import ReadOptions  # noqa: E402
from gantry.worker.data.limits import DataLimits  # noqa: E402
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


# The built-in data sets that declare how their captions name their labels (the grammar their
# ImageData carries), by name: text2img sizes G's label codes from it before it sees any data.
CAPTION_GRAMMARS: dict[str, CaptionGrammar] = {"shapes": shapes.CAPTION_GRAMMAR}


def builtin_caption_grammar(dataset: str) -> CaptionGrammar | None:
    """The caption grammar a built-in data set declares, without loading it; None for any other
    data set (user data declares none)."""
    return CAPTION_GRAMMARS.get(dataset)


def label_space(dataset: str, names: Sequence[str]) -> np.ndarray:
    """The combinations of label attributes `names` that a built-in data set's train split has,
    (M, len(names)) int64 rows of value indices: what AC-GAN's label codes are drawn from."""
    if dataset == "shapes":  # the one built-in set whose train split lacks some combinations
        return shapes.label_space(names)
    sizes = BUILTIN_LABELS.get(dataset)
    if sizes is None or any(name not in sizes for name in names):
        raise ValueError(f"no label attributes {', '.join(names)} in built-in data set {dataset!r}")
    return np.array(list(itertools.product(*(range(len(sizes[n])) for n in names))), dtype=np.int64)
